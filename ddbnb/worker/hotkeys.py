"""Hot partition keys: found by the scan that meets them, cut into sort-key ranges, run as units of their own.

Only the standard library and boto3: this module ships inside the Lambda package.

A parallel-scan segment is a range of partition-key hashes, so every item of one
partition key is in one segment and more segments cannot split it. A scan
segment whose event carries ``hot_items`` counts the items of the partition key
it is in; the item past that count makes the key hot. The segment then reads
the rest of the key once, keys only, with Query (:func:`cut`), in sort-key
order, and cuts it every ``unit_items`` items. Each range becomes a *key-range
unit*: an event like a segment's with ``key_range`` and a segment number of its
own (:func:`range_segment`), which reads its range with Query and is a segment
in every other way (cursor, checkpoints, journal, result). The scan then jumps
past the key (its cursor goes to the key's last sort key) and leaves whatever
else of the key it reads to the ranges: those items are counted as
``passed``, not ``scanned``, so every item is counted once.

The ranges are half open, ``(after, until]``: the first starts after the last
item the scan handled itself, and the last has no end, so items written into
the key later still belong to a range. A table without a sort key needs none
of this: a key there is one item.

On the aws engine the Map reads a fixed list of segments, so the ranges run in a
second pass of the same Map: when the scan segments are done, the state machine
has :func:`collect_ranges` read their ``splits`` from the Map Run's ResultWriter
files and write the ranges as the Map's next item list.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

WireItem = dict[str, Any]


def range_segment(parent: int, index: int, total_segments: int) -> int:
    """The segment number of the ``index``-th range the scan segment ``parent`` cut: past every scan
    segment's number, the same whenever the cut is made again, and ``parent`` modulo ``total_segments``."""
    return total_segments * (index + 1) + parent


@dataclass
class Sifted:
    """A scan page sifted: the items to handle, how many were left to key ranges, and a key found hot."""

    items: list[WireItem]
    passed: int = 0
    hot: WireItem | None = None  # the hot key's item that made it hot (not handled: its range has it)
    last_handled: WireItem | None = None  # the hot key's last item the scan handled itself


@dataclass
class HotKeys:
    """What a scan segment knows of the partition keys it has met: the current key's count, and the keys
    already cut (their items are left to their ranges)."""

    key_names: tuple[str, str]
    hot_items: int
    cut_keys: list[WireItem] = field(default_factory=list)  # {partition key name: value}
    current: Any = None
    count: int = 0
    last: WireItem | None = None

    @classmethod
    def for_event(
        cls, event: Mapping[str, Any], key_names: Sequence[str], splits: Sequence[Mapping[str, Any]]
    ) -> HotKeys | None:
        """The tracker for a scan event, or None when it splits nothing (no ``hot_items``, a key-range unit,
        a table without a sort key)."""
        hot_items = int(event.get("hot_items") or 0)
        if not hot_items or event.get("key_range") or len(key_names) < 2:
            return None
        cut: list[WireItem] = []
        for split in splits:
            if split["key"] not in cut:
                cut.append(split["key"])
        return cls((key_names[0], key_names[1]), hot_items, cut)

    def is_cut(self, item: Mapping[str, Any]) -> bool:
        """Whether ``item``'s partition key was cut into ranges."""
        name = self.key_names[0]
        return any(item.get(name) == key[name] for key in self.cut_keys)

    def sift(self, items: Sequence[WireItem]) -> Sifted:
        """Split a page: items of cut keys are passed; the item that makes its key hot stops the sifting,
        and the rest of the page's items of that key are passed too (the hot key's ranges hold them)."""
        name = self.key_names[0]
        sifted = Sifted([])
        for item in items:
            value = item.get(name)
            if sifted.hot is not None and value == sifted.hot.get(name):
                sifted.passed += 1
                continue
            if self.cut_keys and self.is_cut(item):
                sifted.passed += 1
                continue
            if value != self.current:
                self.current, self.count, self.last = value, 0, None
            self.count += 1
            if self.count > self.hot_items and sifted.hot is None:
                sifted.hot, sifted.last_handled = item, self.last
                sifted.passed += 1
                continue
            self.last = item
            sifted.items.append(item)
        return sifted


def cut(
    query: Any,
    table: str,
    key_names: tuple[str, str],
    hot: Mapping[str, Any],
    last_handled: Mapping[str, Any] | None,
    unit_items: int,
) -> tuple[list[dict[str, Any]], Any, int]:
    """Read the rest of ``hot``'s partition key (keys only, from after ``last_handled``) and cut it every
    ``unit_items`` items. ``query`` sends one Query (kwargs to response). Returns the ranges
    (``{key, after, until}``, the last without an end), the last sort key read, and the items read."""
    pk, sk = key_names
    key = {pk: hot[pk]}
    after = last_handled[sk] if last_handled is not None else None
    kwargs: dict[str, Any] = {
        "TableName": table,
        "ProjectionExpression": "#k, #s",
        "ReturnConsumedCapacity": "TOTAL",
        **key_condition(key_names, hot[pk], after, None),
    }
    bounds: list[Any] = []
    read = 0
    last = after
    while True:
        page = query(kwargs)
        for item in page.get("Items", []):
            if after is not None and item[sk] == after:
                continue
            read += 1
            last = item[sk]
            if read % unit_items == 0:
                bounds.append(item[sk])
        if "LastEvaluatedKey" not in page:
            break
        kwargs = {**kwargs, "ExclusiveStartKey": page["LastEvaluatedKey"]}
    edges = zip([after, *bounds], [*bounds, None], strict=True)
    return [{"key": key, "after": low, "until": high} for low, high in edges], last, read


def key_condition(key_names: tuple[str, str], value: Any, after: Any, until: Any) -> dict[str, Any]:
    """A Query's key condition for the items of the partition key ``value`` with a sort key from ``after``
    (inclusive here: the caller drops the item equal to it) to ``until`` (inclusive); either may be None."""
    names = {"#k": key_names[0], "#s": key_names[1]}
    values: dict[str, Any] = {":k": value}
    condition = "#k = :k"
    if after is not None and until is not None:
        condition += " AND #s BETWEEN :a AND :u"
        values.update({":a": after, ":u": until})
    elif after is not None:
        condition += " AND #s >= :a"
        values[":a"] = after
    elif until is not None:
        condition += " AND #s <= :u"
        values[":u"] = until
    return {"KeyConditionExpression": condition, "ExpressionAttributeNames": names, "ExpressionAttributeValues": values}


def range_query(event: Mapping[str, Any], key_names: Sequence[str], cursor: Mapping[str, Any] | None) -> dict[str, Any]:
    """The Query kwargs (without paging) that read a key-range unit's range from ``cursor``."""
    unit = event["key_range"]
    names = (key_names[0], key_names[1])
    kwargs = {"TableName": event["table"], **key_condition(names, unit["key"][names[0]], unit["after"], unit["until"])}
    if cursor:
        kwargs["ExclusiveStartKey"] = dict(cursor)
    return kwargs


def in_range(event: Mapping[str, Any], key_names: Sequence[str], items: Sequence[WireItem]) -> list[WireItem]:
    """A key-range unit's page without the item at its lower bound (the range before it holds that one)."""
    after = event["key_range"]["after"]
    if after is None:
        return list(items)
    return [item for item in items if item.get(key_names[1]) != after]


def range_events(parent: Mapping[str, Any], splits: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The events of the key-range units a scan segment's ``splits`` (its result's) stand for."""
    base = {k: v for k, v in parent.items() if k not in ("cursor", "totals", "hot_items")}
    return [{**base, "segment": int(split["segment"]), "key_range": _key_range(split)} for split in splits]


def _key_range(split: Mapping[str, Any]) -> dict[str, Any]:
    """A unit's ``key_range`` (its key and bounds) from a scan segment's ``splits`` entry."""
    return {name: split[name] for name in ("key", "after", "until")}


def results_prefix(map_run_arn: str) -> str:
    """Where the ResultWriter (prefix ``results``) puts a Map Run's files: ``results/<map run id>/``."""
    return f"results/{map_run_arn.rsplit(':', 1)[-1]}/"


def collect_ranges(s3: Any, bucket: str, map_run_arn: str, write_to: str) -> dict[str, Any]:
    """The key-range units the segments of a Map Run cut, written to ``s3://bucket/write_to`` as the Map's
    next item list (``[{segment, key_range}]``, by segment). Returns ``{count, key}``.

    Read from every ``SUCCEEDED_*.json`` the Map Run's ResultWriter wrote (a redriven Map Run adds files
    next to the first ones): a segment's ``splits`` are final only in its last result.
    """
    prefix = results_prefix(map_run_arn)
    units: dict[int, dict[str, Any]] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}SUCCEEDED_"):
        for listed in page.get("Contents", []):
            for entry in json.loads(s3.get_object(Bucket=bucket, Key=listed["Key"])["Body"].read()):
                output = json.loads(entry.get("Output") or "{}")
                for split in output.get("splits") or ():
                    units[int(split["segment"])] = {"segment": int(split["segment"]), "key_range": _key_range(split)}
    items = [units[segment] for segment in sorted(units)]
    s3.put_object(Bucket=bucket, Key=write_to, Body=json.dumps(items).encode())
    return {"count": len(items), "key": write_to}
