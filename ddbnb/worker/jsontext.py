"""Compact JSON text of wire-format values: by orjson where it is installed, by the standard library otherwise.

Only the standard library (and orjson where installed): this module ships inside the Lambda package, which
carries the standard library's encoder. A worker encodes every item it writes, as the body of its write call and
in the journal: the standard library's encoder took about 20 µs of CPU an item of the bench's 2 KB items, and
orjson 1.4 (ADR 0025).

Either way the text parses to the same value; only the spelling differs. orjson writes characters beyond ASCII
as they are (UTF-8), where the standard library writes ``\\u`` escapes. What orjson will not encode (a lone
surrogate, an integer beyond 64 bits, a key that is not a string) the standard library encodes, as it always did.
orjson would also write a few types the standard library refuses (datetime, UUID, dataclasses) and a float NaN
as null; a wire value holds none of them (ddbnb.worker.items refuses them first, naming the attribute).
Binary values (``bytes``, as boto3's own client gives them) are written as base64, as the wire spells them.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

_orjson: Any
try:
    import orjson as _orjson
except ImportError:  # the Lambda package: the standard library only
    _orjson = None


def to_json_bytes(value: Any) -> bytes:
    """``value`` as compact JSON, UTF-8 encoded."""
    fast = _by_orjson(value)
    return fast if fast is not None else _standard(value).encode()


def to_json_text(value: Any) -> str:
    """``value`` as compact JSON text."""
    fast = _by_orjson(value)
    return fast.decode() if fast is not None else _standard(value)


def _by_orjson(value: Any) -> bytes | None:
    """orjson's encoding of ``value``; None where orjson is missing or refuses it."""
    if _orjson is None:
        return None
    try:
        encoded: bytes = _orjson.dumps(value, default=_binary)
    except TypeError:  # orjson.JSONEncodeError: the standard library decides
        return None
    return encoded


def _binary(value: Any) -> str:
    """Binary values from boto3's own client (bytes), as the wire format spells them."""
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(value).decode("ascii")
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _standard_encoder() -> Callable[[Any], str]:
    """``json.dumps(value, separators=(",", ":"), default=_binary)``, called straight into the C encoder where
    the interpreter has one (the Python wrapper's own cost was about a quarter of a journal line's)."""
    encoder = json.JSONEncoder(separators=(",", ":"), default=_binary)
    try:  # the private constructor JSONEncoder.iterencode calls; checked on a probe, as it could change
        chunks = json.encoder.c_make_encoder(  # type: ignore[attr-defined]
            None, _binary, json.encoder.encode_basestring_ascii, None, ":", ",", False, False, True
        )
        probe = {"k": {"S": 'é"'}, "b": [{"B": b"\x00"}, None, True, 1]}
        if "".join(chunks(probe, 0)) != encoder.encode(probe):
            return encoder.encode
    except (AttributeError, TypeError):
        return encoder.encode

    def dumps(value: Any) -> str:
        return "".join(chunks(value, 0)) if isinstance(value, (dict, list)) else encoder.encode(value)

    return dumps


_standard = _standard_encoder()
