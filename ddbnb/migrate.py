"""Run a planned migration and leave its results in a run folder."""

from __future__ import annotations

import json
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import boto3

from ddbnb.clients import client
from ddbnb.engine_local import INVOCATION_SECONDS, run_local
from ddbnb.evaluate import FAILED, evaluate
from ddbnb.exceptions import RunIncompleteError, TransformRejectedError
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
    invocation_seconds: float = INVOCATION_SECONDS,
    progress: bool = True,
    boto3_session: boto3.Session | None = None,
) -> dict[str, Any] | None:
    """Run ``plan`` when ``execute`` is True; otherwise print it and return None.

    Results go to ``run_dir`` ("" means :func:`default_run_dir`) in the Step
    Functions ResultWriter layout, plus ``summary.json``; the summary dict is
    returned. Raises RunIncompleteError, after writing the results, when any
    item or segment failed.
    """
    print(plan)
    if not execute:
        print("\nexecute=False: nothing was run. Set execute=True to migrate.")
        return None
    folder = Path(run_dir) if run_dir else default_run_dir(plan.table.name)
    folder.mkdir(parents=True, exist_ok=True)
    checked = preflight(plan, boto3_session)
    print(f"pre-flight: the transform ran cleanly on {checked} sampled item(s)")
    session_args = {}
    if boto3_session is not None:
        session_args = {"profile_name": boto3_session.profile_name, "region_name": boto3_session.region_name}
    started = time.monotonic()
    started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    outcomes = run_local(
        plan.events(),
        max_concurrency=plan.max_concurrency,
        expected_items=plan.table.item_count,
        invocation_seconds=invocation_seconds,
        session_args=session_args,
        progress=progress,
    )
    summary = summarize(outcomes, time.monotonic() - started)
    summary.update(
        table=plan.table.name,
        destination=plan.destination,
        transform=plan.transform,
        engine=plan.engine,
        total_segments=plan.total_segments,
        max_concurrency=plan.max_concurrency,
        started_at=started_at,
        run_dir=str(folder),
    )
    write_results(folder, outcomes, run_name=folder.name, engine=plan.engine)
    (folder / "summary.json").write_text(json.dumps(summary, indent=1))
    print(
        f"{summary['status']}: scanned {summary['scanned']:,}, written {summary['written']:,}, "
        f"unchanged {summary['unchanged']:,}, deleted {summary['deleted']:,}, failed {summary['failed']:,} "
        f"in {summary['elapsed_s']:.1f} s ({summary['items_per_s']:,.0f} items/s). Results: {folder}"
    )
    if summary["status"] != "SUCCEEDED":
        raise RunIncompleteError(str(folder), summary["failed"], summary["failed_segments"])
    return summary
