"""A table's DynamoDB stream: whether it has one, its shards in lineage order, a position, and its records.

Only the standard library and boto3: the follower reads streams with it, and it
ships inside the Lambda package with the rest of the worker.

A *position* is what a run records before its first read (``stream.json`` in
the run folder)::

    {stream_arn, view_type, taken_at (epoch seconds), shards: {shard_id: {parent, open}}}

The follower reads every shard that was open then, and every shard born since,
from its start; records older than :data:`SKEW_S` before ``taken_at`` are
skipped, since the run read those items after them. Shards already closed then
hold only older records and are not read.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ddbnb.worker.reads import key_text

#: Seconds a record may predate the run's position and still be applied: DynamoDB
#: rounds ApproximateCreationDateTime (DynamoDB Local to the minute), and clocks differ.
SKEW_S = 300.0
#: Stream view types that carry the item as it was before a change.
OLD_IMAGE_TYPES = ("NEW_AND_OLD_IMAGES", "OLD_IMAGE")
#: Records per GetRecords call (DynamoDB's most).
RECORDS_PER_CALL = 1000


@dataclass(frozen=True)
class Stream:
    """A table's stream, as DescribeTable tells it (``arn`` is empty when the table has none)."""

    table: str
    arn: str = ""
    view_type: str = ""

    @property
    def carries_old_images(self) -> bool:
        """Whether records hold the item as it was before the change (needed when a copy's key can move)."""
        return self.view_type in OLD_IMAGE_TYPES


def stream_of(description: Mapping[str, Any]) -> Stream:
    """The stream of a table, from its DescribeTable ``Table``."""
    spec = description.get("StreamSpecification") or {}
    if not spec.get("StreamEnabled") or not description.get("LatestStreamArn"):
        return Stream(description["TableName"])
    return Stream(description["TableName"], description["LatestStreamArn"], spec.get("StreamViewType", ""))


def enable_call(table: str, view_type: str = "NEW_AND_OLD_IMAGES") -> str:
    """The call that turns a table's stream on, to paste into a notebook."""
    return (
        f"boto3.client('dynamodb').update_table(TableName={table!r}, "
        f"StreamSpecification={{'StreamEnabled': True, 'StreamViewType': {view_type!r}}})"
    )


def stream_problems(table_name: str, stream: Stream, copy: bool) -> tuple[str, str] | None:
    """Why ``stream`` cannot feed a follower of a run of ``table_name`` (and what fixes it), or None."""
    if not stream.arn:
        return (
            "it has no stream, so changes made during and after the run cannot be replayed",
            f"Turn one on before the run: {enable_call(table_name)}",
        )
    if copy and stream.view_type not in OLD_IMAGE_TYPES:
        return (
            f"its stream carries {stream.view_type} records, and a copy needs the item as it was before each "
            "change, to find the destination item to delete when the transform moves the key",
            "Streams cannot change view type: turn it off and on again with NEW_AND_OLD_IMAGES before the run "
            f"(UpdateTable StreamEnabled False, then {enable_call(table_name)})",
        )
    return None


def list_shards(streams: Any, arn: str) -> list[dict[str, Any]]:
    """Every shard of the stream (DescribeStream, page by page)."""
    shards: list[dict[str, Any]] = []
    start: str | None = None
    while True:
        kwargs: dict[str, Any] = {"StreamArn": arn}
        if start:
            kwargs["ExclusiveStartShardId"] = start
        described = streams.describe_stream(**kwargs)["StreamDescription"]
        shards.extend(described.get("Shards", []))
        start = described.get("LastEvaluatedShardId")
        if not start:
            return shards


def is_open(shard: Mapping[str, Any]) -> bool:
    """Whether a shard still takes records (it has no ending sequence number yet)."""
    return "EndingSequenceNumber" not in shard.get("SequenceNumberRange", {})


def lineage_order(shards: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The shards with every parent before its children (a parent no longer listed counts as read)."""
    by_id = {shard["ShardId"]: shard for shard in shards}
    ordered: list[Mapping[str, Any]] = []
    placed: set[str] = set()

    def place(shard: Mapping[str, Any], seen: frozenset[str]) -> None:
        shard_id = shard["ShardId"]
        if shard_id in placed or shard_id in seen:
            return
        parent = shard.get("ParentShardId")
        if parent in by_id:
            place(by_id[parent], seen | {shard_id})
        placed.add(shard_id)
        ordered.append(shard)

    for shard in shards:
        place(shard, frozenset())
    return ordered


def position(streams: Any, stream: Stream) -> dict[str, Any]:
    """Where the stream is now: the position a run records before its first read."""
    shards = list_shards(streams, stream.arn)
    return {
        "stream_arn": stream.arn,
        "view_type": stream.view_type,
        "taken_at": time.time(),
        "shards": {s["ShardId"]: {"parent": s.get("ParentShardId"), "open": is_open(s)} for s in shards},
    }


def created_at(record: Mapping[str, Any]) -> float:
    """A record's ApproximateCreationDateTime in epoch seconds (botocore gives a datetime)."""
    value = record.get("dynamodb", {}).get("ApproximateCreationDateTime")
    if isinstance(value, datetime):
        return value.timestamp()
    return float(value or 0)


@dataclass
class Change:
    """What the stream says about one item: its key, and every image of it the records carry."""

    key: dict[str, Any]
    images: list[dict[str, Any]] = field(default_factory=list)


def changes(records: Iterable[Mapping[str, Any]], key_names: Sequence[str]) -> list[Change]:
    """The items ``records`` changed, each once, in the order first met, with their images (old and new)."""
    found: dict[str, Change] = {}
    for record in records:
        body = record.get("dynamodb", {})
        key = {name: body["Keys"][name] for name in key_names}
        change = found.setdefault(key_text(key, key_names), Change(key))
        change.images.extend(body[name] for name in ("OldImage", "NewImage") if body.get(name))
    return list(found.values())
