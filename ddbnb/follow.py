"""Keep a run's target in step with the live source table from its stream, until cutover.

Every run of a table that has a stream records the stream's position before its
first read (``stream.json``). :func:`follow` reads the stream from there, shard
by shard in lineage order (a parent to its end before its children), and hands
each batch of changed keys to the follower worker
(:mod:`ddbnb.worker.follower`), which re-reads each item and writes what the
run's transform makes of it now. After each batch the shard's position is saved
(``follow/state.json``), so a follower killed or stopped with Ctrl-C goes on
from there the next time, and records applied twice change nothing.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import ClientError

from ddbnb.exceptions import (
    DdbnbError,
    InvalidParameterError,
    RunNotFinishedError,
    StreamRequiredError,
    StreamTrimmedError,
    option,
)
from ddbnb.runfolder import FAILURES, FOLLOW, UNFINISHED, RunFolder, utc_now
from ddbnb.worker import params
from ddbnb.worker.clients import clear_errors, client
from ddbnb.worker.follower import Follower
from ddbnb.worker.streams import (
    RECORDS_PER_CALL,
    SKEW_S,
    Stream,
    changes,
    created_at,
    enable_call,
    lineage_order,
    list_shards,
    position,
    stream_problems,
)
from ddbnb.worker.tables import TableFacts, table_facts

#: How long DynamoDB keeps stream records.
RETENTION_S = 24 * 3600.0
#: What ``until`` takes.
UNTIL = ("caught_up", "stopped")
#: Seconds between two polls of a shard that had nothing new (DynamoDB allows 5 GetRecords a second a shard).
POLL_S = 0.25
#: Seconds between two listings of the stream's shards (DescribeStream), and after a shard ends.
LIST_S = 10.0
#: Seconds between two progress lines.
REPORT_S = 5.0
#: Lag samples a follow keeps for its chart.
MAX_LAG_SAMPLES = 2000


def stream_position(facts: TableFacts, boto3_session: boto3.Session | None = None) -> dict[str, Any]:
    """Where the stream of the table ``facts`` describes is now (empty when it has no stream on)."""
    if not facts.stream_arn:
        return {}
    stream = Stream(facts.name, facts.stream_arn, facts.stream_view_type)
    return position(client("dynamodbstreams", boto3_session), stream)


@clear_errors
def follow(
    run_dir: str | Path,
    *,
    until: str = "caught_up",
    for_s: float = 0,
    caught_up_s: float = 2.0,
    progress: bool = True,
    boto3_session: boto3.Session | None = None,
) -> dict[str, Any]:
    """Apply the run's transform to every item the application changed since the run started.

    Reads the source table's stream from the position the run in ``run_dir``
    recorded before its first read (or from where the last follow stopped), and
    for each changed item re-reads it (consistent) and writes what the transform
    makes of it now: in place, the same guarded write as the run; into a
    destination, the transformed item, and deletes of the destination items
    the source no longer makes (deleted, dropped by the transform, or moved to
    another key). Writes are journaled, so ``rollback`` undoes them too.

    ``until="caught_up"`` returns once every shard has been read to its end and
    the newest change applied is less than ``caught_up_s`` seconds old;
    ``until="stopped"`` follows until ``for_s`` seconds have passed or Ctrl-C.
    ``for_s`` (0: no bound) bounds either. Ctrl-C is safe: the position is
    saved after every batch, and the next follow goes on from it.

    Returns the follow's summary (also in ``run_dir/follow/summary.json``):
    records read, items applied, written, deleted, unchanged, failed, the lag
    and whether it caught up. Raises StreamRequiredError when the run recorded
    no stream position, StreamTrimmedError when records it needed are gone,
    and RunNotFinishedError when the run itself has not finished.
    """
    params.check_choice("until", until, UNTIL)
    params.check_rate("for_s", for_s)
    params.check_rate("caught_up_s", caught_up_s)
    params.check_bool("progress", progress)
    if until == "stopped" and not for_s and not progress:
        raise InvalidParameterError("for_s", for_s, "a bound in seconds when until='stopped' runs unattended")
    folder = RunFolder(run_dir)
    recorded = folder.plan()
    if not recorded:
        raise DdbnbError(f"{folder} holds no migration (plan.json is missing). Pass the run_dir 03 used.")
    status = str(folder.summary().get("status") or "")
    if not status or status in UNFINISHED:
        raise RunNotFinishedError(str(folder), status, "follow")
    start = folder.stream_position()
    table = recorded["table"]
    if not start:
        raise StreamRequiredError(
            table,
            "its run recorded no stream position (the table had no stream when the run started)",
            f"Turn a stream on ({enable_call(table)}), then run the migration again into a new run folder; "
            "the changes made during this run can only be found by verify.",
        )
    with folder.lock("follow"):
        run = _Follow(folder, recorded, start, boto3_session)
        try:
            return run.loop(until, for_s, caught_up_s, progress)
        finally:
            run.close()


class _Follow:
    """One follow of one run folder: its stream, its shards' positions, and its follower."""

    def __init__(
        self,
        folder: RunFolder,
        recorded: dict[str, Any],
        start: dict[str, Any],
        boto3_session: boto3.Session | None,
    ) -> None:
        self.folder, self.start = folder, start
        self.table = recorded["table"]
        self.streams = client("dynamodbstreams", boto3_session)
        facts = table_facts(client("dynamodb", boto3_session), self.table)
        now = Stream(self.table, facts.stream_arn, facts.stream_view_type)
        problem = stream_problems(self.table, now, copy=bool(recorded.get("destination")))
        if problem:
            raise StreamRequiredError(self.table, *problem)
        if now.arn != start["stream_arn"]:
            raise StreamTrimmedError(str(folder), "(all)", f"the stream the run recorded ({start['stream_arn']})")
        self.key_names = list(facts.key_names)
        state = folder.follow_state()
        self.state: dict[str, Any] = {"stream_arn": now.arn, "shards": {}, **state}
        self.iterators: dict[str, str | None] = {}
        self.shards: list[dict[str, Any]] = []
        self.listed_at = -LIST_S
        self.polled_empty: dict[str, bool] = {}
        journal_to = folder.journal_location() if recorded.get("journal", True) else ""
        self.follower = Follower(
            {
                "table": self.table,
                "destination": recorded.get("destination"),
                "transform": recorded["transform"],
                "write_mode": "conditional",
                "version_attribute": recorded.get("version_attribute") or "",
                "rate_limit": float(recorded.get("rate_limit") or 0),
                "limits": {
                    "share": float(recorded.get("capacity_share") or 0),
                    "max_read_units": float(recorded.get("max_read_units") or 0),
                    "max_write_units": float(recorded.get("max_write_units") or 0),
                    "divide": 1,
                },
                "failures_to": str(folder / FOLLOW / FAILURES),
                **({"journal": {"to": journal_to}} if journal_to else {}),
            },
            boto3_session,
        )
        self.records = 0
        self.newest = 0.0  # ApproximateCreationDateTime of the newest record applied
        self.lag: list[list[float]] = []  # [time.time(), lag seconds] samples, for the chart

    def close(self) -> None:
        self.follower.close()

    # -- the loop -------------------------------------------------------------------------------------------
    def loop(self, until: str, for_s: float, caught_up_s: float, progress: bool) -> dict[str, Any]:
        began = time.monotonic()
        reported, said_caught_up = 0.0, False
        status = "STOPPED"
        try:
            while True:
                read = self.poll_once()
                lag = self.current_lag()
                self.lag.append([time.time(), min(lag, RETENTION_S)])
                del self.lag[:-MAX_LAG_SAMPLES]
                caught_up = lag <= caught_up_s
                if progress and (time.monotonic() - reported >= REPORT_S or caught_up != said_caught_up):
                    print(self.line(lag, caught_up), flush=True)  # every few seconds, and when it catches up
                    reported, said_caught_up = time.monotonic(), caught_up
                if until == "caught_up" and caught_up:
                    status = "CAUGHT_UP"
                    break
                if for_s and time.monotonic() - began >= for_s:
                    status = "CAUGHT_UP" if caught_up else "STOPPED"
                    break
                if not read:
                    time.sleep(POLL_S)
        except KeyboardInterrupt:
            status = "INTERRUPTED"
        return self.conclude(status, time.monotonic() - began)

    def poll_once(self) -> int:
        """Read one batch from every shard that may be read now and apply it; the records read."""
        read = 0
        for shard in self.readable():
            read += self.read_shard(shard)
        return read

    def readable(self) -> list[dict[str, Any]]:
        """The shards to read now, in lineage order: not finished, and their parent finished (or not read)."""
        if time.monotonic() - self.listed_at > LIST_S:  # shards split every few hours: list them now and then
            self.shards = list_shards(self.streams, self.start["stream_arn"])
            self.listed_at = time.monotonic()
        shards = self.shards
        listed = {shard["ShardId"] for shard in shards}
        started_open = [shard_id for shard_id, then in self.start["shards"].items() if then["open"]]
        for shard_id in [*started_open, *self.state["shards"]]:  # a shard not read to its end that is gone
            saved = self.state["shards"].get(shard_id, {})
            if shard_id not in listed and not saved.get("done"):
                raise StreamTrimmedError(str(self.folder), shard_id, self.since(saved))
        ready = []
        for shard in lineage_order(shards):
            shard_id = shard["ShardId"]
            saved = self.state["shards"].setdefault(shard_id, {})
            then = self.start["shards"].get(shard_id)
            if then is not None and not then["open"]:
                saved["done"] = True  # closed before the run: every record in it predates the run's reads
            if saved.get("done"):
                continue
            parent = shard.get("ParentShardId")
            if parent in listed and not self.state["shards"].get(parent, {}).get("done"):
                continue  # its parent is read to its end first
            ready.append(dict(shard))
        return ready

    def read_shard(self, shard: dict[str, Any]) -> int:
        """One GetRecords on ``shard``; apply what it returns and save the position. The records read."""
        shard_id = shard["ShardId"]
        saved = self.state["shards"][shard_id]
        try:
            if self.iterators.get(shard_id) is None:
                self.iterators[shard_id] = self.iterator(shard_id, saved)
            answer = self.streams.get_records(ShardIterator=self.iterators[shard_id], Limit=RECORDS_PER_CALL)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code == "ExpiredIteratorException":
                self.iterators[shard_id] = None  # taken again from the saved position next poll
                return 0
            if code == "TrimmedDataAccessException":
                raise StreamTrimmedError(str(self.folder), shard_id, self.since(saved)) from None
            raise
        records = answer.get("Records", [])
        self.iterators[shard_id] = answer.get("NextShardIterator")
        self.polled_empty[shard_id] = not records
        if records:
            floor = self.start["taken_at"] - SKEW_S if shard_id in self.start["shards"] else 0.0
            fresh = [record for record in records if created_at(record) >= floor]
            if fresh:
                self.follower.apply(changes(fresh, self.key_names))
            self.records += len(records)
            saved["after"] = records[-1]["dynamodb"]["SequenceNumber"]
            self.newest = max(self.newest, created_at(records[-1]))
        if self.iterators[shard_id] is None:
            saved["done"] = True  # closed, and read to its end: its children may be read now
            self.listed_at = 0.0
        saved["read_at"] = time.time()
        self.folder.save_follow_state(self.state)  # after the batch is applied: a kill re-applies it, harmlessly
        return len(records)

    def since(self, saved: dict[str, Any]) -> str:
        """Where a shard's reading stood: after its last applied record, or at the run's start."""
        return f"sequence number {saved['after']}" if saved.get("after") else _when(self.start["taken_at"])

    def iterator(self, shard_id: str, saved: dict[str, Any]) -> str:
        """A shard iterator from where the follower stopped, or from the shard's start."""
        if saved.get("after"):
            return str(
                self.streams.get_shard_iterator(
                    StreamArn=self.start["stream_arn"],
                    ShardId=shard_id,
                    ShardIteratorType="AFTER_SEQUENCE_NUMBER",
                    SequenceNumber=saved["after"],
                )["ShardIterator"]
            )
        if shard_id in self.start["shards"] and time.time() - self.start["taken_at"] > RETENTION_S:
            raise StreamTrimmedError(str(self.folder), shard_id, self.since(saved))
        return str(
            self.streams.get_shard_iterator(
                StreamArn=self.start["stream_arn"], ShardId=shard_id, ShardIteratorType="TRIM_HORIZON"
            )["ShardIterator"]
        )

    # -- where it stands ------------------------------------------------------------------------------------
    def behind(self) -> list[str]:
        """The shards not finished whose last poll found records (or that were not polled yet)."""
        return [
            shard_id
            for shard_id, saved in self.state["shards"].items()
            if not saved.get("done") and self.polled_empty.get(shard_id) is not True
        ]

    def current_lag(self) -> float:
        """Seconds between now and the newest record read while some shard is behind; 0 when none is, and
        infinity while a shard has not been polled yet."""
        behind = self.behind()
        if not behind:
            return 0.0
        if any(shard_id not in self.polled_empty for shard_id in behind) or not self.newest:
            return float("inf")
        return max(0.0, time.time() - self.newest)

    def line(self, lag: float, caught_up: bool) -> str:
        result = self.follower.result
        return (
            f"follow {self.table}: {self.records:,} records, {result['scanned']:,} items read again; written "
            f"{result['written']:,}, deleted {result['deleted']:,}, unchanged {result['unchanged']:,}, "
            f"failed {result['failed']:,}; lag {lag:.1f} s; "
            + ("caught up" if caught_up else f"{len(self.behind())} shard(s) behind")
        )

    def conclude(self, status: str, seconds: float) -> dict[str, Any]:
        result = self.follower.result
        summary = {
            "status": status,
            "run_dir": str(self.folder),
            "table": self.table,
            "stream_arn": self.start["stream_arn"],
            "records": self.records,
            **{name: result[name] for name in ("scanned", "written", "deleted", "unchanged", "failed", "gone")},
            "conflicts": result["conflicts"],
            "write_units": result["write_units"],
            "read_units": result["read_units"],
            "lag_s": self.lag[-1][1] if self.lag else 0.0,
            "lag": self.lag,
            "seconds": round(seconds, 3),
            "finished_at": utc_now(),
            "late_position": bool(self.start.get("late")),
        }
        self.folder.save_follow_summary(summary)
        self.folder.add_history("follows", {k: v for k, v in summary.items() if k != "lag"})
        said = (
            f"{status}: {summary['records']:,} stream records; {summary['scanned']:,} items read again, "
            f"{summary['written']:,} written, {summary['deleted']:,} deleted, {summary['unchanged']:,} already "
            f"in step, {summary['failed']:,} failed; lag {summary['lag_s']:.1f} s after {seconds:.1f} s."
        )
        if summary["failed"]:
            said += f" Failed items, with their keys and reasons: {self.folder / FOLLOW / FAILURES}."
        if status == "INTERRUPTED":
            said += f" The position is saved: follow again ({option('run_dir', str(self.folder))}) to go on."
        if summary["late_position"]:
            said += " The stream position was recorded after the run had started reading: run verify before cutover."
        print(said)
        return summary


def _when(epoch: float) -> str:
    """An epoch time as run folders write times."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


__all__ = ["follow", "stream_position"]
