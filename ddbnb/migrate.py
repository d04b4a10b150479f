"""Run a planned migration and leave its results in a run folder."""

from __future__ import annotations

import json
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import boto3

from ddbnb import params
from ddbnb.clients import client
from ddbnb.deploy import stack_outputs
from ddbnb.engine_aws import fetch_results, start_run, wait_run
from ddbnb.engine_aws import redrive as engine_redrive
from ddbnb.engine_local import INVOCATION_SECONDS, run_local
from ddbnb.evaluate import FAILED, evaluate
from ddbnb.exceptions import DdbnbError, RunIncompleteError, TransformRejectedError
from ddbnb.items import format_key
from ddbnb.plan import Plan
from ddbnb.results import summarize, write_results
from ddbnb.sample import sample_items
from ddbnb.transforms import load_transform

#: Items the pre-flight check runs the transform on before anything is written.
PREFLIGHT_ITEMS = 25


def default_run_dir(table_name: str) -> Path:
    """``$DDBNB_RUNS_DIR`` (default ``./runs``) / ``<table>-<UTC timestamp>``."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return Path(os.environ.get("DDBNB_RUNS_DIR", "runs")) / f"{table_name}-{stamp}"


def preflight(plan: Plan, boto3_session: boto3.Session | None = None) -> int:
    """Run the transform on a few sampled items; raise when every one of them fails.

    A transform that fails on every sampled item (raises, changes the key in
    place, returns a type DynamoDB rejects) is a bug, not bad data: stop before
    the first write. Returns the number of items checked.
    """
    dynamodb = client("dynamodb", boto3_session)
    items = sample_items(
        dynamodb, plan.table.name, PREFLIGHT_ITEMS, item_count=plan.table.item_count, key_names=plan.table.key_names
    )
    transform = load_transform(plan.transform)
    verdicts = [evaluate(transform, raw, plan.table.key_names, in_place=not plan.destination) for raw in items]
    failed = [v for v in verdicts if v.action == FAILED]
    if verdicts and len(failed) == len(verdicts):
        first = failed[0]
        key = format_key({name: first.before[name] for name in plan.table.key_names})
        raise TransformRejectedError(plan.transform, key, first.message)
    return len(items)


def migrate(
    plan: Plan,
    *,
    execute: bool = False,
    run_dir: str | Path = "",
    prewarm_write_units: int = 0,
    prewarm_read_units: int = 0,
    invocation_seconds: float = INVOCATION_SECONDS,
    progress: bool = True,
    boto3_session: boto3.Session | None = None,
) -> dict[str, Any] | None:
    """Run ``plan`` when ``execute`` is True; otherwise print it and return None.

    Results go to ``run_dir`` ("" means :func:`default_run_dir`) in the Step
    Functions ResultWriter layout, plus ``summary.json``; the summary dict is
    returned. Raises RunIncompleteError, after writing the results, when any
    item or segment failed. On the aws engine, ``prewarm_write_units`` (and
    ``prewarm_read_units``) above 0 raise or warm the table's capacity first;
    provisioned capacity is restored however the run ends.
    """
    print(plan)
    if not execute:
        print("\nexecute=False: nothing was run. Set execute=True to migrate.")
        return None
    params.check_int("prewarm_write_units", prewarm_write_units, 0)
    params.check_int("prewarm_read_units", prewarm_read_units, 0)
    folder = Path(run_dir) if run_dir else default_run_dir(plan.table.name)
    folder.mkdir(parents=True, exist_ok=True)
    checked = preflight(plan, boto3_session)
    print(f"pre-flight: the transform ran cleanly on {checked} sampled item(s)")
    started = time.monotonic()
    started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    extra: dict[str, Any] = {}
    if plan.engine == "aws":
        prewarm = (
            {"read_units": prewarm_read_units, "write_units": prewarm_write_units} if prewarm_write_units else None
        )
        extra["execution_arn"] = _run_aws(plan, folder, prewarm, progress, boto3_session)
    else:
        session_args = {}
        if boto3_session is not None:
            session_args = {"profile_name": boto3_session.profile_name, "region_name": boto3_session.region_name}
        outcomes = run_local(
            plan.events(),
            max_concurrency=plan.max_concurrency,
            expected_items=plan.table.item_count,
            invocation_seconds=invocation_seconds,
            session_args=session_args,
            progress=progress,
        )
        write_results(folder, outcomes, run_name=folder.name, engine=plan.engine)
    summary = summarize(folder, time.monotonic() - started, plan.total_segments)
    summary.update(
        table=plan.table.name,
        destination=plan.destination,
        transform=plan.transform,
        engine=plan.engine,
        total_segments=plan.total_segments,
        max_concurrency=plan.max_concurrency,
        started_at=started_at,
        run_dir=str(folder),
        **extra,
    )
    (folder / "summary.json").write_text(json.dumps(summary, indent=1))
    print(
        f"{summary['status']}: scanned {summary['scanned']:,}, written {summary['written']:,}, "
        f"unchanged {summary['unchanged']:,}, deleted {summary['deleted']:,}, failed {summary['failed']:,} "
        f"in {summary['elapsed_s']:.1f} s ({summary['items_per_s']:,.0f} items/s). Results: {folder}"
    )
    if summary["status"] != "SUCCEEDED":
        raise RunIncompleteError(str(folder), summary["failed"], summary["failed_segments"])
    return summary


def _run_aws(
    plan: Plan, folder: Path, prewarm: dict[str, int] | None, progress: bool, boto3_session: boto3.Session | None
) -> str:
    outputs = stack_outputs(plan.stack_name, boto3_session)
    arn = start_run(
        plan.events(),
        outputs,
        folder.name,
        max_concurrency=plan.max_concurrency,
        prewarm=prewarm,
        boto3_session=boto3_session,
    )
    print(f"started {arn}")
    # Written now, so ddbnb.redrive(run_dir) works whatever happens next.
    (folder / "summary.json").write_text(
        json.dumps({"execution_arn": arn, "total_segments": plan.total_segments, "status": "RUNNING"})
    )
    described = wait_run(arn, plan.total_segments, progress=progress, boto3_session=boto3_session)
    fetch_results(outputs, arn, folder, boto3_session)
    if described["status"] != "SUCCEEDED":
        print(
            f"execution {described['status']}: {described.get('cause', '')} — "
            f"ddbnb.redrive(run_dir) runs its failed segments again"
        )
    return arn


def redrive(run_dir: str | Path, *, progress: bool = True, boto3_session: boto3.Session | None = None) -> str:
    """Redrive the failed aws-engine run in ``run_dir``: only its failed segments run again."""
    summary = json.loads((Path(run_dir) / "summary.json").read_text())
    arn = summary.get("execution_arn")
    if not arn:
        raise DdbnbError(f"{run_dir} holds no aws-engine run (summary.json has no execution_arn).")
    engine_redrive(arn, boto3_session)
    wait_run(arn, int(summary["total_segments"]), progress=progress, boto3_session=boto3_session)
    return str(arn)
