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

from botocore.exceptions import ClientError

from ddbnb.exceptions import StreamTrimmedError
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


#: How long DynamoDB keeps stream records.
RETENTION_S = 24 * 3600.0
#: Seconds between two listings of the stream's shards (DescribeStream), and after a shard ends.
LIST_S = 10.0


class ShardReader:
    """Reads a stream from a run's position, shard by shard in lineage order, and keeps where each stands.

    ``start`` is the position the run recorded; ``state`` (``{"shards": {shard_id:
    {after, done, read_at}}}``) is where an earlier reading stopped, and is updated
    in place: the caller saves it once what :meth:`read` returned is handled, and
    calls :meth:`handled` first. ``closed_too`` also reads the shards that were
    already closed when the run began (the aws engine's follower reads those from
    TRIM_HORIZON, and its tracker has to see what it sees). ``where`` names the
    run folder in errors.
    """

    def __init__(
        self, streams: Any, start: Mapping[str, Any], state: dict[str, Any], where: str, closed_too: bool = False
    ) -> None:
        self.streams, self.start, self.state, self.where = streams, start, state, where
        self.state.setdefault("shards", {})
        self.closed_too = closed_too
        self.iterators: dict[str, str | None] = {}
        self.shards: list[dict[str, Any]] = []
        self.listed_at = -LIST_S
        self.polled_empty: dict[str, bool] = {}
        self.ended: set[str] = set()  # closed shards whose last record was read

    def readable(self) -> list[dict[str, Any]]:
        """The shards to read now, in lineage order: not finished, and their parent finished (or not listed)."""
        if time.monotonic() - self.listed_at > LIST_S:  # shards split every few hours: list them now and then
            self.shards = list_shards(self.streams, self.start["stream_arn"])
            self.listed_at = time.monotonic()
        listed = {shard["ShardId"] for shard in self.shards}
        shards = self.state["shards"]
        started_open = [shard_id for shard_id, then in self.start["shards"].items() if then["open"]]
        for shard_id in [*started_open, *shards]:  # a shard not read to its end that is gone
            if shard_id not in listed and not shards.get(shard_id, {}).get("done"):
                raise StreamTrimmedError(self.where, shard_id, self.since(shards.get(shard_id, {})))
        ready = []
        for shard in lineage_order(self.shards):
            shard_id = shard["ShardId"]
            saved = shards.setdefault(shard_id, {})
            then = self.start["shards"].get(shard_id)
            if then is not None and not then["open"] and not self.closed_too:
                saved["done"] = True  # closed before the run: every record in it predates the run's reads
            if saved.get("done"):
                continue
            parent = shard.get("ParentShardId")
            if parent in listed and not shards.get(parent, {}).get("done"):
                continue  # its parent is read to its end first
            ready.append(dict(shard))
        return ready

    def read(self, shard_id: str) -> list[dict[str, Any]]:
        """One GetRecords on the shard, from where it stands; what it returned (may be empty)."""
        saved = self.state["shards"][shard_id]
        try:
            if self.iterators.get(shard_id) is None:
                self.iterators[shard_id] = self.iterator(shard_id, saved)
            answer = self.streams.get_records(ShardIterator=self.iterators[shard_id], Limit=RECORDS_PER_CALL)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code == "ExpiredIteratorException":
                self.iterators[shard_id] = None  # taken again from the saved position next poll
                return []
            if code == "TrimmedDataAccessException":
                raise StreamTrimmedError(self.where, shard_id, self.since(saved)) from None
            raise
        records: list[dict[str, Any]] = answer.get("Records", [])
        self.iterators[shard_id] = answer.get("NextShardIterator")
        if self.iterators[shard_id] is None:
            self.ended.add(shard_id)
        self.polled_empty[shard_id] = not records
        return records

    def handled(self, shard_id: str, records: Sequence[Mapping[str, Any]]) -> None:
        """Move the shard's position past ``records`` (handled); a shard read to its end is done."""
        saved = self.state["shards"][shard_id]
        if records:
            saved["after"] = records[-1]["dynamodb"]["SequenceNumber"]
        if shard_id in self.ended:
            saved["done"] = True  # closed, and read to its end: its children may be read now
            self.listed_at = 0.0
        saved["read_at"] = time.time()

    def floor(self, shard_id: str) -> float:
        """Records of the shard older than this predate the run's reads (0: every record counts)."""
        return float(self.start["taken_at"]) - SKEW_S if shard_id in self.start["shards"] else 0.0

    def since(self, saved: Mapping[str, Any]) -> str:
        """Where a shard's reading stood: after its last handled record, or at the run's start."""
        if saved.get("after"):
            return f"sequence number {saved['after']}"
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(float(self.start["taken_at"])))

    def iterator(self, shard_id: str, saved: Mapping[str, Any]) -> str:
        """A shard iterator from where the reading stopped, or from the shard's start."""
        arn = self.start["stream_arn"]
        if saved.get("after"):
            return str(
                self.streams.get_shard_iterator(
                    StreamArn=arn,
                    ShardId=shard_id,
                    ShardIteratorType="AFTER_SEQUENCE_NUMBER",
                    SequenceNumber=saved["after"],
                )["ShardIterator"]
            )
        if shard_id in self.start["shards"] and time.time() - float(self.start["taken_at"]) > RETENTION_S:
            raise StreamTrimmedError(self.where, shard_id, self.since(saved))
        return str(
            self.streams.get_shard_iterator(StreamArn=arn, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON")[
                "ShardIterator"
            ]
        )

    def behind(self) -> list[str]:
        """The shards not finished whose last poll found records (or that were not polled yet)."""
        return [
            shard_id
            for shard_id, saved in self.state["shards"].items()
            if not saved.get("done") and self.polled_empty.get(shard_id) is not True
        ]

    def unpolled(self) -> bool:
        """Whether a shard still behind has not been polled once yet."""
        return any(shard_id not in self.polled_empty for shard_id in self.behind())
