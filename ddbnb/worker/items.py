"""Convert DynamoDB wire-format items to Python values and back.

Only the standard library: this module ships inside the Lambda package. The
conversions follow boto3's TypeSerializer/TypeDeserializer, with two
differences that matter for migrations: binary values come back as plain
``bytes``, and values DynamoDB would reject (floats, empty sets) raise
:class:`ItemTypeError` naming the attribute path, before any request is sent.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping, Sequence, Set
from decimal import Decimal
from typing import Any

Item = dict[str, Any]
WireItem = dict[str, Any]


class ItemTypeError(TypeError):
    """A value has a type DynamoDB does not store."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.reason = message

    def under(self, parent: str) -> ItemTypeError:
        """The same error, seen from the attribute that holds it."""
        joined = f"{parent}{self.path}" if self.path.startswith("[") else f"{parent}.{self.path}"
        return ItemTypeError(joined if self.path else parent, self.reason)


def deserialize(wire: Mapping[str, Any]) -> Item:
    """Turn a wire-format item (``{"a": {"S": "x"}}``) into Python values."""
    return _map_from_wire(wire)


def _map_from_wire(wire: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for name, value in wire.items():
        # Strings and numbers, the most common values, without a call each.
        if len(value) == 1 and "S" in value:
            out[name] = value["S"]
        elif len(value) == 1 and "N" in value:
            out[name] = Decimal(value["N"])
        else:
            out[name] = _from_wire(value)
    return out


def _from_wire(value: Mapping[str, Any]) -> Any:
    ((tag, raw),) = value.items()
    if tag == "S":
        return raw
    if tag == "N":
        return Decimal(raw)
    if tag == "M":
        return _map_from_wire(raw)
    if tag == "L":
        return [_from_wire(v) for v in raw]
    if tag == "BOOL":
        return raw
    if tag == "NULL":
        return None
    if tag == "B":
        return _bytes(raw)
    if tag == "SS":
        return set(raw)
    if tag == "NS":
        return {Decimal(n) for n in raw}
    if tag == "BS":
        return {_bytes(b) for b in raw}
    raise ItemTypeError("", f"unknown DynamoDB type tag {tag!r}")


def matches(item: Mapping[str, Any], wire: Mapping[str, Any]) -> bool:
    """Whether a Python item holds exactly the wire item's values and types (sets in any order).

    Cheaper than deserializing to compare: it stops at the first difference, and a
    new or removed attribute is seen before any value is read.
    """
    if len(item) != len(wire):
        return False
    for name, value in wire.items():
        if name not in item or not _matches(item[name], value):
            return False
    return True


def _matches(value: Any, wire: Mapping[str, Any]) -> bool:
    ((tag, raw),) = wire.items()
    if tag == "S":
        return isinstance(value, str) and value == raw
    if tag == "N":
        return isinstance(value, (int, Decimal)) and not isinstance(value, bool) and value == Decimal(raw)
    if tag == "M":
        return isinstance(value, Mapping) and matches(value, raw)
    if tag == "L":
        return (
            isinstance(value, (list, tuple))
            and len(value) == len(raw)
            and all(_matches(v, w) for v, w in zip(value, raw, strict=True))
        )
    if tag == "BOOL":
        return isinstance(value, bool) and value == raw
    if tag == "NULL":
        return value is None
    if tag == "B":
        return isinstance(value, (bytes, bytearray)) and value == _bytes(raw)
    if not isinstance(value, Set):
        return False
    if tag == "SS":
        return value == set(raw)
    if tag == "NS":
        return all(isinstance(v, (int, Decimal)) and not isinstance(v, bool) for v in value) and value == {
            Decimal(n) for n in raw
        }
    return value == {_bytes(b) for b in raw}  # "BS"


#: What deserialize makes that no transform can change in place: the same object is the same value.
_IMMUTABLE = frozenset({str, Decimal, bool, type(None), bytes})
_ABSENT = object()
#: Containers that serialize_changes compares by their wire form.
_NESTED = frozenset({dict, list})


def _bytes(raw: str | bytes) -> bytes:
    return base64.b64decode(raw) if isinstance(raw, str) else bytes(raw)


def _b64(raw: bytes | bytearray) -> str:
    return base64.b64encode(raw).decode("ascii")


def serialize(item: Mapping[str, Any]) -> WireItem:
    """Turn a Python item into wire format, raising ItemTypeError on bad values."""
    if not isinstance(item, Mapping):
        raise ItemTypeError("<item>", f"the transform returned {type(item).__name__}, not a dict")
    return _map_to_wire(item, "")


def serialize_changes(
    item: Mapping[str, Any], raw: Mapping[str, Any], read: Mapping[str, Any] | None = None
) -> tuple[WireItem, bool]:
    """Turn ``item``, a transform's result for the wire item ``raw``, into wire format; say whether it changed.

    Attributes that still hold ``raw``'s values keep ``raw``'s wire values (the
    same objects), so only what changed is serialized: one walk decides whether
    anything changed and builds the item to write. ``read``, when given, holds
    each attribute's value as :func:`deserialize` made it from ``raw``, taken
    before the transform ran: an attribute still holding that very object, of a
    type nothing can change in place (a string, number, bool, None or bytes),
    is unchanged without comparing. Raises ItemTypeError on bad values.
    """
    read = read or {}
    if not isinstance(item, Mapping):
        raise ItemTypeError("<item>", f"the transform returned {type(item).__name__}, not a dict")
    out: WireItem = {}
    changed = len(item) != len(raw)
    for name, child in item.items():
        key = str(name)
        old = raw.get(key)
        new = None
        try:
            if old is None:
                new = _to_wire(child)
            elif child is read.get(key, _ABSENT) and type(child) in _IMMUTABLE:
                new = old
            elif type(child) in _NESTED:
                # Serialized and compared in C: cheaper than walking it against the wire value. Unequal
                # wire can still be the same value (a set inside, a number spelled another way): walk then.
                new = _to_wire(child)
                if new == old or _matches(child, old):
                    new = old
            elif _matches(child, old):
                new = old
            else:
                new = _to_wire(child)
        except ItemTypeError as exc:
            raise exc.under(key) from None
        out[key] = new
        changed = changed or new is not old
    return out, changed


def _map_to_wire(value: Mapping[Any, Any], parent: str) -> dict[str, Any]:
    out = {}
    for name, child in value.items():
        try:
            out[str(name)] = _to_wire(child)
        except ItemTypeError as exc:
            raise exc.under(f"{parent}.{name}" if parent else str(name)) from None
    return out


def _list_to_wire(value: Sequence[Any]) -> list[Any]:
    out = []
    for index, child in enumerate(value):
        try:
            out.append(_to_wire(child))
        except ItemTypeError as exc:
            raise exc.under(f"[{index}]") from None
    return out


def _to_wire(value: Any) -> dict[str, Any]:
    kind = type(value)  # exact types first: the common case, and fast
    if kind is str:
        return {"S": value}
    if kind is Decimal or kind is int:
        return {"N": str(value)}
    if kind is dict:
        return {"M": _map_to_wire(value, "")}
    if kind is list:
        return {"L": _list_to_wire(value)}
    if kind is bool:
        return {"BOOL": value}
    if value is None:
        return {"NULL": True}
    return _other_to_wire(value)


def _other_to_wire(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        return {"S": str(value)}
    if isinstance(value, bool):
        return {"BOOL": bool(value)}
    if isinstance(value, (int, Decimal)):
        return {"N": str(value)}
    if isinstance(value, Mapping):
        return {"M": _map_to_wire(value, "")}
    if isinstance(value, (bytes, bytearray)):
        return {"B": _b64(value)}
    if isinstance(value, float):
        raise ItemTypeError("", f"float {value!r} is not allowed; use Decimal(str(x)) instead")
    if isinstance(value, Set):
        return _set_to_wire(value)
    if isinstance(value, Sequence):
        return {"L": _list_to_wire(value)}
    raw_bytes = getattr(value, "value", None)
    if isinstance(raw_bytes, bytes):  # boto3.dynamodb.types.Binary
        return {"B": _b64(raw_bytes)}
    raise ItemTypeError("", f"type {type(value).__name__} cannot be stored in DynamoDB")


def _set_to_wire(value: Set[Any]) -> dict[str, Any]:
    if not value:
        raise ItemTypeError("", "empty sets cannot be stored; remove the attribute instead")
    if all(isinstance(v, str) for v in value):
        return {"SS": sorted(value)}
    if all(isinstance(v, (int, Decimal)) and not isinstance(v, bool) for v in value):
        return {"NS": sorted(str(v) for v in value)}
    if all(isinstance(v, (bytes, bytearray)) for v in value):
        return {"BS": sorted(_b64(v) for v in value)}
    raise ItemTypeError("", "a set must hold only strings, only numbers or only bytes")


def format_key(key: Mapping[str, Any]) -> dict[str, Any]:
    """Render a Python key as JSON-safe values for results and messages."""
    out: dict[str, Any] = {}
    for name, value in key.items():
        if isinstance(value, Decimal):
            out[name] = int(value) if value == value.to_integral_value() else float(value)
        elif isinstance(value, bytes):
            out[name] = value.hex()
        else:
            out[name] = value
    return out


def key_to_wire(key: Mapping[str, Any], schema: Mapping[str, str]) -> WireItem:
    """Turn a key rendered by :func:`format_key` back into wire format, by the table's key types."""
    wire: WireItem = {}
    for name, kind in schema.items():
        value = key[name]
        if kind == "N":
            wire[name] = {"N": str(value)}
        elif kind == "B":
            wire[name] = {"B": _b64(bytes.fromhex(value))}
        else:
            wire[name] = {"S": str(value)}
    return wire


def write_units(size_bytes: float) -> int:
    """The write units one item of ``size_bytes`` costs: one per started KB, at least one."""
    return max(1, math.ceil(size_bytes / 1024))


def item_size(wire: Mapping[str, Any]) -> int:
    """Estimate the stored size in bytes by DynamoDB's documented sizing rules."""
    return sum(_text_size(name) + _value_size(value) for name, value in wire.items())


def attribute_size(name: str, value: Mapping[str, Any]) -> int:
    """The bytes one top-level attribute adds to :func:`item_size`."""
    return _text_size(name) + _value_size(value)


def _text_size(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode())


def _value_size(value: Mapping[str, Any]) -> int:
    ((tag, raw),) = value.items()
    if tag == "S":
        return _text_size(raw)
    if tag == "N":
        return _number_size(raw)
    if tag == "M":
        return 3 + sum(_text_size(k) + 1 + _value_size(v) for k, v in raw.items())
    if tag == "L":
        return 3 + sum(1 + _value_size(v) for v in raw)
    if tag == "B":
        return _binary_size(raw)
    if tag in ("BOOL", "NULL"):
        return 1
    if tag == "SS":
        return sum(map(_text_size, raw))
    if tag == "NS":
        return sum(map(_number_size, raw))
    return sum(map(_binary_size, raw))  # "BS"


def _binary_size(raw: str | bytes) -> int:
    if isinstance(raw, bytes):
        return len(raw)
    return len(raw) * 3 // 4 - raw[-2:].count("=")


def _number_size(raw: str) -> int:
    mantissa = raw.split("E")[0].split("e")[0] if "E" in raw or "e" in raw else raw
    digits = len(mantissa.replace(".", "").lstrip("-0"))  # a sign only ever leads
    return 1 + (max(digits, 1) + 1) // 2 + raw.startswith("-")
