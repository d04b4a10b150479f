"""Run a planned migration and leave its results in a run folder."""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import boto3

from ddbnb.control.deploy import stack_differences, stack_outputs
from ddbnb.engines import checkpoints
from ddbnb.engines.aws import (
    describe_status,
    fetch_failures,
    fetch_results,
    restore_raised,
    segment_position,
    start_run,
    wait_run,
)
from ddbnb.engines.aws import redrive as engine_redrive
from ddbnb.engines.local import INVOCATION_SECONDS, run_local, session_args, systemic
from ddbnb.engines.resultwriter import ChildOutcome, write_results
from ddbnb.exceptions import (
    DdbnbError,
    DryRunRequiredError,
    RunIncompleteError,
    RunStoppedError,
    StaleStackError,
    TransformRejectedError,
)
from ddbnb.insight.results import load_failures, result_entries, summarize
from ddbnb.insight.sample import sample_items
from ddbnb.plan import Plan, plan_migration
from ddbnb.worker import journal, params
from ddbnb.worker.clients import clear_errors, client
from ddbnb.worker.evaluate import FAILED, evaluate
from ddbnb.worker.items import format_key, key_to_wire
from ddbnb.worker.prewarm import targets_for
from ddbnb.worker.segment import process_keys
from ddbnb.worker.tables import describe_table
from ddbnb.worker.transforms import load_transform, transform_digest

#: Items the pre-flight check runs the transform on before anything is written.
PREFLIGHT_ITEMS = 25
#: The folder of a run that holds every failed item's key and reason, one JSON line each.
FAILURES = "failures"
#: What a run folder records of its plan, so that ddbnb.resume can plan the same run again.
PLAN_FILE = "plan.json"


def default_run_dir(table_name: str) -> Path:
    """``$DDBNB_RUNS_DIR`` (default ``./runs``) / ``<table>-<UTC timestamp>``."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return Path(os.environ.get("DDBNB_RUNS_DIR", "runs")) / f"{table_name}-{stamp}"


@dataclass
class Preflight:
    """What the pre-flight check saw: items checked, failed, and the first failure."""

    checked: int
    failed: int
    first_key: Any = None
    first_reason: str = ""

    def __str__(self) -> str:
        if not self.failed:
            return f"pre-flight: the transform ran cleanly on {self.checked} sampled item(s)"
        return (
            f"pre-flight: {self.failed} of {self.checked} sampled item(s) failed; first, item "
            f"{self.first_key}: {self.first_reason}"
        )


def preflight(plan: Plan, max_failed_share: float = 0.0, boto3_session: boto3.Session | None = None) -> Preflight:
    """Run the transform on a few sampled items; raise when too many of them fail.

    A transform that fails (raises, changes the key in place, returns a type
    DynamoDB rejects) on more than ``max_failed_share`` of the sampled items
    stops the run before the first write with TransformRejectedError.
    """
    dynamodb = client("dynamodb", boto3_session)
    items = sample_items(
        dynamodb, plan.table.name, PREFLIGHT_ITEMS, item_count=plan.table.item_count, key_names=plan.table.key_names
    )
    transform = load_transform(plan.transform)
    verdicts = [
        evaluate(transform, raw, plan.table.key_names, in_place=not plan.destination, target_keys=plan.target_keys)
        for raw in items
    ]
    failed = [v for v in verdicts if v.action == FAILED]
    result = Preflight(len(verdicts), len(failed))
    if failed:
        first = failed[0]
        result.first_key = format_key({name: first.before[name] for name in plan.table.key_names})
        result.first_reason = first.message
    if result.failed > max_failed_share * result.checked:
        raise TransformRejectedError(
            plan.transform, result.failed, result.checked, max_failed_share, result.first_key, result.first_reason
        )
    return result


def check_dry_run(plan: Plan, run_dir: str) -> dict[str, Any]:
    """Return the dry run in ``run_dir`` when it previewed this plan's code on its table; else raise.

    The code is compared by content hash, so an edit after the dry run is caught.
    """
    if not run_dir:
        raise DryRunRequiredError(
            "run_dir=''", "an empty run_dir makes a new run folder, which holds no dry run (set run_dir)"
        )
    path = Path(run_dir) / "dry_run.json"
    if not path.is_file():
        raise DryRunRequiredError(run_dir, "dry_run.json is missing")
    report: dict[str, Any] = json.loads(path.read_text())
    if report.get("table") != plan.table.name or (report.get("destination") or None) != plan.destination:
        raise DryRunRequiredError(
            run_dir,
            f"it previewed table {report.get('table')!r} into {report.get('destination')!r}, "
            f"not {plan.table.name!r} into {plan.destination!r}",
        )
    if report.get("transform_sha256") != transform_digest(plan.transform):
        raise DryRunRequiredError(run_dir, f"the code of {plan.transform} changed since the dry run")
    return report


@clear_errors
def migrate(
    plan: Plan,
    *,
    execute: bool = False,
    run_dir: str | Path = "",
    require_dry_run: bool = True,
    max_failed_share: float = 0.0,
    allow_stale_stack: bool = False,
    tolerated_failure_percentage: float = 0.0,
    tolerated_failure_count: int = 0,
    invocation_seconds: float = INVOCATION_SECONDS,
    progress: bool = True,
    boto3_session: boto3.Session | None = None,
) -> dict[str, Any] | None:
    """Run ``plan`` when ``execute`` is True; otherwise print it and return None.

    ``execute`` must be a real bool: the string "False" is refused, never run.
    With ``require_dry_run`` (the default), ``run_dir`` must hold a dry run
    (02_dry_run) of the same transform code on the same table. Before the first
    write, the transform runs on sampled items; more than ``max_failed_share``
    of them failing stops the run (TransformRejectedError).

    Results go to ``run_dir`` ("" means :func:`default_run_dir`) in the Step
    Functions ResultWriter layout, plus ``summary.json``; the summary dict is
    returned. Raises RunIncompleteError, after writing the results, when any
    item or segment failed. On the aws engine, the plan's pre-warm raises the
    tables' capacity first; provisioned capacity is put back however the run
    ends (a refused restore is reported in ``summary.json``, not raised). Before it starts an
    execution, the aws engine checks that the stack runs the plan's code on the
    plan's tables (StaleStackError otherwise); ``allow_stale_stack=True`` runs
    the deployed code anyway and records that in ``summary.json``.
    ``tolerated_failure_percentage`` (0 to 100) and ``tolerated_failure_count``
    are the share and number of segments that may fail before the aws engine's
    Map fails the run (failed segments are reported either way, with the cursor
    they stopped at, and ``redrive`` runs a failed run's segments again from there).
    """
    params.check_bool("execute", execute)
    params.check_bool("allow_stale_stack", allow_stale_stack)
    params.check_percentage("tolerated_failure_percentage", tolerated_failure_percentage)
    params.check_bool("require_dry_run", require_dry_run)
    params.check_bool("progress", progress)
    params.check_share("max_failed_share", max_failed_share)
    params.check_int("tolerated_failure_count", tolerated_failure_count, 0)
    print(plan)
    if not execute:
        print("\nexecute=False: nothing was run. Set execute=True to migrate.")
        return None
    dry = check_dry_run(plan, str(run_dir)) if require_dry_run else None
    checked = preflight(plan, max_failed_share, boto3_session)
    print(checked)
    folder = Path(run_dir) if run_dir else default_run_dir(plan.table.name)
    folder.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    extra: dict[str, Any] = {
        "require_dry_run": require_dry_run,
        "dry_run": {"transform_sha256": dry["transform_sha256"], "verdict": dry.get("verdict")} if dry else None,
        "preflight": {"checked": checked.checked, "failed": checked.failed},
        "max_failed_share": max_failed_share,
    }
    previous = _previous_summary(folder)
    unfinished = _unfinished(plan, folder, previous)
    if not unfinished and not (plan.engine == "aws" and previous.get("status") == "RUNNING"):  # a new run here
        _check_earlier_journal(plan, folder, boto3_session)
    if not unfinished:
        shutil.rmtree(folder / FAILURES, ignore_errors=True)  # the log of an earlier, finished run
        checkpoints.clear(folder)
    _record_plan(
        plan,
        folder,
        require_dry_run=require_dry_run,
        max_failed_share=max_failed_share,
        journal=plan.journal,
        journal_to=_journal_location(plan, folder),
    )
    if plan.engine == "aws":
        tolerated = {"percentage": tolerated_failure_percentage, "count": tolerated_failure_count}
        extra.update(allow_stale_stack=allow_stale_stack, tolerated_failures=tolerated)
        extra.update(_run_aws(plan, folder, progress, boto3_session, previous, allow_stale_stack, tolerated))
    else:
        extra["resumed"] = _run_local(plan, folder, unfinished, invocation_seconds, progress, boto3_session)
    summary = summarize(folder, time.monotonic() - started, plan.total_segments)
    summary.update(
        table=plan.table.name,
        destination=plan.destination,
        transform=plan.transform,
        engine=plan.engine,
        write_mode=plan.write_mode,
        version_attribute=plan.version_attribute,
        total_segments=plan.total_segments,
        max_concurrency=plan.max_concurrency,
        stack_name=plan.stack_name,
        started_at=started_at,
        run_dir=str(folder),
        **extra,
    )
    location = recorded_plan(folder).get("journal_to") or ""
    summary["journal"] = {"location": location, **journal.totals(location, boto3_session)} if location else None
    if extra.get("resumed"):  # items/s of this session's work, not of the whole run over this session's time
        session_scanned = summary["scanned"] - extra["resumed"]["scanned_before"]
        summary["items_per_s"] = round(session_scanned / max(summary["elapsed_s"], 1e-9), 1)
    return conclude(
        folder,
        summary,
        f"{summary['status']}: scanned {summary['scanned']:,}, written {summary['written']:,}, "
        f"unchanged {summary['unchanged']:,}, deleted {summary['deleted']:,}, failed {summary['failed']:,} "
        f"in {summary['elapsed_s']:.1f} s ({summary['items_per_s']:,.0f} items/s). Results: {folder}",
    )


def conclude(folder: Path, summary: dict[str, Any], said: str) -> dict[str, Any]:
    """Write ``summary`` to ``folder/summary.json``, say ``said``, and raise RunIncompleteError unless it succeeded."""
    (folder / "summary.json").write_text(json.dumps(summary, indent=1))
    print(said)
    if summary["status"] != "SUCCEEDED":
        raise RunIncompleteError(str(folder), summary["failed"], summary["failed_segments"])
    return summary


def recorded_plan(folder: Path) -> dict[str, Any]:
    """What plan.json in ``folder`` records of its run (empty when there is none)."""
    path = folder / PLAN_FILE
    return dict(json.loads(path.read_text())) if path.is_file() else {}


def _check_earlier_journal(plan: Plan, folder: Path, boto3_session: boto3.Session | None) -> None:
    """Refuse a new run in a folder whose journal an earlier run left, unless it journals beside it exactly.

    A rollback undoes each segment's journal newest first, segments side by
    side; that order is exact only while every run in the folder cuts the table
    the same way (a key stays in one segment), on the local engine (one journal).
    """
    recorded = recorded_plan(folder)
    location = str(recorded.get("journal_to") or "")
    if not location or not journal.totals(location, boto3_session)["objects"]:
        return
    total = recorded.get("total_segments")
    if plan.journal and plan.engine == recorded.get("engine") == "local" and plan.total_segments == total:
        return
    raise DdbnbError(
        f"{folder} holds the journal of an earlier run ({location}), which ddbnb.rollback(run_dir) undoes. "
        f"A new run in this folder must journal beside it: engine='local', total_segments={total}, journal=True. "
        "Otherwise use a new run_dir (and run 02 there), or delete that journal if the earlier run will never "
        "be rolled back.",
        run_dir=str(folder),
        journal=location,
    )


def _journal_location(plan: Plan, folder: Path) -> str:
    """Where the run's journal goes: ``folder/journal`` locally; on aws, the bucket prefix of the
    execution this folder already started (a new execution records its own once it is named)."""
    if not plan.journal:
        return ""
    if plan.engine == "local":
        return str(folder / journal.FOLDER)
    return str(recorded_plan(folder).get("journal_to") or "")


def _update_plan(folder: Path, **settings: Any) -> None:
    """Add ``settings`` to what plan.json in ``folder`` records."""
    (folder / PLAN_FILE).write_text(json.dumps({**recorded_plan(folder), **settings}, indent=1))


def _previous_summary(folder: Path) -> dict[str, Any]:
    """What summary.json says of an earlier run in ``folder`` (empty when there was none)."""
    path = folder / "summary.json"
    return dict(json.loads(path.read_text())) if path.is_file() else {}


def _unfinished(plan: Plan, folder: Path, previous: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """The checkpoints of a local run in ``folder`` that did not finish (empty when there is none).

    A run whose summary says RUNNING or INTERRUPTED (killed, or stopped with
    Ctrl-C) goes on from its checkpoints; a finished run's folder starts over.
    """
    if plan.engine != "local" or previous.get("status") not in ("RUNNING", "INTERRUPTED", "STOPPED"):
        return {}
    recorded = recorded_plan(folder)
    found = checkpoints.load_all(folder)
    if found and (recorded.get("table"), recorded.get("total_segments")) != (plan.table.name, plan.total_segments):
        raise DdbnbError(
            f"{folder} holds an unfinished run of {recorded.get('table')!r} cut into "
            f"total_segments={recorded.get('total_segments')}; go on with it with the same plan "
            f"(total_segments={recorded.get('total_segments')}, or ddbnb.resume(run_dir)), or use a new run_dir.",
            run_dir=str(folder),
        )
    return found


def _mark(folder: Path, status: str, plan: Plan) -> None:
    """Say in summary.json that the local run in ``folder`` is RUNNING, INTERRUPTED or STOPPED (resumable)."""
    (folder / "summary.json").write_text(json.dumps({"status": status, "table": plan.table.name}))


def _record_plan(plan: Plan, folder: Path, **settings: Any) -> None:
    """Write what ddbnb.resume needs to plan the same run again, and mark a local run as running."""
    recorded = {
        "table": plan.table.name,
        "transform": plan.transform,
        "destination": plan.destination,
        "engine": plan.engine,
        "total_segments": plan.total_segments,
        "max_concurrency": plan.max_concurrency,
        "write_mode": plan.write_mode,
        "version_attribute": plan.version_attribute,
        "rate_limit": plan.rate_limit,
        "stack_name": plan.stack_name,
        **settings,
    }
    (folder / PLAN_FILE).write_text(json.dumps(recorded, indent=1))
    if plan.engine == "local":  # the aws engine records its execution itself, once it has one
        _mark(folder, "RUNNING", plan)


def _run_local(
    plan: Plan,
    folder: Path,
    unfinished: dict[int, dict[str, Any]],
    invocation_seconds: float,
    progress: bool,
    boto3_session: boto3.Session | None,
) -> dict[str, int] | None:
    """Run the segments not yet done, from their checkpoints; write the results of all of them."""
    done: list[ChildOutcome] = []
    events = []
    for event in plan.events():
        event["failures_to"] = str(folder / FAILURES)
        if plan.journal:
            event["journal"] = {"to": str(folder / journal.FOLDER)}
        saved = unfinished.get(event["segment"])
        if saved is not None and saved["cursor"] is None:
            done.append(ChildOutcome(event, "SUCCEEDED", saved["started_at"], saved["finished_at"], output=saved))
        elif saved is not None:
            events.append({**event, "cursor": saved["cursor"], "totals": saved})
        else:
            events.append(event)
    scanned_before = sum(int(saved["scanned"]) for saved in unfinished.values())
    if unfinished:
        print(
            f"going on with the unfinished run in {folder}: {len(done)} segment(s) done, "
            f"{sum(1 for e in events if 'cursor' in e)} from their checkpoints, {scanned_before:,} items scanned before"
        )
    try:
        outcomes = run_local(
            events,
            max_concurrency=plan.max_concurrency,
            expected_items=plan.table.item_count,
            invocation_seconds=invocation_seconds,
            session_args=session_args(boto3_session),
            progress=progress,
            checkpoint_dir=str(folder),
            carried=[saved for saved in unfinished.values() if saved["cursor"] is None],
            total_segments=plan.total_segments,
        )
    except KeyboardInterrupt:
        _mark(folder, "INTERRUPTED", plan)
        print(f"\nstopped. Run 03 again with run_dir={str(folder)!r}, or ddbnb.resume(run_dir), to go on from here.")
        raise
    write_results(folder, done + outcomes, run_name=folder.name, engine=plan.engine)
    stop = next((o for o in outcomes if systemic(o)), None)
    if stop is not None:
        _mark(folder, "STOPPED", plan)
        raise RunStoppedError(str(folder), int(stop.event["segment"]), stop.error, stop.cause)
    if not unfinished:
        return None
    return {
        "segments_done": len(done),
        "segments_continued": len(unfinished) - len(done),
        "scanned_before": scanned_before,
    }


def execution_name(run_name: str) -> str:
    """A Step Functions execution name for a run: unique per start, at most 80 allowed characters."""
    safe = re.sub(r"[^A-Za-z0-9_-]", "-", run_name)[:71]
    return f"{safe}-{uuid.uuid4().hex[:8]}"


def _run_aws(
    plan: Plan,
    folder: Path,
    progress: bool,
    boto3_session: boto3.Session | None,
    previous: dict[str, Any],
    allow_stale_stack: bool = False,
    tolerated: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Start the run, or attach to the one this run folder already started; wait; fetch the results.

    Returns what summary.json adds for the aws engine: the execution, what
    pre-warm raised and restored, and where failed segments stopped.
    """
    outputs = stack_outputs(plan.stack_name, boto3_session)
    arn, name = previous.get("execution_arn"), previous.get("execution_name") or folder.name
    status = describe_status(arn, boto3_session) if arn and previous.get("status") == "RUNNING" else None
    if status in ("FAILED", "TIMED_OUT", "ABORTED"):
        raise DdbnbError(
            f"{folder} holds execution {arn}, which ended {status}. Run ddbnb.redrive(run_dir) to run its "
            "failed segments again, or use a new run_dir to start another run.",
            execution_arn=arn,
            status=status,
        )
    if status in ("RUNNING", "PENDING_REDRIVE", "SUCCEEDED"):
        print(f"attaching to {arn} ({status}), which this run folder started; no new execution")
    else:
        differences = stack_differences(outputs, plan.transform, plan.table.name, plan.destination)
        if differences and not allow_stale_stack:
            raise StaleStackError(plan.stack_name, differences)
        if differences:
            print(f"allow_stale_stack=True: running the deployed code although {'; '.join(differences)}")
        name = execution_name(folder.name)
        prefix = f"s3://{outputs['ResultsBucketName']}/runs/{name}"
        settings: dict[str, Any] = {"failures_to": f"{prefix}/{FAILURES}"}
        if plan.journal:
            settings["journal"] = {"to": f"{prefix}/{journal.FOLDER}"}
            _update_plan(folder, journal_to=settings["journal"]["to"])  # before the first write
        arn = start_run(
            [{**event, **settings} for event in plan.events()],
            outputs,
            name,
            max_concurrency=plan.max_concurrency,
            prewarm_targets=targets_for(
                plan.table.name, plan.destination, plan.prewarm_read_units, plan.prewarm_write_units
            ),
            tolerated_failure_percentage=float((tolerated or {}).get("percentage", 0)),
            tolerated_failure_count=int((tolerated or {}).get("count", 0)),
            boto3_session=boto3_session,
        )
        print(f"started {arn}")
    assert arn is not None and name is not None
    # Written now, so that running 03 again attaches to it and ddbnb.redrive(run_dir) finds it.
    (folder / "summary.json").write_text(
        json.dumps(
            {
                "execution_arn": arn,
                "execution_name": name,
                "total_segments": plan.total_segments,
                "status": "RUNNING",
                "stack_name": plan.stack_name,
            }
        )
    )
    described = wait_run(arn, plan.total_segments, progress=progress, boto3_session=boto3_session)
    collected = _collect_aws(outputs, described, name, folder, boto3_session)
    return {"execution_arn": arn, "execution_name": name, **collected}


def _collect_aws(
    outputs: dict[str, str],
    described: dict[str, Any],
    name: str,
    folder: Path,
    boto3_session: boto3.Session | None,
) -> dict[str, Any]:
    """Fetch an ended execution's results and failure logs; restore capacity after a failure; report both."""
    arn = described["executionArn"]
    fetch_results(outputs, arn, folder, boto3_session)
    fetch_failures(outputs, name, folder / FAILURES, boto3_session)
    stopped_at = failed_segment_positions(folder, boto3_session)
    for position in stopped_at:
        print(
            f"segment {position['segment']} failed after {position['scanned']:,} items"
            + (f" at cursor {json.dumps(position['cursor'])}" if position["cursor"] else "")
        )
    if described["status"] == "SUCCEEDED":
        state = json.loads(described.get("output") or "{}")
        capacity = {"raised": state.get("capacity", {}).get("notes", []), "restore": state.get("restored")}
        if state.get("restore_error"):
            capacity["restore"] = {"left": state["restore_error"]}
        for note in (state.get("restored") or {}).get("notes", []):
            print(f"capacity: {note}")
    else:
        print(
            f"execution {described['status']}: {described.get('cause', '')} — "
            f"ddbnb.redrive(run_dir) runs its failed segments again from where they stopped"
        )
        capacity = {"restore": restore_raised(arn, boto3_session)}
    return {"execution_status": described["status"], "capacity": capacity, "failed_segments_at": stopped_at}


def failed_segment_positions(folder: Path, boto3_session: boto3.Session | None = None) -> list[dict[str, Any]]:
    """Each failed segment of the aws run in ``folder``: the items it had scanned and the cursor it stopped at."""
    positions = []
    for entry in result_entries(folder):
        if entry.get("Status") == "SUCCEEDED" or not entry.get("ExecutionArn"):
            continue
        where = segment_position(entry["ExecutionArn"], boto3_session)
        positions.append(
            {
                "segment": int(json.loads(entry["Input"])["segment"]),
                "cursor": where["cursor"],
                "scanned": int(where["totals"].get("scanned", 0)),
                "error": f"{entry.get('Error', '')}: {entry.get('Cause', '')}",
            }
        )
    return positions


@clear_errors
def redrive(
    run_dir: str | Path, *, progress: bool = True, boto3_session: boto3.Session | None = None
) -> dict[str, Any]:
    """Redrive the failed aws-engine run in ``run_dir``: only its failed segments run again.

    Each failed segment goes on from the cursor it stopped at. When the
    execution ends, its results are fetched again and ``summary.json`` is
    rewritten, so 04_results shows the final state; the summary is returned
    (RunIncompleteError when segments or items still failed).
    """
    params.check_bool("progress", progress)
    folder = Path(run_dir)
    summary = _previous_summary(folder)
    arn = summary.get("execution_arn")
    if not arn:
        raise DdbnbError(f"{run_dir} holds no aws-engine run (summary.json has no execution_arn).")
    recorded = recorded_plan(folder)
    outputs = stack_outputs(summary.get("stack_name") or recorded.get("stack_name", ""), boto3_session)
    status = describe_status(arn, boto3_session)
    if status not in ("FAILED", "TIMED_OUT", "ABORTED"):
        raise DdbnbError(
            f"Execution {arn} is {status}; only a failed, timed-out or stopped execution can be redriven"
            + (
                " (one that succeeded with tolerated failed segments cannot: summary.json lists them, with "
                "their cursors, under failed_segments_at; ddbnb.retry_failed(run_dir) retries failed items)."
                if status == "SUCCEEDED"
                else ". Run 03 again with this run_dir to follow it."
            ),
            execution_arn=arn,
            status=status,
        )
    started = time.monotonic()
    engine_redrive(arn, boto3_session)
    print(f"redriving {arn}")
    summary["status"] = "RUNNING"
    (folder / "summary.json").write_text(json.dumps(summary, indent=1))
    described = wait_run(arn, int(summary["total_segments"]), progress=progress, boto3_session=boto3_session)
    collected = _collect_aws(outputs, described, summary["execution_name"], folder, boto3_session)
    elapsed = float(summary.get("elapsed_s", 0)) + time.monotonic() - started  # the first attempt's time too
    totals = summarize(folder, elapsed, int(summary["total_segments"]))
    redrives = [*summary.get("redrives", []), {"at": datetime.now(timezone.utc).isoformat(timespec="seconds")}]
    summary.update(totals, **collected, redrives=redrives)
    return conclude(
        folder,
        summary,
        f"{summary['status']} after redrive: failed {summary['failed']:,} item(s), "
        f"{summary['failed_segments']} segment(s)",
    )


@clear_errors
def retry_failed(
    run_dir: str | Path, *, progress: bool = True, boto3_session: boto3.Session | None = None
) -> dict[str, Any]:
    """Read exactly the failed items of the run in ``run_dir`` again, transform and write them.

    Uses the run's table, destination, transform (as its file is now: fix it
    first), write mode and version attribute. Items deleted since are skipped.
    Its results go to ``run_dir/retry-<UTC timestamp>/`` in the same layout;
    the summary is returned, and RunIncompleteError is raised when items still fail.
    """
    params.check_bool("progress", progress)
    folder = Path(run_dir)
    summary_path = folder / "summary.json"
    if not summary_path.is_file():
        raise DdbnbError(f"{folder} holds no finished run (summary.json is missing). Pass a run_dir 03 wrote.")
    run = json.loads(summary_path.read_text())
    failures = load_failures(folder)
    facts = describe_table(run["table"], boto3_session)
    by_segment: dict[int, dict[str, Any]] = {}
    for segment, row in zip(failures["segment"], failures["key"], strict=True):
        by_segment.setdefault(int(segment), {})[row] = key_to_wire(json.loads(row), facts.key_schema)
    keys = sum(len(found) for found in by_segment.values())
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    target = folder / f"retry-{stamp}"
    journal_to = recorded_plan(folder).get("journal_to") or ""
    base = {
        "table": run["table"],
        "destination": run.get("destination"),
        "total_segments": int(run.get("total_segments") or 1),
        "transform": run["transform"],
        "write_mode": run.get("write_mode", "batch"),
        "version_attribute": run.get("version_attribute", ""),
        "rate_limit": 0,
        "failures_to": str(target / FAILURES),
    }
    if journal_to:  # the run's own journal, in each key's segment: a rollback of the run undoes the retry too
        base["journal"] = {"to": journal_to}
    print(f"retrying {keys:,} failed item(s) of {folder} ...")
    started = time.monotonic()
    outcomes = []
    for segment, found in sorted(by_segment.items()):
        event = {**base, "segment": segment}
        started_at = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        result = process_keys(event, list(found.values()), boto3_session=boto3_session)
        outcomes.append(ChildOutcome(event, "SUCCEEDED", started_at, result["finished_at"], output=result))
    write_results(target, outcomes, run_name=target.name, engine="local")
    summary = summarize(target, time.monotonic() - started, len(outcomes))
    summary.update(retry_of=str(folder), keys=keys, run_dir=str(target))
    return conclude(
        target,
        summary,
        f"{summary['status']}: {keys:,} key(s), written {summary['written']:,}, unchanged "
        f"{summary['unchanged']:,}, deleted {summary['deleted']:,}, failed {summary['failed']:,}. Results: {target}",
    )


@clear_errors
def resume(run_dir: str | Path, *, progress: bool = True, boto3_session: boto3.Session | None = None) -> dict[str, Any]:
    """Go on with the unfinished local run in ``run_dir`` (killed, or stopped with Ctrl-C).

    Plans the same run again from ``run_dir/plan.json`` and runs it: finished
    segments are skipped, the others go on from their last checkpoint, and the
    results and ``summary.json`` cover the whole run. Running 03 again with the
    same ``run_dir`` does the same.
    """
    params.check_bool("progress", progress)
    folder = Path(run_dir)
    if not (folder / PLAN_FILE).is_file():
        raise DdbnbError(f"{folder} holds no run to resume ({PLAN_FILE} is missing). Pass the run_dir 03 used.")
    recorded = json.loads((folder / PLAN_FILE).read_text())
    plan = plan_migration(
        recorded["table"],
        recorded["transform"],
        destination_table_name=recorded.get("destination"),
        engine=recorded["engine"],
        total_segments=recorded["total_segments"],
        max_concurrency=recorded["max_concurrency"],
        write_mode=recorded.get("write_mode", "batch"),
        version_attribute=recorded.get("version_attribute", ""),
        rate_limit=recorded.get("rate_limit", 0),
        stack_name=recorded.get("stack_name", ""),
        journal=recorded.get("journal", True),
        boto3_session=boto3_session,
    )
    summary = migrate(
        plan,
        execute=True,
        run_dir=folder,
        require_dry_run=recorded.get("require_dry_run", True),
        max_failed_share=recorded.get("max_failed_share", 0.0),
        progress=progress,
        boto3_session=boto3_session,
    )
    assert summary is not None
    return summary
