"""Retry exactly the items a run failed on: read them again by key, transform and write them.

A retry passes the same gate as a migration (a dry run of the same code in the
run folder, and the pre-flight check), keeps the run's capacity limits, journals
into the run's journal (so a rollback undoes it too), and adds its outcome to
the run folder's summary.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import boto3

from ddbnb.engines.resultwriter import ChildOutcome, write_results
from ddbnb.exceptions import DdbnbError, command
from ddbnb.gate import check_dry_run, preflight
from ddbnb.insight.results import summarize
from ddbnb.migrate import plan_from_record
from ddbnb.runfolder import FAILURES, MISSING, RunFolder, utc_now, utc_stamp
from ddbnb.worker import params
from ddbnb.worker.clients import clear_errors
from ddbnb.worker.items import key_to_wire
from ddbnb.worker.segment import now, process_keys


def failed_keys(folder: RunFolder, key_schema: dict[str, str]) -> dict[int, dict[str, dict[str, Any]]]:
    """The run's failed keys in wire format, by segment (each once).

    Logs record each key as DynamoDB spells it (``wire``), so a number keeps
    all its digits; logs of an older ddbnb only have the plain key, which is
    turned back by the table's key types.
    """
    by_segment: dict[int, dict[str, dict[str, Any]]] = {}
    for path in sorted((folder / FAILURES).glob("segment-*.jsonl")):
        for line in path.read_text().splitlines():
            if not line.strip():
                continue
            record = json.loads(line)
            wire = record.get("wire") or key_to_wire(record["key"], key_schema)
            by_segment.setdefault(int(record["segment"]), {})[json.dumps(wire, sort_keys=True)] = wire
    return by_segment


@clear_errors
def retry_failed(
    run_dir: str | Path,
    *,
    require_dry_run: bool = True,
    max_failed_share: float = 0.0,
    progress: bool = True,
    boto3_session: boto3.Session | None = None,
) -> dict[str, Any]:
    """Read exactly the failed items of the run in ``run_dir`` again, transform and write them.

    Uses the run's recorded plan: its tables, transform (as its file is now: fix
    it first), write mode, version attribute and capacity limits. As for a
    migration, ``run_dir`` must hold a dry run of the transform's code as it is
    now (``require_dry_run``: run 02 again after a fix), and the pre-flight check
    runs first. A key whose item no longer exists is reported as ``missing``
    (``run_dir/retry-<stamp>/missing/``), never skipped. Results go to
    ``run_dir/retry-<UTC timestamp>/`` in the same layout; the run folder's
    summary.json records the retry. Returns the retry's summary;
    RunIncompleteError when items still fail.
    """
    params.check_bool("progress", progress)
    params.check_bool("require_dry_run", require_dry_run)
    params.check_share("max_failed_share", max_failed_share)
    folder = RunFolder(run_dir)
    recorded = folder.plan()
    if not recorded or not folder.summary():
        raise DdbnbError(
            f"{folder} holds no finished run (plan.json or summary.json is missing). Pass a run_dir 03 wrote."
        )
    with folder.lock("retry"):
        plan = plan_from_record(recorded, boto3_session)
        if require_dry_run:
            check_dry_run(plan, str(folder))
        print(preflight(plan, max_failed_share, boto3_session))
        by_segment = failed_keys(folder, plan.table.key_schema)
        keys = sum(len(found) for found in by_segment.values())
        target = RunFolder(folder / f"retry-{utc_stamp()}")
        base: dict[str, Any] = {
            "table": plan.table.name,
            "destination": plan.destination,
            "total_segments": plan.total_segments,
            "transform": plan.transform,
            "write_mode": plan.write_mode,
            "version_attribute": plan.version_attribute,
            "rate_limit": plan.rate_limit,
            "read_units_per_s": plan.read_units_per_s,  # one process: the run's whole budget
            "write_units_per_s": plan.write_units_per_s,
            "failures_to": str(target / FAILURES),
            "missing_to": str(target / MISSING),
        }
        location = folder.journal_location()
        if location:  # the run's own journal, in each key's segment: a rollback of the run undoes the retry too
            base["journal"] = {"to": location}
        print(f"retrying {keys:,} failed item(s) of {folder} ...")
        started = time.monotonic()
        outcomes = []
        for segment, found in sorted(by_segment.items()):
            event = {**base, "segment": segment}
            started_at = now()
            result = process_keys(event, list(found.values()), boto3_session=boto3_session)
            outcomes.append(ChildOutcome(event, "SUCCEEDED", started_at, result["finished_at"], output=result))
        write_results(target.path, outcomes, run_name=target.path.name, engine="local")
        summary = summarize(target.path, time.monotonic() - started, len(outcomes), ("missing",))
        summary.update(retry_of=str(folder), keys=keys, run_dir=str(target), transform=plan.transform)
        run = folder.summary()
        fixed = summary["status"] == "SUCCEEDED" and not run.get("failed_segments")
        folder.add_history(
            "retries",
            {
                "at": utc_now(),
                "run_dir": target.path.name,
                **{k: summary[k] for k in ("keys", "written", "unchanged", "deleted", "failed", "missing", "status")},
            },
            status="SUCCEEDED" if fixed else run.get("status"),
        )
        missing = (
            f"; {summary['missing']:,} key(s) no longer exist (listed in {target / MISSING})"
            if summary["missing"]
            else ""
        )
        return target.conclude(
            summary,
            f"{summary['status']}: {keys:,} key(s), written {summary['written']:,}, unchanged "
            f"{summary['unchanged']:,}, deleted {summary['deleted']:,}, failed {summary['failed']:,}{missing}. "
            f"Results: {target}"
            + ("" if summary["status"] == "SUCCEEDED" else f". Fix the cause and {command('retry-failed', folder)}"),
        )
