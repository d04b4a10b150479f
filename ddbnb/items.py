"""Convert DynamoDB wire-format items to Python values and back.

Only the standard library: this module ships inside the Lambda package. The
conversions follow boto3's TypeSerializer/TypeDeserializer, with two
differences that matter for migrations: binary values come back as plain
``bytes``, and values DynamoDB would reject (floats, empty sets) raise
:class:`ItemTypeError` naming the attribute path, before any request is sent.
"""

from __future__ import annotations

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


def deserialize(wire: Mapping[str, Any]) -> Item:
    """Turn a wire-format item (``{"a": {"S": "x"}}``) into Python values."""
    return {name: _from_wire(value) for name, value in wire.items()}


def _from_wire(value: Mapping[str, Any]) -> Any:
    ((tag, raw),) = value.items()
    if tag == "S" or tag == "BOOL":
        return raw
    if tag == "N":
        return Decimal(raw)
    if tag == "M":
        return {k: _from_wire(v) for k, v in raw.items()}
    if tag == "L":
        return [_from_wire(v) for v in raw]
    if tag == "NULL":
        return None
    if tag == "B":
        return bytes(raw)
    if tag == "SS":
        return set(raw)
    if tag == "NS":
        return {Decimal(n) for n in raw}
    if tag == "BS":
        return {bytes(b) for b in raw}
    raise ItemTypeError("<item>", f"unknown DynamoDB type tag {tag!r}")


def serialize(item: Mapping[str, Any]) -> WireItem:
    """Turn a Python item into wire format, raising ItemTypeError on bad values."""
    if not isinstance(item, Mapping):
        raise ItemTypeError("<item>", f"the transform returned {type(item).__name__}, not a dict")
    return {str(name): _to_wire(value, str(name)) for name, value in item.items()}


def _to_wire(value: Any, path: str) -> dict[str, Any]:
    if isinstance(value, str):
        return {"S": value}
    if isinstance(value, bool):
        return {"BOOL": value}
    if isinstance(value, (int, Decimal)):
        return {"N": str(value)}
    if isinstance(value, Mapping):
        return {"M": {str(k): _to_wire(v, f"{path}.{k}") for k, v in value.items()}}
    if value is None:
        return {"NULL": True}
    if isinstance(value, (bytes, bytearray)):
        return {"B": bytes(value)}
    if isinstance(value, float):
        raise ItemTypeError(path, f"float {value!r} is not allowed; use Decimal(str(x)) instead")
    if isinstance(value, Set):
        return _set_to_wire(value, path)
    if isinstance(value, Sequence):
        return {"L": [_to_wire(v, f"{path}[{i}]") for i, v in enumerate(value)]}
    raw_bytes = getattr(value, "value", None)
    if isinstance(raw_bytes, bytes):  # boto3.dynamodb.types.Binary
        return {"B": raw_bytes}
    raise ItemTypeError(path, f"type {type(value).__name__} cannot be stored in DynamoDB")


def _set_to_wire(value: Set[Any], path: str) -> dict[str, Any]:
    if not value:
        raise ItemTypeError(path, "empty sets cannot be stored; remove the attribute instead")
    if all(isinstance(v, str) for v in value):
        return {"SS": sorted(value)}
    if all(isinstance(v, (int, Decimal)) and not isinstance(v, bool) for v in value):
        return {"NS": sorted(str(v) for v in value)}
    if all(isinstance(v, (bytes, bytearray)) for v in value):
        return {"BS": sorted(bytes(v) for v in value)}
    raise ItemTypeError(path, "a set must hold only strings, only numbers or only bytes")


def key_of(item: Mapping[str, Any], key_names: Sequence[str]) -> dict[str, Any]:
    """Return the key attributes of ``item`` (Python or wire values alike)."""
    return {name: item.get(name) for name in key_names}


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


def item_size(wire: Mapping[str, Any]) -> int:
    """Estimate the stored size in bytes by DynamoDB's documented sizing rules."""
    return sum(len(name.encode()) + _value_size(value) for name, value in wire.items())


def _value_size(value: Mapping[str, Any]) -> int:
    ((tag, raw),) = value.items()
    if tag == "S":
        return len(raw.encode())
    if tag == "B":
        return len(raw)
    if tag == "N":
        return _number_size(raw)
    if tag in ("BOOL", "NULL"):
        return 1
    if tag == "SS":
        return sum(len(s.encode()) for s in raw)
    if tag == "NS":
        return sum(_number_size(n) for n in raw)
    if tag == "BS":
        return sum(len(b) for b in raw)
    if tag == "M":
        return 3 + sum(len(k.encode()) + 1 + _value_size(v) for k, v in raw.items())
    return 3 + sum(1 + _value_size(v) for v in raw)  # "L"


def _number_size(raw: str) -> int:
    digits = len(raw.lstrip("-").replace(".", "").lstrip("0").split("E")[0].split("e")[0])
    return 1 + (max(digits, 1) + 1) // 2 + (1 if raw.startswith("-") else 0)
