"""Apply a transform to one item and decide what must be written.

Only the standard library: this module ships inside the Lambda package. The
segment worker, the pre-flight check and the dry run all decide through
:func:`evaluate`, so a preview shows exactly what a run will do.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from ddbnb.items import ItemTypeError, deserialize, item_size, serialize

#: DynamoDB's item size limit.
MAX_ITEM_BYTES = 400 * 1024

#: What a transform's result asks for.
UNCHANGED, PUT, DELETE, FAILED = "unchanged", "put", "delete", "failed"


class Verdict(NamedTuple):
    """The outcome of a transform on one item."""

    action: str
    before: dict[str, Any]
    after: Any
    wire: dict[str, Any] | None = None
    rule: str = ""
    message: str = ""


def evaluate(
    transform: Callable[[dict[str, Any]], Any],
    raw: Mapping[str, Any],
    key_names: Sequence[str],
    *,
    in_place: bool = True,
) -> Verdict:
    """Run ``transform`` on the wire-format item ``raw`` and judge its result.

    In place, an unchanged result needs no write and a changed key is refused
    (it would leave the old item behind). Copying into a destination, every
    kept item is written, and keys may change.
    """
    before = deserialize(raw)
    try:
        after = transform(deserialize(raw))
    except Exception as exc:
        return Verdict(FAILED, before, None, rule="raised", message=f"transform raised {type(exc).__name__}: {exc}")
    if after is None:
        return Verdict(DELETE, before, None)
    if not isinstance(after, Mapping):
        return Verdict(
            FAILED,
            before,
            after,
            rule="invalid_type",
            message=f"transform returned {type(after).__name__}; return the item dict, or None to delete it",
        )
    if after == before:
        return Verdict(UNCHANGED, before, after) if in_place else Verdict(PUT, before, after, dict(raw))
    if in_place:
        changed = [name for name in key_names if after.get(name) != before[name]]
        if changed:
            return Verdict(
                FAILED,
                before,
                after,
                rule="key_changed",
                message=f"transform changed key attribute(s) {', '.join(changed)}; re-keying needs a destination table",
            )
    try:
        wire = serialize(after)
    except ItemTypeError as exc:
        return Verdict(FAILED, before, after, rule="invalid_type", message=str(exc))
    size = item_size(wire)
    if size > MAX_ITEM_BYTES:
        return Verdict(
            FAILED,
            before,
            after,
            rule="too_large",
            message=f"{size:,} bytes is over DynamoDB's 400 KB item limit",
        )
    return Verdict(PUT, before, after, wire)
