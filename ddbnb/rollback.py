"""Undo a migration from its journal: restore what is still as the run left it, report the rest.

The run folder's ``plan.json`` says where the journal is (``run_dir/journal``,
or the results bucket for the aws engine). Each segment's journal is read
newest object first by the same worker on either engine
(:mod:`ddbnb.worker.rollback`); the results land in a new folder
(``run_dir/rollback-<UTC timestamp>``) in the ResultWriter layout, so
04_results charts them, with every conflict in ``conflicts/``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import boto3

from ddbnb.awsrun import execution_name
from ddbnb.control.deploy import stack_outputs, table_differences
from ddbnb.engines.aws import fetch_failures, fetch_results, start_run, wait_run
from ddbnb.engines.local import run_local, session_args
from ddbnb.engines.resultwriter import ChildOutcome, write_results
from ddbnb.exceptions import DdbnbError, InvalidParameterError, StaleStackError
from ddbnb.follow import ensure_not_following
from ddbnb.insight.results import summarize
from ddbnb.plan import choose_concurrency, units_text
from ddbnb.progress import count_of
from ddbnb.runfolder import CONFLICTS, FAILURES, RunFolder, utc_now, utc_stamp
from ddbnb.worker import journal, params
from ddbnb.worker import rollback as worker
from ddbnb.worker.budgets import capacity_limits
from ddbnb.worker.clients import clear_errors
from ddbnb.worker.follower import SEGMENT as FOLLOWER_SEGMENT
from ddbnb.worker.tables import describe_table


@clear_errors
def rollback(
    run_dir: str | Path,
    *,
    execute: bool = False,
    engine: str = "local",
    max_concurrency: int = 0,
    write_mode: str = "conditional",
    rate_limit: float = 0,
    capacity_share: float = 0,
    max_read_units: float = 0,
    max_write_units: float = 0,
    stack_name: str = "",
    rollback_dir: str | Path = "",
    progress: bool = True,
    boto3_session: boto3.Session | None = None,
) -> dict[str, Any]:
    """Undo the migration in ``run_dir`` from its journal; with ``execute=False`` only say what it would do.

    An item still exactly as the run left it is put back as it was before (one
    the run deleted is re-created; one a copy wrote into its destination is
    deleted). An item changed since by anyone else is left alone and reported
    as a conflict, with the attributes that differ (``load_conflicts``). With
    ``write_mode="conditional"`` (the default) each write is guarded by the item
    as read just before, so a change racing with the rollback is left alone
    too; ``"batch"`` writes whole items unguarded (faster; for a table nobody
    writes meanwhile). ``capacity_share``, ``max_read_units``,
    ``max_write_units``, ``rate_limit`` and ``max_concurrency`` limit it as in
    ``plan_migration``. Running it again is harmless: what is already back is
    counted as unchanged.

    Results go to ``rollback_dir`` (default ``run_dir/rollback-<UTC timestamp>``)
    in the ResultWriter layout, with ``summary.json``, which is returned.
    RunIncompleteError is raised, after the results are written, when items failed.
    """
    params.check_bool("execute", execute)
    params.check_bool("progress", progress)
    params.check_choice("engine", engine, params.ENGINES)
    params.check_choice("write_mode", write_mode, params.WRITE_MODES)
    rate, share = params.check_limits(max_concurrency, rate_limit, capacity_share, max_read_units, max_write_units)
    if not str(run_dir):
        raise InvalidParameterError("run_dir", run_dir, "the run folder 03_migrate wrote (it prints it)")
    folder = RunFolder(run_dir)
    recorded = folder.plan()
    if not recorded:
        raise DdbnbError(f"{folder} holds no migration (plan.json is missing). Pass the run_dir 03 used.")
    if execute:
        ensure_not_following(folder, boto3_session)  # it would transform again what the rollback puts back
    with folder.lock("rollback"):
        source = folder.journal_for_rollback(boto3_session)
        if engine == "aws" and not source.startswith("s3://"):
            raise InvalidParameterError(
                "engine", engine, f"'local': the journal of this run is on this machine ({source}), not in S3"
            )
        table = recorded.get("destination") or recorded["table"]
        facts = describe_table(table, boto3_session)
        segments = journal.segments(source, boto3_session)
        concurrency = min(max_concurrency or choose_concurrency(engine)[0], max(len(segments), 1))
        limits = (share, float(max_read_units), float(max_write_units))
        read_budget, write_budget, _ = capacity_limits(facts, facts, *limits)
        out = Path(rollback_dir) if rollback_dir else folder / f"rollback{'' if execute else '-preview'}-{utc_stamp()}"
        out.mkdir(parents=True, exist_ok=True)
        share_of = concurrency if engine == "aws" else 1  # the local engine shares one budget between its workers
        events = [
            {
                "operation": worker.OPERATION,
                "table": table,
                "transform": "",
                "segment": segment,
                "total_segments": max(int(recorded.get("total_segments") or 0), segment + 1),
                "write_mode": write_mode,
                "rate_limit": rate / concurrency if rate else 0,
                "read_units_per_s": read_budget / share_of,
                "write_units_per_s": write_budget / share_of,
                "failures_to": str(out / FAILURES),
                "journal": {"from": source, "execute": execute, "conflicts_to": str(out / CONFLICTS)},
            }
            for segment in segments
        ]
        followed = [event for event in events if event["segment"] == FOLLOWER_SEGMENT]
        if followed and engine == "aws":
            raise InvalidParameterError(
                "engine",
                engine,
                "'local': this run was followed, and the follower's writes are undone first, on this machine, "
                "before the run's own (newest first)",
            )
        if engine == "aws":
            for event in events:  # each invocation paces to the capacity as it is then
                event["limits"] = dict(zip(("share", "max_read_units", "max_write_units"), limits, strict=True))
                event["limits"]["divide"] = concurrency
        what = "Roll back" if execute else "Preview the rollback of"
        where = f"destination {table!r}" if recorded.get("destination") else f"{table!r}"
        print(
            f"{what} the run in {folder}: {where}, journal {source} ({count_of(len(segments), 'segment')}), engine "
            f"{engine}, {concurrency} at a time, write mode {write_mode}, capacity "
            f"{units_text(read_budget)} read and {units_text(write_budget)} write units/s"
        )
        started = time.monotonic()
        extra: dict[str, Any] = {}
        if events and engine == "aws":
            extra = _run_aws(events, recorded, stack_name, out, concurrency, progress, boto3_session)
        elif events:
            outcomes: list[ChildOutcome] = []
            # The follower wrote after the run: its writes are undone first, so that each key goes back newest first.
            for wave in (followed, [event for event in events if event not in followed]):
                if wave and all(outcome.status == "SUCCEEDED" for outcome in outcomes):
                    outcomes += run_local(
                        wave,
                        max_concurrency=concurrency,
                        session_args=session_args(boto3_session),
                        progress=progress,
                        total_segments=len(wave),
                    )
            write_results(out, outcomes, run_name=out.name, engine="local")
        else:
            write_results(out, [], run_name=out.name, engine=engine)
        summary = summarize(out, time.monotonic() - started, len(events), worker.COUNTERS)
        summary.update(
            rollback_of=str(folder),
            execute=execute,
            table=table,
            engine=engine,
            write_mode=write_mode,
            journal=source,
            run_dir=str(out),
            **extra,
        )
        if execute:
            entry = {"at": utc_now(), "run_dir": out.name, **{k: summary[k] for k in _HISTORY}}
            folder.add_history("rollbacks", entry, status="ROLLED_BACK" if summary["status"] == "SUCCEEDED" else None)
        return RunFolder(out).conclude(summary, _said(summary))


#: What the run folder's summary keeps of each rollback.
_HISTORY = ("restored", "recreated", "removed", "unchanged", "conflicts", "failed", "status")


def _said(summary: dict[str, Any]) -> str:
    """What a rollback did, or would do, in one paragraph."""
    verb = "" if summary["execute"] else "would "
    lines = [
        f"{summary['status']}: {summary['scanned']:,} journal entries; {verb}restore {summary['restored']:,}, "
        f"{verb}re-create {summary['recreated']:,}, {verb}delete {summary['removed']:,}; "
        f"{summary['unchanged']:,} already as before; {summary['conflicts']:,} conflict(s) left alone; "
        f"failed {summary['failed']:,}. Results: {summary['run_dir']}"
    ]
    if summary["conflicts"]:
        lines.append(
            f"Items changed since the migration are left as they are: ddbnb.load_conflicts({summary['run_dir']!r}) "
            "lists each key and what changed."
        )
    if not summary["execute"]:
        lines.append("execute=False: nothing was written. Set execute=True to roll back.")
    return "\n".join(lines)


def _run_aws(
    events: list[dict[str, Any]],
    recorded: dict[str, Any],
    stack_name: str,
    out: Path,
    concurrency: int,
    progress: bool,
    boto3_session: boto3.Session | None,
) -> dict[str, Any]:
    """Run the rollback on the stack's state machine; fetch its results and logs into ``out``."""
    stack = stack_name or recorded.get("stack_name") or ""
    outputs = stack_outputs(stack, boto3_session)
    differences = table_differences(outputs, recorded["table"], recorded.get("destination"))
    if differences:
        raise StaleStackError(stack, differences)
    name = execution_name(out.name)
    prefix = f"s3://{outputs['ResultsBucketName']}/runs/{name}"
    for event in events:
        event["failures_to"] = f"{prefix}/{FAILURES}"
        event["journal"] = {**event["journal"], "conflicts_to": f"{prefix}/{CONFLICTS}"}
    arn = start_run(events, outputs, name, max_concurrency=concurrency, boto3_session=boto3_session)
    print(f"started {arn}")
    bucket = outputs["ResultsBucketName"]
    described = wait_run(arn, len(events), bucket=bucket, progress=progress, boto3_session=boto3_session)
    fetch_results(outputs, arn, out, boto3_session)
    fetch_failures(outputs, name, out / FAILURES, boto3_session)
    fetch_failures(outputs, name, out / CONFLICTS, boto3_session, log=CONFLICTS)
    (out / "execution.json").write_text(json.dumps({"execution_arn": arn, "status": described["status"]}))
    return {"execution_arn": arn, "execution_status": described["status"], "stack_name": stack}
