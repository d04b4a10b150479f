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
    Segments follow the partition key's hash, so a table with few partition key
    values leaves most segments empty: the sample is then topped up from the
    start of the table. ``stats["items_read"]`` counts every item DynamoDB read.
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
    tries = 0
    limit = 4 * math.ceil(size / per_read) + 10
    while len(items) < size and tries < limit:
        tries += 1
        segment = rng.randrange(total)
        kwargs = {"TableName": table, "Segment": segment, "TotalSegments": total, "Limit": per_read}
        page = dynamodb.scan(**kwargs)
        stats["items_read"] += int(page.get("ScannedCount", 0))
        items.extend(page.get("Items", [])[: size - len(items)])
    if len(items) < size:
        seen = {_key(item, key_names) for item in items}
        extra = [i for i in _read(dynamodb, {"TableName": table}, size, stats) if _key(i, key_names) not in seen]
        items.extend(extra[: size - len(items)])
    return items


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
