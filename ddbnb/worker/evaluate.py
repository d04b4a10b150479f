"""Apply a transform to one item and decide what must be written.

Only the standard library: this module ships inside the Lambda package. The
segment worker, the pre-flight check and the dry run all decide through
:func:`evaluate`, so a preview shows exactly what a run will do.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from ddbnb.worker.items import ItemTypeError, deserialize, item_size, serialize_changes

#: DynamoDB's item size limit.
MAX_ITEM_BYTES = 400 * 1024

#: What a transform's result asks for.
UNCHANGED, PUT, DELETE, FAILED = "unchanged", "put", "delete", "failed"


@dataclass
class Verdict:
    """The outcome of a transform on one item (``raw`` is the item as read)."""

    action: str
    raw: Mapping[str, Any]
    after: Any = None
    wire: dict[str, Any] | None = None
    rule: str = ""
    message: str = ""
    size: int = 0  # bytes of ``wire`` by DynamoDB's rules, when evaluate checked it

    @cached_property
    def before(self) -> dict[str, Any]:
        """The item as read, in Python values."""
        return deserialize(self.raw)


def evaluate(
    transform: Callable[[dict[str, Any]], Any],
    raw: Mapping[str, Any],
    key_names: Sequence[str],
    *,
    in_place: bool = True,
    check_size: bool = True,
    target_keys: Mapping[str, str] | None = None,
) -> Verdict:
    """Run ``transform`` on the wire-format item ``raw`` and judge its result.

    In place, an unchanged result needs no write and a changed key is refused
    (it would leave the old item behind). Copying into a destination, every
    kept item is written, and keys may change. ``check_size`` computes the
    item's size by DynamoDB's rules; the segment worker skips it and lets
    DynamoDB refuse oversized items, which it then reports item by item.
    ``target_keys`` (name: "S", "N" or "B") is the destination's key schema,
    which a copied item must hold.
    """
    item = deserialize(raw)
    read = dict(item)  # each attribute's value as read, whatever the transform does to ``item``
    try:
        after = transform(item)
    except Exception as exc:
        return Verdict(FAILED, raw, rule="raised", message=f"transform raised {type(exc).__name__}: {exc}")
    if after is None:
        return Verdict(DELETE, raw)
    if not isinstance(after, Mapping):
        return Verdict(
            FAILED,
            raw,
            after,
            rule="invalid_type",
            message=f"transform returned {type(after).__name__}; return the item dict, or None to delete it",
        )
    try:
        wire, changed = serialize_changes(after, raw, read)
    except ItemTypeError as exc:
        return Verdict(FAILED, raw, after, rule="invalid_type", message=str(exc))
    if not changed:
        return Verdict(UNCHANGED, raw, after) if in_place else Verdict(PUT, raw, after, dict(raw))
    if in_place:
        changed_keys = [name for name in key_names if wire.get(name) is not raw.get(name)]  # kept values are reused
        if changed_keys:
            return Verdict(
                FAILED,
                raw,
                after,
                rule="key_changed",
                message=f"transform changed key attribute(s) {', '.join(changed_keys)}; "
                "re-keying needs a destination table",
            )
    if not in_place and target_keys:
        wrong = [f"{name} ({kind})" for name, kind in target_keys.items() if name not in wire or kind not in wire[name]]
        if wrong:
            return Verdict(
                FAILED,
                raw,
                after,
                rule="missing_key",
                message=f"the result lacks the destination's key attribute(s) {', '.join(wrong)} of the right type",
            )
    size = item_size(wire) if check_size else 0
    if size > MAX_ITEM_BYTES:
        return Verdict(
            FAILED,
            raw,
            after,
            rule="too_large",
            message=f"{size:,} bytes is over DynamoDB's 400 KB item limit",
        )
    return Verdict(PUT, raw, after, wire, size=size)
