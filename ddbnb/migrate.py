"""Run a planned migration and leave its results in a run folder; go on with one that stopped."""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import ClientError

from ddbnb.awsrun import run_aws
from ddbnb.engines import checkpoints
from ddbnb.engines.local import INVOCATION_SECONDS, run_local, session_args, systemic, warm_up
from ddbnb.engines.resultwriter import ChildOutcome, write_results
from ddbnb.exceptions import DdbnbError, PlanChangedError, RunStoppedError, command, option
from ddbnb.follow import stream_position
from ddbnb.gate import check_dry_run, preflight
from ddbnb.insight.results import summarize
from ddbnb.plan import Plan, page_size_for, plan_migration
from ddbnb.runfolder import FAILURES, JOURNAL, UNFINISHED, RunFolder, utc_now, utc_stamp
from ddbnb.worker import journal, params
from ddbnb.worker.clients import clear_errors
from ddbnb.worker.hotkeys import range_events


def default_run_dir(table_name: str) -> Path:
    """``$DDBNB_RUNS_DIR`` (default ``./runs``) / ``<table>-<UTC timestamp>``."""
    return Path(os.environ.get("DDBNB_RUNS_DIR", "runs")) / f"{table_name}-{utc_stamp()}"


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

    A run folder holds one plan: ``run_dir/plan.json`` records every setting
    that decides what is written and how fast, before the first write. Running
    again in a folder whose run did not finish goes on from its checkpoints;
    a different plan there is refused with the differences (PlanChangedError).
    One run at a time: a folder another run, retry or rollback holds is
    refused (RunFolderBusyError).

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
        print(f"\n{option('execute', False)}: nothing was run. Set {option('execute', True)} to migrate.")
        return None
    folder = RunFolder(run_dir or default_run_dir(plan.table.name))
    with folder.lock("migrate"):
        settings = {
            "require_dry_run": require_dry_run,
            "max_failed_share": max_failed_share,
            "allow_stale_stack": allow_stale_stack,
            "tolerated_failures": {"percentage": tolerated_failure_percentage, "count": tolerated_failure_count},
        }
        return _migrate(plan, folder, settings, invocation_seconds, progress, boto3_session)


def _migrate(
    plan: Plan,
    folder: RunFolder,
    settings: dict[str, Any],
    invocation_seconds: float,
    progress: bool,
    boto3_session: boto3.Session | None,
) -> dict[str, Any]:
    """The run itself, in a folder this process holds."""
    previous = folder.summary()
    plan = _adopt_recorded(plan, folder)
    dry = check_dry_run(plan, str(folder.path)) if settings["require_dry_run"] else None
    _check_same_plan(plan, folder, previous, dry)
    if plan.engine == "local":
        warm_up()  # the workers' fork server imports ddbnb during the pre-flight
    checked = preflight(plan, settings["max_failed_share"], boto3_session)
    print(checked)
    started = time.monotonic()
    started_at = utc_now()
    unfinished = _unfinished(plan, folder, previous)
    if not unfinished and plan.engine == "local":
        _set_aside(folder)
    _record_stream_position(folder, plan, going_on=previous.get("status") in UNFINISHED, boto3_session=boto3_session)
    location = JOURNAL if plan.journal and plan.engine == "local" else ""
    if plan.engine == "aws":  # the execution this folder started (attached to, or refused if it left a journal)
        location = str(folder.plan().get("journal_to") or "")
    folder.record_plan(
        {
            **plan.settings(),
            "require_dry_run": settings["require_dry_run"],
            "max_failed_share": settings["max_failed_share"],
            "journal_to": location,
        }
    )
    extra: dict[str, Any] = {
        "require_dry_run": settings["require_dry_run"],
        "dry_run": {"transform_sha256": dry["transform_sha256"], "verdict": dry.get("verdict")} if dry else None,
        "preflight": checked.to_dict(),
        "max_failed_share": settings["max_failed_share"],
    }
    if plan.engine == "aws":
        tolerated = settings["tolerated_failures"]
        extra.update(allow_stale_stack=settings["allow_stale_stack"], tolerated_failures=tolerated)
        extra.update(run_aws(plan, folder, progress, boto3_session, settings["allow_stale_stack"], tolerated))
    else:
        folder.mark("RUNNING", table=plan.table.name, total_segments=plan.total_segments, started_at=started_at)
        extra["resumed"] = _run_local(plan, folder, unfinished, invocation_seconds, progress, boto3_session)
    summary = summarize(folder.path, time.monotonic() - started, plan.total_segments)
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
        limits={"read_units_per_s": plan.read_units_per_s, "write_units_per_s": plan.write_units_per_s},
        **extra,
    )
    location = folder.journal_location()
    summary["journal"] = {"location": location, **journal.totals(location, boto3_session)} if location else None
    if extra.get("resumed"):  # items/s of this session's work, not of the whole run over this session's time
        session_scanned = summary["scanned"] - extra["resumed"]["scanned_before"]
        summary["items_per_s"] = round(session_scanned / max(summary["elapsed_s"], 1e-9), 1)
    return folder.conclude(
        summary,
        f"{summary['status']}: scanned {summary['scanned']:,}, written {summary['written']:,}, "
        f"unchanged {summary['unchanged']:,}, deleted {summary['deleted']:,}, failed {summary['failed']:,} "
        f"in {summary['elapsed_s']:.1f} s ({summary['items_per_s']:,.0f} items/s). Results: {folder}",
    )


def _adopt_recorded(plan: Plan, folder: RunFolder) -> Plan:
    """The plan with the folder's recorded values for what the planner chose itself (total_segments,
    max_concurrency): the table may have grown since, and the run must go on cut the same way."""
    recorded = folder.plan()
    changes = {name: recorded[name] for name in plan.chosen if recorded.get(name) not in (None, getattr(plan, name))}
    if not changes:
        return plan
    concurrency = int(changes.get("max_concurrency", plan.max_concurrency))
    page_size = page_size_for(plan.table, plan.read_units_per_s, plan.write_units_per_s, concurrency)
    print(
        "going on with the plan recorded in the run folder: "
        + ", ".join(f"{name}={value} (chosen now: {getattr(plan, name)})" for name, value in changes.items())
    )
    return replace(plan, **changes, page_size=page_size)


def _check_same_plan(plan: Plan, folder: RunFolder, previous: dict[str, Any], dry: dict[str, Any] | None) -> None:
    """Refuse a plan that differs from the one the folder records (PlanChangedError, with the differences).

    The transform's code may change (a fix after a failed run) when the folder's
    dry run previewed the new code: that is recorded, and the run goes on with it.
    """
    differences = folder.differences(plan.settings())
    if not differences:
        return
    if all(line.startswith("transform_sha256:") for line in differences) and dry is not None:
        print("the transform's code changed since this run started; the dry run in this folder previewed it: going on")
        return
    raise PlanChangedError(str(folder), differences, unfinished=previous.get("status") in UNFINISHED)


def _record_stream_position(folder: RunFolder, plan: Plan, going_on: bool, boto3_session: boto3.Session | None) -> None:
    """Record where the source table's stream is, before the run's first read, so that ``follow`` can
    replay every change made since. A run that goes on keeps the position its start recorded; one
    recorded only now, after reads, is marked ``late`` (follow then asks for a verify)."""
    if going_on and folder.stream_position():
        return
    try:
        position = stream_position(plan.table, boto3_session)
    except ClientError as exc:  # a role that may not DescribeStream: the run goes on, unfollowable
        error = exc.response.get("Error", {})
        print(
            f"the stream's position was not recorded ({error.get('Code')}: {error.get('Message')}): "
            "ddbnb.follow cannot follow this run; verify can still compare it"
        )
        return
    if position or not going_on:  # a new run of a table with no stream leaves no older run's position behind
        folder.record_stream_position({**position, "late": going_on} if position else {})


def _set_aside(folder: RunFolder) -> None:
    """Keep an earlier, finished attempt's failure log under attempts/, and clear its checkpoints."""
    failures = folder / FAILURES
    if failures.is_dir() and any(failures.iterdir()):
        shutil.move(str(failures), str(folder.attempt_path(FAILURES)))
    checkpoints.clear(folder.path)


def _unfinished(plan: Plan, folder: RunFolder, previous: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """The checkpoints of a local run in ``folder`` that did not finish (empty when there is none).

    A run whose summary says RUNNING, INTERRUPTED (killed, or stopped with
    Ctrl-C) or STOPPED goes on from its checkpoints; a finished run's folder starts over.
    """
    if plan.engine != "local" or previous.get("status") not in UNFINISHED:
        return {}
    return checkpoints.load_all(folder.path)


def _run_local(
    plan: Plan,
    folder: RunFolder,
    unfinished: dict[int, dict[str, Any]],
    invocation_seconds: float,
    progress: bool,
    boto3_session: boto3.Session | None,
) -> dict[str, int] | None:
    """Run the segments not yet done, from their checkpoints; write the results of all of them."""
    done: list[ChildOutcome] = []
    events = []
    planned = plan.events()
    for event in planned:
        event["failures_to"] = str((folder / FAILURES).resolve())
        if plan.journal:
            event["journal"] = {"to": str((folder / JOURNAL).resolve())}
    for event in list(planned):  # the key ranges that segments cut before the run stopped
        planned += range_events(event, (unfinished.get(event["segment"]) or {}).get("splits") or ())
    for event in planned:
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
            checkpoint_dir=str(folder.path),
            carried=[saved for saved in unfinished.values() if saved["cursor"] is None],
            total_segments=len(planned),  # the scan segments and the key ranges known so far
        )
    except KeyboardInterrupt:
        folder.mark("INTERRUPTED", table=plan.table.name, total_segments=plan.total_segments)
        print(f"\nstopped. To go on from here, {command('resume', folder)} (or run 03 again with this run_dir).")
        raise
    write_results(folder.path, done + outcomes, run_name=folder.path.name, engine=plan.engine)
    stop = next((o for o in outcomes if systemic(o)), None)
    if stop is not None:
        folder.mark("STOPPED", table=plan.table.name, total_segments=plan.total_segments)
        raise RunStoppedError(str(folder), int(stop.event["segment"]), stop.error, stop.cause)
    if not unfinished:
        return None
    return {
        "segments_done": len(done),
        "segments_continued": len(unfinished) - len(done),
        "scanned_before": scanned_before,
    }


def plan_from_record(recorded: dict[str, Any], boto3_session: boto3.Session | None = None) -> Plan:
    """The plan a run folder recorded, planned again: the same tables, code, mode, cut and limits."""
    return plan_migration(
        recorded["table"],
        recorded["transform"],
        destination_table_name=recorded.get("destination"),
        engine=recorded["engine"],
        total_segments=recorded["total_segments"],
        max_concurrency=recorded["max_concurrency"],
        write_mode=recorded.get("write_mode", "batch"),  # a folder recorded before conditional was the default
        version_attribute=recorded.get("version_attribute", ""),
        rate_limit=recorded.get("rate_limit", 0),
        capacity_share=recorded.get("capacity_share", 0),
        max_read_units=recorded.get("max_read_units", 0),
        max_write_units=recorded.get("max_write_units", 0),
        stack_name=recorded.get("stack_name", ""),
        prewarm_read_units=recorded.get("prewarm_read_units", 0),
        prewarm_write_units=recorded.get("prewarm_write_units", 0),
        journal=recorded.get("journal", True),
        split_hot_keys=recorded.get("split_hot_keys", True),
        boto3_session=boto3_session,
    )


@clear_errors
def resume(run_dir: str | Path, *, progress: bool = True, boto3_session: boto3.Session | None = None) -> dict[str, Any]:
    """Go on with the unfinished local run in ``run_dir`` (killed, or stopped with Ctrl-C).

    Plans the same run again from ``run_dir/plan.json`` (the same tables, code,
    write mode, cut and capacity limits) and runs it: finished segments are
    skipped, the others go on from their last checkpoint, and the results and
    ``summary.json`` cover the whole run. Running 03 again with the same
    ``run_dir`` and the same parameters does the same.
    """
    params.check_bool("progress", progress)
    folder = RunFolder(run_dir)
    recorded = folder.plan()
    if not recorded:
        raise DdbnbError(f"{folder} holds no run to resume (plan.json is missing). Pass the run_dir 03 used.")
    summary = migrate(
        plan_from_record(recorded, boto3_session),
        execute=True,
        run_dir=folder.path,
        require_dry_run=recorded.get("require_dry_run", True),
        max_failed_share=recorded.get("max_failed_share", 0.0),
        progress=progress,
        boto3_session=boto3_session,
    )
    assert summary is not None
    return summary
