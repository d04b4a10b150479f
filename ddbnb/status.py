"""The whole story of a run folder, in a few lines: what was previewed, planned, run, retried, rolled back, left.

A live local run is counted from its checkpoints; a live aws run from its
execution's Map Run. A stopped one says how to go on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import boto3

from ddbnb.engines.aws import map_counts
from ddbnb.exceptions import DdbnbError, command
from ddbnb.runfolder import ATTEMPTS, CHECKPOINTS, FAILURES, JOURNAL, UNFINISHED, VERIFY_KINDS, RunFolder
from ddbnb.worker import journal

#: What a plan without limits paces to.
_ALL = "all of the tables' capacity"
#: Counters a status line shows, in order.
SHOWN = ("scanned", "written", "unchanged", "deleted", "failed")


def _counts(totals: dict[str, Any]) -> str:
    return ", ".join(f"{name} {int(totals.get(name, 0)):,}" for name in SHOWN)


def _ranges(summary: dict[str, Any]) -> str:
    """How many of a finished run's segments were hot keys' ranges ("" when none)."""
    ranges = int(summary.get("key_range_units") or 0)
    return f" of {summary.get('segments', '?')} ({ranges:,} hot-key ranges)" if ranges else ""


def _plan_line(plan: dict[str, Any]) -> str:
    target = f"into {plan['destination']!r}" if plan.get("destination") else "in place"
    limits = [
        f"{name} {plan[name]:g}"
        for name in ("capacity_share", "max_read_units", "max_write_units", "rate_limit")
        if plan.get(name)
    ]
    segments = plan.get("total_segments", "?")
    return (
        f"plan: {plan.get('table')!r} {target} with {plan.get('transform')}; write mode {plan.get('write_mode')}"
        + (f" (version attribute {plan['version_attribute']!r})" if plan.get("version_attribute") else "")
        + f"; {plan.get('engine')} engine, {segments} segment{'s' if segments != 1 else ''}, "
        f"{plan.get('max_concurrency')} at a time; limits: {', '.join(limits) or _ALL}; "
        f"journal {'on' if plan.get('journal', True) else 'off'}"
    )


def _live_local(folder: RunFolder, summary: dict[str, Any]) -> list[str]:
    saved = folder.checkpoints()
    totals = {name: sum(int(c.get(name, 0)) for c in saved.values()) for name in SHOWN}
    done = sum(1 for c in saved.values() if c.get("cursor") is None)
    scan = int(summary.get("total_segments") or folder.plan().get("total_segments") or 0)
    ranges = len({int(split["segment"]) for c in saved.values() for split in c.get("splits") or ()})  # hot keys'
    lines = [
        f"  so far (checkpoints): {_counts(totals)}; segments {done:,} done, "
        f"{len(saved) - done:,} part done, {max(0, scan + ranges - len(saved)):,} not started"
        + (f" (of {scan + ranges:,}: {scan:,} scan segments and {ranges:,} hot-key ranges)" if ranges else "")
    ]
    held = folder.holder()
    if held is not None:
        lines.append(
            f"  live: {held.get('operation', 'run')} by pid {held.get('pid')} on {held.get('host')} since "
            f"{held.get('started_at')} ({command('stop', folder)} stops it, resumable)"
        )
    elif summary.get("status") in UNFINISHED:
        lines.append(f"  not live: nothing holds the folder; {command('resume', folder)} goes on from the checkpoints")
    return lines


def _live_aws(summary: dict[str, Any], boto3_session: boto3.Session | None) -> list[str]:
    try:
        counts = map_counts(summary["execution_arn"], boto3_session)
    except Exception as error:  # the status must show what it can, whatever the endpoint says
        return [f"  execution {summary['execution_arn']}: cannot read it now ({type(error).__name__}: {error})"]
    if not counts:
        return [f"  execution {summary['execution_arn']}: starting (no Map Run yet)"]
    shown = ", ".join(f"{name} {counts.get(name, 0):,}" for name in ("succeeded", "running", "pending", "failed"))
    return [f"  execution {summary['execution_arn']}: segments {shown} of {counts.get('total', 0):,}"]


def _history(summary: dict[str, Any]) -> list[str]:
    lines = []
    for retry in summary.get("retries", []):
        lines.append(
            f"retry {retry.get('at')} ({retry.get('run_dir')}): {retry.get('keys', 0):,} key(s), written "
            f"{retry.get('written', 0):,}, failed {retry.get('failed', 0):,}, missing {retry.get('missing', 0):,}: "
            f"{retry.get('status')}"
        )
    for undo in summary.get("rollbacks", []):
        lines.append(
            f"rollback {undo.get('at')} ({undo.get('run_dir')}): restored {undo.get('restored', 0):,}, re-created "
            f"{undo.get('recreated', 0):,}, deleted {undo.get('removed', 0):,}, already as before "
            f"{undo.get('unchanged', 0):,}, conflicts {undo.get('conflicts', 0):,}, failed {undo.get('failed', 0):,}: "
            f"{undo.get('status')}"
        )
    for follow in summary.get("follows", []):
        lines.append(
            f"follow {follow.get('finished_at')}: {follow.get('records', 0):,} stream records, written "
            f"{follow.get('written', 0):,}, deleted {follow.get('deleted', 0):,}, failed {follow.get('failed', 0):,}, "
            f"lag {follow.get('lag_s', 0):.1f} s: {follow.get('status')}"
        )
    for check in summary.get("verifies", []):
        found = ", ".join(f"{name.replace('_', ' ')} {check.get(name, 0):,}" for name in VERIFY_KINDS)
        sampled = " (a sample)" if check.get("sample") else ""
        verdict = "MATCHES" if check.get("matches") else "DIFFERS"
        lines.append(f"verify {check.get('at')}: {check.get('checked', 0):,} item(s){sampled}, {found}: {verdict}")
    return lines


def _files(folder: RunFolder, boto3_session: boto3.Session | None) -> list[str]:
    entries = []
    for path in sorted(folder.path.iterdir()):
        if path.name.startswith("."):
            continue
        if not path.is_dir():
            entries.append(path.name)
        elif path.name == JOURNAL:
            totals = journal.totals(str(path), boto3_session)
            entries.append(f"journal/ ({totals['objects']:,} objects, {totals['bytes'] / 1e6:,.1f} MB)")
        elif path.name == FAILURES:
            logged = sum(len(p.read_text().splitlines()) for p in path.glob("*.jsonl"))
            entries.append(f"failures/ ({logged:,} item(s) logged)")
        elif path.name in (CHECKPOINTS, ATTEMPTS):
            entries.append(f"{path.name}/ ({sum(1 for _ in path.iterdir()):,})")
        else:
            entries.append(f"{path.name}/")
    location = folder.journal_location()
    if location.startswith("s3://"):
        entries.append(f"journal in {location}")
    return entries


def run_status(run_dir: str | Path, boto3_session: boto3.Session | None = None) -> str:
    """A few lines on a run folder: its dry run, its plan, the run (live counts while it runs), its retries
    and rollbacks, the state it is in now, and every file and folder it left."""
    folder = RunFolder(run_dir)
    if not folder.path.is_dir():
        raise DdbnbError(f"{folder.path} is not a folder. Pass the run folder that the dry run and the migration used.")
    lines = [f"run folder {folder.path.resolve()}"]
    dry = folder.dry_run()
    if dry:
        lines.append(
            f"dry run: {dry.get('verdict', '?')} ({sum(dry.get('counts', {}).values())} items sampled, "
            f"{dry.get('transform')})"
        )
    else:
        lines.append("dry run: none (run 02_dry_run, or `ddbnb dry-run`, with this run folder)")
    plan = folder.plan()
    if plan:
        lines.append(_plan_line(plan))
    summary = folder.summary()
    status = summary.get("status")
    if not summary:
        lines.append("migration: not run (03_migrate with execute=True, or `ddbnb migrate --execute`)")
    elif "scanned" in summary and status not in UNFINISHED:
        first = summary.get("attempts", [{}])[-1] if summary.get("attempts") else summary
        lines.append(
            f"migration: {first.get('status', status)}: {_counts(summary)}, "
            f"{summary.get('failed_segments', 0)} failed segment(s){_ranges(summary)}, "
            f"{summary.get('items_per_s', 0):,.0f} items/s, "
            f"started {summary.get('started_at', '?')}"
        )
    else:
        lines.append(f"migration: {status}")
        lines += _live_aws(summary, boto3_session) if summary.get("execution_arn") else _live_local(folder, summary)
    lines += _history(summary)
    if summary and (summary.get("retries") or summary.get("rollbacks")):
        lines.append(f"now: {status}")
    if status == "INCOMPLETE":
        lines.append(f"next: fix the cause, then {command('retry-failed', folder)} (failures/ lists every item)")
    lines.append("files: " + (", ".join(_files(folder, boto3_session)) or "none"))
    return "\n".join(lines)
