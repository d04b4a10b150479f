"""The Step Functions ResultWriter layout, which both engines leave in the run folder.

``manifest.json``, ``SUCCEEDED_0.json`` and, when a segment failed,
``FAILED_0.json``. Each entry is a child execution whose ``Input`` and
``Output`` are JSON strings, as AWS writes them. The aws engine copies the real
files from the results bucket; the local engine writes them here, from the
outcome of each segment. :mod:`ddbnb.insight.results` reads them back.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class ChildOutcome:
    """One segment's run, shaped like a Distributed Map child execution."""

    event: dict[str, Any]
    status: str
    started_at: str
    stopped_at: str
    output: dict[str, Any] | None = None
    error: str = ""
    cause: str = ""


def _entry(outcome: ChildOutcome, state_machine_arn: str, run_name: str) -> dict[str, Any]:
    name = f"{run_name}-segment-{outcome.event['segment']}"
    entry: dict[str, Any] = {
        "ExecutionArn": f"{state_machine_arn.replace(':stateMachine:', ':execution:')}/{run_name}:{name}",
        "Input": json.dumps(outcome.event),
        "InputDetails": {"Included": True},
        "Name": name,
        "RedriveCount": 0,
        "StartDate": outcome.started_at,
        "StateMachineArn": state_machine_arn,
        "Status": outcome.status,
        "StopDate": outcome.stopped_at,
    }
    if outcome.status == "SUCCEEDED":
        entry["Output"] = json.dumps(outcome.output)
        entry["OutputDetails"] = {"Included": True}
        entry["RedriveStatus"] = "NOT_REDRIVABLE"
        entry["RedriveStatusReason"] = "Execution is SUCCEEDED and cannot be redriven"
    else:
        entry["Error"] = outcome.error
        entry["Cause"] = outcome.cause
        entry["RedriveStatus"] = "REDRIVABLE"
    return entry


def write_results(
    run_dir: str | Path, outcomes: Iterable[ChildOutcome], *, run_name: str, engine: str = "local"
) -> Path:
    """Write the ResultWriter files for ``outcomes`` into ``run_dir``; return the manifest path."""
    folder = Path(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    state_machine = f"arn:aws:states:{engine}:000000000000:stateMachine:ddbnb-{engine}"
    files: dict[str, list[dict[str, Any]]] = {"FAILED": [], "PENDING": [], "SUCCEEDED": []}
    by_status: dict[str, list[dict[str, Any]]] = {"FAILED": [], "SUCCEEDED": []}
    for outcome in outcomes:
        by_status["SUCCEEDED" if outcome.status == "SUCCEEDED" else "FAILED"].append(
            _entry(outcome, state_machine, run_name)
        )
    for status, entries in by_status.items():
        if entries or status == "SUCCEEDED":
            path = folder / f"{status}_0.json"
            path.write_text(json.dumps(entries, indent=1))
            files[status].append({"Key": f"{run_name}/{path.name}", "Size": path.stat().st_size})
    manifest = {
        "DestinationBucket": f"{engine}:{folder.resolve()}",
        "MapRunArn": f"arn:aws:states:{engine}:000000000000:mapRun:ddbnb-{engine}/Map:{run_name}",
        "ResultFiles": files,
    }
    path = folder / "manifest.json"
    path.write_text(json.dumps(manifest, indent=1))
    return path
