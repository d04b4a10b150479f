"""Random samples spread across a table's key space, at a cost of O(sample)."""

from __future__ import annotations

import math
import random
from typing import Any

#: Segments the key space is cut into for sampling.
SAMPLE_SEGMENTS = 1000


def sample_items(
    dynamodb: Any,
    table: str,
    size: int,
    *,
    item_count: int,
    key_names: tuple[str, ...],
    seed: int = 0,
    stats: dict[str, int] | None = None,
) -> list[dict[str, Any]]:
    """Read about ``size`` wire-format items from random segments of ``table``.

    Small tables (up to 4x the sample) are read from the start. Larger ones are
    cut into segments so that each holds about as many items as one read takes;
    random segments are then read one small page each until the sample is full.
    Segments follow the partition key's hash, so where many items share a
    partition key most segments are empty: two empty reads in a row halve the
    number of segments, until most hold an item. A segment drawn again is read
    on from where its last read stopped. A sample still short after its reads
    is topped up from the start of the table. ``stats["items_read"]`` counts
    every item DynamoDB read.
    """
    stats = stats if stats is not None else {}
    stats.setdefault("items_read", 0)
    if size <= 0:
        return []
    if item_count <= 4 * size:
        return _read(dynamodb, {"TableName": table}, size, stats)
    per_read = max(1, min(5, size // 20))  # few items a read: spread wide, not in clusters
    total = max(1, min(SAMPLE_SEGMENTS * 100, item_count // per_read))
    rng = random.Random(seed)
    items: list[dict[str, Any]] = []
    seen: set[str] = set()
    cursors: dict[int, Any] = {}  # segment: where its next read starts (None once it is read to its end)
    tries = empty = 0
    limit = 4 * math.ceil(size / per_read) + 10
    while len(items) < size and tries < limit:
        tries += 1
        segment = rng.randrange(total)
        kwargs = {"TableName": table, "Segment": segment, "TotalSegments": total, "Limit": per_read}
        if segment in cursors:
            if cursors[segment] is None:
                continue
            kwargs["ExclusiveStartKey"] = cursors[segment]
        page = dynamodb.scan(**kwargs)
        stats["items_read"] += int(page.get("ScannedCount", 0))
        found = page.get("Items", [])
        cursors[segment] = page.get("LastEvaluatedKey")
        empty = 0 if found else empty + 1
        if empty == 2:
            total, empty, cursors = max(1, total // 2), 0, {}
        _add_new(items, seen, found, size, key_names)
    if len(items) < size:
        _add_new(items, seen, _read(dynamodb, {"TableName": table}, size, stats), size, key_names)
    return items


def _add_new(
    items: list[dict[str, Any]], seen: set[str], found: list[dict[str, Any]], size: int, key_names: tuple[str, ...]
) -> None:
    for item in found:
        key = _key(item, key_names)
        if len(items) < size and key not in seen:
            seen.add(key)
            items.append(item)


def _key(item: dict[str, Any], key_names: tuple[str, ...]) -> str:
    return repr([item.get(name) for name in key_names])


def _read(dynamodb: Any, kwargs: dict[str, Any], size: int, stats: dict[str, int]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    while len(items) < size:
        page = dynamodb.scan(**kwargs, Limit=size - len(items))
        stats["items_read"] += int(page.get("ScannedCount", 0))
        items.extend(page.get("Items", []))
        if "LastEvaluatedKey" not in page:
            break
        kwargs = {**kwargs, "ExclusiveStartKey": page["LastEvaluatedKey"]}
    return items
