"""Attribute-level differences between an item before and after a transform."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple


class Change(NamedTuple):
    """One changed attribute path."""

    path: str
    change: str  # added, removed, changed, type_changed
    before: Any
    after: Any


def _kind(value: Any) -> str:
    if isinstance(value, Mapping):
        return "map"
    if isinstance(value, (list, tuple)):
        return "list"
    return type(value).__name__


def diff_items(before: Any, after: Any, path: str = "") -> Iterator[Change]:
    """Yield the changes from ``before`` to ``after``, descending into maps and lists."""
    if isinstance(before, Mapping) and isinstance(after, Mapping):
        for name in sorted(set(before) | set(after), key=str):
            child = f"{path}.{name}" if path else str(name)
            if name not in after:
                yield Change(child, "removed", before[name], None)
            elif name not in before:
                yield Change(child, "added", None, after[name])
            else:
                yield from diff_items(before[name], after[name], child)
    elif isinstance(before, list) and isinstance(after, list):
        for index in range(max(len(before), len(after))):
            child = f"{path}[{index}]"
            if index >= len(after):
                yield Change(child, "removed", before[index], None)
            elif index >= len(before):
                yield Change(child, "added", None, after[index])
            else:
                yield from diff_items(before[index], after[index], child)
    elif _kind(before) != _kind(after) and not (
        _kind(before) in ("int", "Decimal") and _kind(after) in ("int", "Decimal")
    ):
        yield Change(path, "type_changed", before, after)
    elif before != after:
        yield Change(path, "changed", before, after)
