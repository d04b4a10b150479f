"""Skew a dry run can see: the items under the partition keys it meets, and the units of work they make.

A parallel-scan segment is a range of partition-key hashes, so a key's items
all land in one segment. A sample drawn by segment meets a key with a chance
set by its hash, not by its size, so no sample finds every large key (ADR 0018).
What a dry run can do is count, keys only and up to a cap, the keys it meets:

- the first :data:`CENSUS_KEYS` partition keys in the table's own order, one
  keys-only Scan item and one reversed Query each: a table with few keys (a
  tenant per key, the single-table design that makes hot keys) is counted whole;
- the :data:`SAMPLED_KEYS` keys the sample met most often.

The run still finds and cuts every hot key it meets, counted or not.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from ddbnb.worker.hotkeys import key_condition

#: Partition keys counted from the table's start: a table with this many keys or fewer is counted whole.
CENSUS_KEYS = 32
#: Partition keys of the sample counted, the most sampled first.
SAMPLED_KEYS = 32
#: A key is counted up to this many times a segment's share of items (and at least MIN_CAP items).
CAP_SHARES, MIN_CAP = 8, 10_000


@dataclass(frozen=True)
class KeyCount:
    """The items under one partition key, as counted by the dry run."""

    key: dict[str, Any]  # {partition key name: wire value}
    items: int
    at_least: bool  # counting stopped at the cap: the key holds ``items`` or more
    found_by: str  # "census" (the table's first keys) or "sample"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict."""
        return asdict(self)


def count_keys(
    dynamodb: Any,
    table: str,
    key_names: Sequence[str],
    sample: Sequence[dict[str, Any]],
    *,
    cap: int,
    stats: dict[str, int],
) -> list[KeyCount]:
    """Count the items of the partition keys a dry run meets (none for a table without a sort key: a key
    there is one item). ``stats["key_items_read"]`` grows by every item DynamoDB read for it."""
    if len(key_names) < 2:
        return []
    names = (key_names[0], key_names[1])
    counted: dict[str, KeyCount] = {}
    start: dict[str, Any] | None = None
    for _ in range(2 * CENSUS_KEYS):  # a key the application writes past its end as we go is met again, not forever
        if len(counted) >= CENSUS_KEYS:
            break
        kwargs: dict[str, Any] = {"TableName": table, "Limit": 1, **_keys_only(names)}
        if start is not None:
            kwargs["ExclusiveStartKey"] = start
        page = dynamodb.scan(**kwargs)
        _tally(stats, page)
        if not page.get("Items"):
            break
        value = page["Items"][0][names[0]]
        items, at_least, last = _count(dynamodb, table, names, value, cap, stats)
        counted[_token(value)] = KeyCount({names[0]: value}, items, at_least, "census")
        start = {names[0]: value, names[1]: last if last is not None else page["Items"][0][names[1]]}
    seen = Counter(_token(item[names[0]]) for item in sample if names[0] in item)
    values = {_token(item[names[0]]): item[names[0]] for item in sample if names[0] in item}
    for token, _ in seen.most_common():
        if sum(k.found_by == "sample" for k in counted.values()) >= SAMPLED_KEYS:
            break
        if token not in counted:
            items, at_least, _last = _count(dynamodb, table, names, values[token], cap, stats)
            counted[token] = KeyCount({names[0]: values[token]}, items, at_least, "sample")
    return sorted(counted.values(), key=lambda k: -k.items)


def _count(
    dynamodb: Any, table: str, names: tuple[str, str], value: Any, cap: int, stats: dict[str, int]
) -> tuple[int, bool, Any]:
    """The items under one partition key, up to about ``cap``; whether it stopped there; its last sort key."""
    kwargs: dict[str, Any] = {
        "TableName": table,
        "Limit": cap,  # keys are small: a page could hold far more than the cap
        **_keys_only(names),
        **key_condition(names, value, None, None),
    }
    items, last = 0, None
    while True:
        page = dynamodb.query(**kwargs)
        _tally(stats, page)
        got = page.get("Items", [])
        items += len(got)
        last = got[-1][names[1]] if got else last
        if "LastEvaluatedKey" not in page:
            return items, False, last
        if items >= cap:  # the rest is not read: its last sort key, for the census to jump past it
            tail = dynamodb.query(**{**kwargs, "ScanIndexForward": False, "Limit": 1})
            _tally(stats, tail)
            return items, True, tail["Items"][0][names[1]] if tail.get("Items") else last
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def _tally(stats: dict[str, int], page: dict[str, Any]) -> None:
    stats["key_items_read"] = stats.get("key_items_read", 0) + int(page.get("ScannedCount", 0))


def _keys_only(names: tuple[str, str]) -> dict[str, Any]:
    return {"ProjectionExpression": "#k, #s", "ExpressionAttributeNames": {"#k": names[0], "#s": names[1]}}


def _token(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def ordinary(items: int, total_segments: int, floor: int) -> int:
    """The items of an ordinary segment: ``items`` over the segments, at least ``floor``."""
    return max(floor, math.ceil(max(items, 0) / max(total_segments, 1)))


def count_cap(share: int) -> int:
    """How far a key is counted: :data:`CAP_SHARES` segments' worth, at least :data:`MIN_CAP` items."""
    return max(MIN_CAP, CAP_SHARES * share)


def hot_keys(
    counts: Sequence[KeyCount], item_count: int, total_segments: int, floor: int
) -> tuple[list[KeyCount], int]:
    """The counted keys that would make their segment more than twice an ordinary one (more items than an
    ordinary segment holds without them), largest first, and an ordinary segment's items."""
    hot: list[KeyCount] = []
    for count in sorted(counts, key=lambda k: -k.items):
        without = item_count - sum(k.items for k in hot) - count.items
        if count.items <= ordinary(without, total_segments, floor):
            break
        hot.append(count)
    return hot, ordinary(item_count - sum(k.items for k in hot), total_segments, floor)


def units_of_work(
    item_count: int, total_segments: int, hot_items: int, hot: Sequence[KeyCount]
) -> list[dict[str, Any]]:
    """The items each unit of work would hold, estimated: every scan segment an even share of the items
    outside the hot keys, each hot key in a segment of its own, and (when the plan cuts hot keys, past
    ``hot_items``) the ranges it is cut into. Each row: unit, kind, items, and unsplit_items (the same unit
    when each key stays in one segment; 0 for a range)."""
    total = max(total_segments, 1)
    base = max(item_count - sum(k.items for k in hot), 0) / total
    rows = [{"unit": i, "kind": "scan segment", "items": base, "unsplit_items": base} for i in range(total)]
    for i, key in enumerate(hot[:total]):
        rows[i]["unsplit_items"] = base + key.items
        rows[i]["items"] = base + (min(key.items, hot_items) if hot_items else key.items)
        left, unit = key.items - hot_items, 2 * hot_items
        while hot_items and left > 0:
            rows.append({"unit": len(rows), "kind": "hot key range", "items": min(left, unit), "unsplit_items": 0})
            left -= unit
    return rows
