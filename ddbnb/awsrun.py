"""A run on the aws engine, over its run folder: start or attach, wait, collect; and redrive.

The run folder records the execution before anything waits on it, so running
03 again attaches to it, and ``redrive`` finds it. On AWS the execution's
status is the run's lock: a folder whose execution runs is attached to, never
started twice.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from typing import Any

import boto3

from ddbnb.control.deploy import stack_differences, stack_outputs
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
from ddbnb.exceptions import DdbnbError, StaleStackError, command
from ddbnb.insight.results import result_entries, summarize
from ddbnb.plan import Plan
from ddbnb.runfolder import FAILURES, JOURNAL, RunFolder, utc_now
from ddbnb.worker import journal, params
from ddbnb.worker.clients import clear_errors, client
from ddbnb.worker.prewarm import targets_for

_FAILED = ("FAILED", "TIMED_OUT", "ABORTED")


def execution_name(run_name: str) -> str:
    """A Step Functions execution name for a run: unique per start, at most 80 allowed characters."""
    safe = re.sub(r"[^A-Za-z0-9_-]", "-", run_name)[:71]
    return f"{safe}-{uuid.uuid4().hex[:8]}"


def check_new_execution(plan: Plan, folder: RunFolder, boto3_session: boto3.Session | None) -> None:
    """Refuse a second execution in a folder whose earlier one left a journal: a rollback undoes one journal."""
    location = folder.journal_location()
    if plan.journal and location.startswith("s3://") and journal.totals(location, boto3_session)["objects"]:
        raise DdbnbError(
            f"{folder} holds the journal of an earlier execution ({location}), which ddbnb.rollback(run_dir) "
            "undoes. A new execution would keep its own journal, so the rollback of one would leave the other: "
            "use a new run_dir (and run 02 there).",
            run_dir=str(folder),
            journal=location,
        )


def run_aws(
    plan: Plan,
    folder: RunFolder,
    progress: bool,
    boto3_session: boto3.Session | None,
    allow_stale_stack: bool = False,
    tolerated: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Start the run, or attach to the one this run folder already started; wait; fetch the results.

    Returns what summary.json adds for the aws engine: the execution, what
    pre-warm raised and restored, and where failed segments stopped.
    """
    outputs = stack_outputs(plan.stack_name, boto3_session)
    previous = folder.summary()
    arn, name = previous.get("execution_arn"), previous.get("execution_name") or folder.path.name
    status = describe_status(arn, boto3_session) if arn and previous.get("status") == "RUNNING" else None
    if status in _FAILED:
        raise DdbnbError(
            f"{folder} holds execution {arn}, which ended {status}. Run ddbnb.redrive(run_dir) to run its "
            "failed segments again, or use a new run_dir to start another run.",
            execution_arn=arn,
            status=status,
        )
    if status in ("RUNNING", "PENDING_REDRIVE", "SUCCEEDED"):
        print(f"attaching to {arn} ({status}), which this run folder started; no new execution")
    else:
        check_new_execution(plan, folder, boto3_session)
        differences = stack_differences(outputs, plan.transform, plan.table.name, plan.destination)
        if differences and not allow_stale_stack:
            raise StaleStackError(plan.stack_name, differences)
        if differences:
            print(f"allow_stale_stack=True: running the deployed code although {'; '.join(differences)}")
        name = execution_name(folder.path.name)
        prefix = f"s3://{outputs['ResultsBucketName']}/runs/{name}"
        settings: dict[str, Any] = {"failures_to": f"{prefix}/{FAILURES}"}
        if plan.journal:
            settings["journal"] = {"to": f"{prefix}/{JOURNAL}"}
            folder.update_plan(journal_to=settings["journal"]["to"])  # before the first write
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
    # Recorded now, so that running 03 again attaches to it and ddbnb.redrive(run_dir) finds it.
    folder.mark(
        "RUNNING",
        execution_arn=arn,
        execution_name=name,
        total_segments=plan.total_segments,
        stack_name=plan.stack_name,
        table=plan.table.name,
    )
    bucket = outputs["ResultsBucketName"]
    described = wait_run(arn, plan.total_segments, bucket=bucket, progress=progress, boto3_session=boto3_session)
    collected = collect(outputs, described, name, folder, boto3_session)
    return {"execution_arn": arn, "execution_name": name, **collected}


def collect(
    outputs: dict[str, str],
    described: dict[str, Any],
    name: str,
    folder: RunFolder,
    boto3_session: boto3.Session | None,
) -> dict[str, Any]:
    """Fetch an ended execution's results and failure logs; restore capacity after a failure; report both."""
    arn = described["executionArn"]
    fetch_results(outputs, arn, folder.path, boto3_session)
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
        capacity = {"restore": restore_raised(arn, outputs["ResultsBucketName"], boto3_session)}
    return {"execution_status": described["status"], "capacity": capacity, "failed_segments_at": stopped_at}


def failed_segment_positions(folder: RunFolder, boto3_session: boto3.Session | None = None) -> list[dict[str, Any]]:
    """Each failed segment of the aws run in ``folder``: the items it had scanned and the cursor it stopped at."""
    positions = []
    for entry in result_entries(folder.path):
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
def stop_execution(folder: RunFolder, boto3_session: boto3.Session | None = None) -> dict[str, Any]:
    """Stop the execution the aws run in ``folder`` started, and put back what its pre-warm raised.

    The run can then be redriven (``ddbnb.redrive(run_dir)``): each failed or
    stopped segment goes on from its last cursor.
    """
    summary = folder.summary()
    arn = summary.get("execution_arn")
    if not arn:
        raise DdbnbError(f"{folder} holds no aws-engine execution to stop (summary.json has no execution_arn).")
    outputs = _outputs(folder, summary, boto3_session)
    client("stepfunctions", boto3_session).stop_execution(executionArn=arn, cause="stopped with ddbnb stop")
    print(f"stopped {arn}; {command('redrive', folder)} goes on from where its segments stopped")
    report = restore_raised(arn, outputs["ResultsBucketName"], boto3_session)
    folder.set_status("ABORTED")
    return report


def _outputs(folder: RunFolder, summary: dict[str, Any], boto3_session: boto3.Session | None) -> dict[str, str]:
    """The outputs of the stack the aws run in ``folder`` ran on."""
    return stack_outputs(summary.get("stack_name") or folder.plan().get("stack_name", ""), boto3_session)


@clear_errors
def redrive(run_dir: str, *, progress: bool = True, boto3_session: boto3.Session | None = None) -> dict[str, Any]:
    """Redrive the failed aws-engine run in ``run_dir``: only its failed segments run again.

    Each failed segment goes on from the cursor it stopped at, and each of its
    invocations paces to the tables' capacity as it is then (pre-warm was put
    back when the execution failed). When the execution ends, its results are
    fetched again and ``summary.json`` is rewritten, so 04_results shows the
    final state; the summary is returned (RunIncompleteError when segments or
    items still failed).
    """
    params.check_bool("progress", progress)
    folder = RunFolder(run_dir)
    summary = folder.summary()
    arn = summary.get("execution_arn")
    if not arn:
        raise DdbnbError(f"{run_dir} holds no aws-engine run (summary.json has no execution_arn).")
    with folder.lock("redrive"):
        outputs = _outputs(folder, summary, boto3_session)
        status = describe_status(arn, boto3_session)
        if status not in _FAILED:
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
        folder.write_summary(summary)
        described = wait_run(
            arn,
            int(summary["total_segments"]),
            bucket=outputs["ResultsBucketName"],
            progress=progress,
            boto3_session=boto3_session,
        )
        collected = collect(outputs, described, summary["execution_name"], folder, boto3_session)
        elapsed = float(summary.get("elapsed_s", 0)) + time.monotonic() - started  # the first attempt's time too
        totals = summarize(folder.path, elapsed, int(summary["total_segments"]))
        summary.update(totals, **collected, redrives=[*summary.get("redrives", []), {"at": utc_now()}])
        return folder.conclude(
            summary,
            f"{summary['status']} after redrive: failed {summary['failed']:,} item(s), "
            f"{summary['failed_segments']} segment(s)",
        )
