"""Keep a run's target in step with the live source table from its stream, until cutover.

Every run of a table that has a stream records the stream's position before its
first read (``stream.json``). :func:`follow` reads the stream from there, shard
by shard in lineage order (a parent to its end before its children).

- **local engine** (and any run with ``engine="local"``): each batch of changed
  keys goes to the follower worker (:mod:`ddbnb.worker.follower`), which
  re-reads each item and writes what the run's transform makes of it now.
  After each batch the shard's position is saved (``follow/state.json``), so a
  follower killed or stopped with Ctrl-C goes on from there the next time, and
  records applied twice change nothing.
- **aws engine**: the stack's follower Lambda does that work, fed by an event
  source mapping on the stream. ``follow`` writes its settings, enables the
  mapping, and watches: it reads the stream too (records only, writing
  nothing) and matches every record with the follower's batch reports, so the
  lag is the age of the oldest record not yet applied. The follower keeps
  running after ``follow`` returns, until :func:`stop_following`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import boto3

from ddbnb.control.deploy import stack_outputs
from ddbnb.engines import follower as aws_follower
from ddbnb.engines.aws import fetch_failures
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
from ddbnb.worker.followbatch import COUNTS
from ddbnb.worker.follower import Follower
from ddbnb.worker.streams import (
    RETENTION_S,
    SKEW_S,
    ShardReader,
    Stream,
    changes,
    created_at,
    enable_call,
    position,
    stream_problems,
)
from ddbnb.worker.tables import TableFacts, table_facts
from ddbnb.worker.transforms import lambda_transform_spec

#: What ``until`` takes.
UNTIL = ("caught_up", "stopped")
#: What ``engine`` takes ("": the run's own).
ENGINES = ("local", "aws")
#: Seconds between two polls of a shard that had nothing new (DynamoDB allows 5 GetRecords a second a shard).
POLL_S = 0.25
#: Seconds between two listings of the aws follower's reports and failure queue.
REFRESH_S = 1.0
#: Seconds between two progress lines.
REPORT_S = 5.0
#: Lag samples a follow keeps for its chart.
MAX_LAG_SAMPLES = 2000
#: Where the keys of the records the aws follower gave up on are kept, in the run folder.
SKIPPED = "skipped.jsonl"


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
    engine: str = "",
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

    ``engine`` (``""``, the default: the run's own) says who writes: ``"local"``, this process,
    while ``follow`` runs; ``"aws"``, the stack's follower Lambda (deploy with
    ``follow=True``), which ``follow`` enables and watches, and which keeps
    following after it returns, until :func:`stop_following` at cutover.

    ``until="caught_up"`` returns once every shard has been read to its end and
    the newest change applied is less than ``caught_up_s`` seconds old;
    ``until="stopped"`` follows until ``for_s`` seconds have passed or Ctrl-C.
    ``for_s`` (0: no bound) bounds either. Ctrl-C is safe: the position is
    saved after every batch, and the next follow goes on from it.

    Returns the follow's summary (also in ``run_dir/follow/summary.json``):
    records read, items applied, written, deleted, unchanged, failed, the lag
    and whether it caught up. Raises StreamRequiredError when the run recorded
    no stream position, StreamTrimmedError when records it needed are gone,
    RunNotFinishedError when the run itself has not finished, and
    StackNotFollowingError when an aws run's stack has no follower.
    """
    params.check_choice("until", until, UNTIL)
    params.check_rate("for_s", for_s)
    params.check_rate("caught_up_s", caught_up_s)
    params.check_bool("progress", progress)
    if engine:
        params.check_choice("engine", engine, ENGINES)
    if until == "stopped" and not for_s and not progress:
        raise InvalidParameterError("for_s", for_s, "a bound in seconds when until='stopped' runs unattended")
    folder, recorded, start = _followable(run_dir)
    engine = engine or str(recorded.get("engine") or "local")
    with folder.lock("follow"):
        run: _Follow = (_AwsFollow if engine == "aws" else _LocalFollow)(folder, recorded, start, boto3_session)
        try:
            return run.loop(until, for_s, caught_up_s, progress)
        finally:
            run.close()


@clear_errors
def stop_following(
    run_dir: str | Path, *, execute: bool = True, boto3_session: boto3.Session | None = None
) -> dict[str, Any]:
    """Disable the aws follower of the run in ``run_dir`` (its stack's event source mapping): the cutover's end.

    A local follow follows only while :func:`follow` runs, so there is nothing
    to stop; an aws follower runs until this is called. With ``execute=False``
    only say whether it still runs. The follow state is kept: ``follow``
    enables it again and goes on from where it stopped. Returns the mapping's state.
    """
    params.check_bool("execute", execute)
    folder = RunFolder(run_dir)
    recorded = folder.plan()
    if folder.follow_state().get("engine") != "aws":
        print(f"{folder}: no aws follower was started for this run; a local follow stops when `follow` returns.")
        return {"state": "NotStarted"}
    stack_name = str(recorded.get("stack_name") or folder.summary().get("stack_name") or "")
    outputs = stack_outputs(stack_name, boto3_session)
    where = f"the follower of {recorded['table']!r} on stack {stack_name!r}"
    if not execute:
        state = str(aws_follower.mapping(outputs, stack_name, boto3_session).get("State"))
        print(f"{where} is {state}" + ("; execute=True stops it" if state == "Enabled" else ""))
        return {"state": state, "mapping": outputs["FollowerMappingId"]}
    state = aws_follower.switch(outputs, False, boto3_session)
    saved = folder.follow_state()
    saved["enabled"] = False
    folder.save_follow_state(saved)
    folder.add_history(
        "follows", {"status": "DISABLED", "finished_at": utc_now(), "mapping": outputs["FollowerMappingId"]}
    )
    print(f"{where} is {state}; follow enables it again, where it stopped")
    return {"state": state, "mapping": outputs["FollowerMappingId"]}


def ensure_not_following(folder: RunFolder, boto3_session: boto3.Session | None = None) -> None:
    """Refuse while the run's aws follower is enabled: it would re-apply the transform to what a rollback puts back."""
    if not folder.follow_state().get("enabled"):
        return
    outputs = stack_outputs(folder.plan()["stack_name"], boto3_session)
    if aws_follower.mapping(outputs, folder.plan()["stack_name"], boto3_session).get("State") in (
        "Disabled",
        "Disabling",
    ):
        return
    raise DdbnbError(
        f"The aws follower of {folder} is still enabled, and it would transform again every item the rollback "
        f"puts back. Stop it first: ddbnb.stop_following({str(folder)!r}) (or `ddbnb follow {folder} --stop`)."
    )


def _followable(run_dir: str | Path) -> tuple[RunFolder, dict[str, Any], dict[str, Any]]:
    """The run folder, its plan and its stream position; the errors that say why it cannot be followed."""
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
    return folder, recorded, start


class _Follow:
    """One follow of one run folder: its stream, where each shard stands, and what applies the changes."""

    #: Whether the reader also reads the shards closed before the run (the aws follower reads those).
    closed_too = False

    def __init__(
        self,
        folder: RunFolder,
        recorded: dict[str, Any],
        start: dict[str, Any],
        boto3_session: boto3.Session | None,
    ) -> None:
        self.folder, self.recorded, self.start, self.session = folder, recorded, start, boto3_session
        self.table = recorded["table"]
        facts = table_facts(client("dynamodb", boto3_session), self.table)
        now = Stream(self.table, facts.stream_arn, facts.stream_view_type)
        problem = stream_problems(self.table, now, copy=bool(recorded.get("destination")))
        if problem:
            raise StreamRequiredError(self.table, *problem)
        if now.arn != start["stream_arn"]:
            raise StreamTrimmedError(str(folder), "(all)", f"the stream the run recorded ({start['stream_arn']})")
        self.key_names = list(facts.key_names)
        self.state: dict[str, Any] = {"stream_arn": now.arn, "shards": {}, **folder.follow_state()}
        streams = client("dynamodbstreams", boto3_session)
        self.reader = ShardReader(streams, start, self.state, str(folder), closed_too=self.closed_too)
        self.records = 0
        self.newest = 0.0  # ApproximateCreationDateTime of the newest record read
        self.lag: list[list[float]] = []  # [time.time(), lag seconds] samples, for the chart

    def follower_event(self, failures_to: str, divide: int) -> dict[str, Any]:
        """The event the follower worker applies changes with: the run's transform, tables and limits."""
        recorded = self.recorded
        journal_to = self.folder.journal_location() if recorded.get("journal", True) else ""
        return {
            "table": self.table,
            "destination": recorded.get("destination"),
            "transform": recorded["transform"],
            "write_mode": "conditional",
            "version_attribute": recorded.get("version_attribute") or "",
            "rate_limit": float(recorded.get("rate_limit") or 0) / divide,
            "limits": {
                "share": float(recorded.get("capacity_share") or 0),
                "max_read_units": float(recorded.get("max_read_units") or 0),
                "max_write_units": float(recorded.get("max_write_units") or 0),
                "divide": divide,
            },
            "failures_to": failures_to,
            **({"journal": {"to": journal_to}} if journal_to else {}),
        }

    # -- what each engine does ------------------------------------------------------------------------------
    @property
    def result(self) -> Mapping[str, Any]:
        """The counts so far: items read again, written, deleted, unchanged, failed, gone."""
        raise NotImplementedError

    def handle(self, shard_id: str, records: Sequence[Mapping[str, Any]]) -> None:
        """Do what the engine does with records just read from a shard."""
        raise NotImplementedError

    def current_lag(self) -> float:
        """Seconds the target is behind the stream (0: in step; infinity: not known yet)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release what the follow holds."""

    def concluded(self, summary: dict[str, Any]) -> str:
        """What the engine adds to the summary, and to the closing words."""
        return ""

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
        """Read one batch from every shard that may be read now and handle it; the records read."""
        read = 0
        for shard in self.reader.readable():
            shard_id = shard["ShardId"]
            records = self.reader.read(shard_id)
            if records:
                self.handle(shard_id, records)
                self.records += len(records)
                self.newest = max(self.newest, created_at(records[-1]))
            self.reader.handled(shard_id, records)
            self.folder.save_follow_state(self.state)  # after the batch is handled: a kill handles it again
            read += len(records)
        return read

    def line(self, lag: float, caught_up: bool) -> str:
        result = self.result
        return (
            f"follow {self.table}: {self.records:,} records, {result['scanned']:,} items read again; written "
            f"{result['written']:,}, deleted {result['deleted']:,}, unchanged {result['unchanged']:,}, "
            f"failed {result['failed']:,}; lag {lag:.1f} s; "
            + ("caught up" if caught_up else f"{len(self.reader.behind())} shard(s) behind")
        )

    def conclude(self, status: str, seconds: float) -> dict[str, Any]:
        result = self.result
        summary = {
            "status": status,
            "run_dir": str(self.folder),
            "table": self.table,
            "stream_arn": self.start["stream_arn"],
            "records": self.records,
            **{name: result[name] for name in COUNTS},
            "lag_s": self.lag[-1][1] if self.lag else 0.0,
            "lag": self.lag,
            "seconds": round(seconds, 3),
            "finished_at": utc_now(),
            "late_position": bool(self.start.get("late")),
        }
        more = self.concluded(summary)
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
        print(said + more)
        return summary


class _LocalFollow(_Follow):
    """This process applies the changes, with the follower worker."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.follower = Follower(self.follower_event(str(self.folder / FOLLOW / FAILURES), 1), self.session)

    @property
    def result(self) -> Mapping[str, Any]:
        return self.follower.result

    def close(self) -> None:
        self.follower.close()

    def handle(self, shard_id: str, records: Sequence[Mapping[str, Any]]) -> None:
        floor = self.reader.floor(shard_id)
        fresh = [record for record in records if created_at(record) >= floor]
        if fresh:
            self.follower.apply(changes(fresh, self.key_names))

    def current_lag(self) -> float:
        """Seconds between now and the newest record read while some shard is behind; 0 when none is, and
        infinity while a shard has not been polled yet."""
        if not self.reader.behind():
            return 0.0
        if self.reader.unpolled() or not self.newest:
            return float("inf")
        return max(0.0, time.time() - self.newest)


class _AwsFollow(_Follow):
    """The stack's follower Lambda applies the changes; this process enables it and matches its reports.

    ``state`` adds: ``pending`` (records read here that no report has handled
    yet: sequence number to [created_at, shard, key]), ``unseen`` (handled
    before they were read here: sequence number to created_at), the last report
    read, the reports' counts, and what the mapping gave up on.
    """

    closed_too = True

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        summary = self.folder.summary()
        self.stack_name = str(self.recorded.get("stack_name") or summary.get("stack_name") or "")
        self.run_name = str(summary.get("execution_name") or "")
        if not self.stack_name or not self.run_name:
            raise DdbnbError(f"{self.folder} records no aws execution to follow (summary.json has no execution_name).")
        self.outputs = stack_outputs(self.stack_name, self.session)
        found = aws_follower.mapping(self.outputs, self.stack_name, self.session)
        if found.get("EventSourceArn") != self.start["stream_arn"]:
            raise StreamRequiredError(
                self.table,
                f"stack {self.stack_name!r} follows {found.get('EventSourceArn')}, but the run recorded the stream "
                f"{self.start['stream_arn']}",
                "Deploy the stack again with follow=True: it takes the table's stream as it is now.",
            )
        for name, empty in (("pending", {}), ("unseen", {}), ("reports_after", ""), ("totals", {}), ("skipped", [])):
            self.state.setdefault(name, empty)
        for name in COUNTS:
            self.state["totals"].setdefault(name, 0)
        if not self.state.get("enabled_at") and time.time() - float(self.start["taken_at"]) > RETENTION_S - SKEW_S:
            raise StreamTrimmedError(str(self.folder), "(all)", self.reader.since({}))
        self.floor = float(self.start["taken_at"]) - SKEW_S
        self.enable(found)
        self.refreshed_at = 0.0

    def enable(self, found: Mapping[str, Any]) -> None:
        """Write the follower's settings, then enable the mapping."""
        bucket = self.outputs["ResultsBucketName"]
        prefix = f"s3://{bucket}/runs/{self.run_name}/follow"
        open_shards = max(1, sum(1 for then in self.start["shards"].values() if then["open"]))
        divide = open_shards * int(found.get("ParallelizationFactor") or 1)
        event = self.follower_event(f"{prefix}/{FAILURES}", divide)
        event["transform"] = lambda_transform_spec(event["transform"])  # its name inside the Lambda package
        settings = {
            "run_dir": str(self.folder),
            "event": event,
            "floor": self.floor,
            "reports_to": f"s3://{bucket}/{aws_follower.reports_prefix(self.run_name)}",
        }
        aws_follower.publish_settings(self.outputs, settings, self.session)
        state = aws_follower.switch(self.outputs, True, self.session)
        self.state.update(engine="aws", enabled=True, mapping=self.outputs["FollowerMappingId"])
        self.state.setdefault("enabled_at", time.time())
        self.folder.save_follow_state(self.state)
        print(f"the follower of {self.table!r} on stack {self.stack_name!r} is {state} (mapping {found['UUID']})")

    @property
    def result(self) -> Mapping[str, Any]:
        return dict(self.state["totals"])

    def handle(self, shard_id: str, records: Sequence[Mapping[str, Any]]) -> None:
        pending, unseen = self.state["pending"], self.state["unseen"]
        for record in records:
            at = created_at(record)
            if at < self.floor:
                continue  # the follower skips it too, and does not report it
            number = record["dynamodb"]["SequenceNumber"]
            if unseen.pop(number, None) is None:
                pending[number] = [at, shard_id, record["dynamodb"]["Keys"]]

    def poll_once(self) -> int:
        read = super().poll_once()
        if time.monotonic() - self.refreshed_at >= REFRESH_S:
            self.refresh()
            self.refreshed_at = time.monotonic()
        return read

    def refresh(self) -> None:
        """Take in the follower's new reports and the batches it gave up on."""
        pending, unseen, totals = self.state["pending"], self.state["unseen"], self.state["totals"]
        while True:
            reports, self.state["reports_after"] = aws_follower.new_reports(
                self.outputs, self.run_name, self.state["reports_after"], self.session
            )
            for report in reports:
                for name in COUNTS:
                    totals[name] += report.get(name, 0)
                for number, at in report["handled"]:
                    if pending.pop(number, None) is None:
                        unseen[number] = at
            if len(reports) < aws_follower.REPORTS_PER_LISTING:
                break
        for failure in aws_follower.drain_skipped(self.outputs, self.session):
            self.skipped(failure)
        read_through = min(
            [saved.get("read_at", 0.0) for saved in self.state["shards"].values() if not saved.get("done")] or [0.0]
        )
        for number in [n for n, at in unseen.items() if at < read_through - SKEW_S]:
            del unseen[number]  # reported twice (a retried batch): every shard here has read past it
        self.folder.save_follow_state(self.state)

    def skipped(self, failure: Mapping[str, Any]) -> None:
        """A batch the mapping gave up on: its records are no longer pending; their keys are kept, to verify."""
        info = failure.get("DDBStreamBatchInfo") or {}
        shard_id = str(info.get("shardId") or "")
        low, high = int(info.get("startSequenceNumber") or 0), int(info.get("endSequenceNumber") or 0)
        pending = self.state["pending"]
        gone = [n for n, (_, shard, _) in pending.items() if shard == shard_id and low <= int(n) <= high]
        lines = [
            {
                "shard": shard_id,
                "sequence_number": n,
                "key": pending.pop(n)[2],
                "condition": failure.get("requestContext", {}).get("condition"),
            }
            for n in gone
        ]
        if not lines:  # not read here yet: the range itself is kept
            lines = [{"shard": shard_id, "range": [str(low), str(high)], "failure": dict(failure)}]
        self.state["skipped"].append({"shard": shard_id, "range": [str(low), str(high)], "records": len(gone)})
        path = self.folder / FOLLOW / SKIPPED
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as out:
            out.writelines(json.dumps(line) + "\n" for line in lines)

    def current_lag(self) -> float:
        """The age of the oldest record read here that the follower has not reported (0: none; infinity
        while a shard has not been polled yet)."""
        if self.reader.unpolled():
            return float("inf")
        pending = self.state["pending"]
        if not pending:
            return 0.0
        oldest = min(float(at) for at, _, _ in pending.values())
        return max(0.0, time.time() - oldest)

    def line(self, lag: float, caught_up: bool) -> str:
        return super().line(lag, caught_up) + f"; {len(self.state['pending']):,} records not applied yet"

    def concluded(self, summary: dict[str, Any]) -> str:
        self.folder.save_follow_state(self.state)
        fetch_failures(self.outputs, self.run_name, self.folder / FOLLOW / FAILURES, log=f"follow/{FAILURES}")
        skipped = sum(int(s["records"]) for s in self.state["skipped"])
        summary.update(
            engine="aws",
            pending=len(self.state["pending"]),
            skipped_batches=len(self.state["skipped"]),
            skipped_records=skipped,
            mapping=self.outputs["FollowerMappingId"],
        )
        said = f" The follower keeps running on AWS; at cutover, stop it: ddbnb.stop_following({str(self.folder)!r})."
        if self.state["skipped"]:
            said += (
                f" The follower gave up on {len(self.state['skipped'])} batch(es) after its retries "
                f"({skipped} record(s) read here; keys in {self.folder / FOLLOW / SKIPPED}): run verify, and copy "
                "what differs."
            )
        return said


__all__ = ["ensure_not_following", "follow", "stop_following", "stream_position"]
