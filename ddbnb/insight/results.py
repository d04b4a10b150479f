"""Read a run folder back: per-segment results, failures, totals and status.

Both engines leave the Step Functions ResultWriter layout in the run folder
(see :mod:`ddbnb.engines.resultwriter`): ``manifest.json``, ``SUCCEEDED_0.json``
and, when a segment failed, ``FAILED_0.json``, whose entries hold ``Input`` and
``Output`` as JSON strings, as AWS writes them. ``summary.json`` holds the run
totals.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from ddbnb.exceptions import DdbnbError
from ddbnb.worker.writes import merge_counts

if TYPE_CHECKING:
    import pandas as pd

COUNTERS = ("scanned", "written", "unchanged", "deleted", "failed", "conflicts", "throttled")
#: What each entry of a segment's page timeline holds (see ddbnb.worker.segment.TIMELINE).
TIMELINE = ("began", "ended", "scanned", "written", "unchanged", "deleted", "failed", "write_units", "throttled")


def result_entries(run_dir: str | Path) -> list[dict[str, Any]]:
    """The ResultWriter entries of a run folder, one per segment.

    A redriven Map Run reports a segment again: its success wins over an
    earlier failure, and otherwise its latest entry does.
    """
    best: dict[int, dict[str, Any]] = {}
    for entry in _read_entries(Path(run_dir)):
        segment = int(json.loads(entry["Input"])["segment"])
        seen = best.get(segment)
        if seen is None or _rank(entry) >= _rank(seen):
            best[segment] = entry
    return [best[segment] for segment in sorted(best)]


def _rank(entry: dict[str, Any]) -> tuple[bool, str]:
    return entry.get("Status") == "SUCCEEDED", str(entry.get("StopDate") or "")


def _read_entries(run_dir: Path) -> list[dict[str, Any]]:
    manifest_path = run_dir / "manifest.json"
    if not manifest_path.is_file():
        raise DdbnbError(
            f"No results in {run_dir}: manifest.json is missing. Set run_dir to the "
            "folder 03_migrate wrote (it prints it when the run ends)."
        )
    manifest = json.loads(manifest_path.read_text())
    entries: list[dict[str, Any]] = []
    for status in ("SUCCEEDED", "FAILED", "PENDING"):
        for result_file in manifest.get("ResultFiles", {}).get(status, []):
            path = run_dir / PurePosixPath(result_file["Key"]).name
            if not path.is_file():
                raise DdbnbError(f"{path} is listed in manifest.json but missing from {run_dir}.")
            entries.extend(json.loads(path.read_text()))
    return entries


def load_results(run_dir: str | Path) -> pd.DataFrame:
    """Load a run folder into a DataFrame with one row per segment.

    Columns: segment, status, the counters, read/write units, pages,
    invocations, started_at, finished_at, duration_s, items_per_s, error,
    key_range (True for a hot key's sort-key range, run as a segment of its
    own; these sort after the scan segments), and timeline (each page's
    start, end and counts, as the worker recorded them).
    """
    import pandas as pd

    rows = []
    for entry in result_entries(run_dir):
        event = json.loads(entry["Input"])
        row: dict[str, Any] = {"segment": int(event["segment"]), "status": entry["Status"]}
        row["key_range"] = bool(event.get("key_range"))
        output = json.loads(entry["Output"]) if entry.get("Output") else {}
        for name in (*COUNTERS, "read_units", "write_units", "pages", "invocations"):
            row[name] = output.get(name, 0)
        row["started_at"] = output.get("started_at") or entry.get("StartDate")
        row["finished_at"] = output.get("finished_at") or entry.get("StopDate")
        row["error"] = f"{entry.get('Error', '')}: {entry.get('Cause', '')}" if "Error" in entry else ""
        row["timeline"] = output.get("timeline") or []
        rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    frame["started_at"] = pd.to_datetime(frame["started_at"], utc=True, format="ISO8601")
    frame["finished_at"] = pd.to_datetime(frame["finished_at"], utc=True, format="ISO8601")
    frame["duration_s"] = (frame["finished_at"] - frame["started_at"]).dt.total_seconds()
    frame["items_per_s"] = frame["scanned"] / frame["duration_s"].where(frame["duration_s"] > 0)
    return frame.sort_values("segment").reset_index(drop=True)


def slowest_first(results: pd.DataFrame) -> pd.DataFrame:
    """The segments in the order an operator looks at them: failed first, then by items/s, slowest first."""
    ranked = results.assign(_ok=results["status"] == "SUCCEEDED", _rate=results["items_per_s"].fillna(0))
    return ranked.sort_values(["_ok", "_rate"]).drop(columns=["_ok", "_rate"])


def results_table(results: pd.DataFrame, rows: int = 200) -> Any:
    """The per-segment results as a styled table, slowest first (failed segments on top).

    Numbers are formatted, items/s carries a bar and failed rows are red. Runs
    with more than ``rows`` segments show the slowest ``rows``; the caption says
    how many are left out (``results.sort_values(...)`` shows any order).
    """
    shown = slowest_first(results).head(rows)
    caption = f"{len(shown):,} of {len(results):,} segments, slowest first"
    counters = [c for c in (*COUNTERS, "read_units", "write_units", "pages", "invocations") if c in shown]
    return (
        shown.style.hide(axis="index")
        .format({**{c: "{:,.0f}" for c in counters}, "items_per_s": "{:,.0f}", "duration_s": "{:,.1f}"}, na_rep="")
        .bar(subset=["items_per_s"], color="#9ecae1")
        .apply(lambda row: ["color: #b30000" if row["status"] != "SUCCEEDED" else "" for _ in row], axis=1)
        .set_caption(caption)
    )


def page_timeline(results: pd.DataFrame) -> pd.DataFrame:
    """Every page of a run, one row each: when it began and ended (UTC) and what it did (empty for
    results without timelines: older runs, rollbacks)."""
    import pandas as pd

    rows = [
        {"segment": segment, **dict(zip(TIMELINE, entry, strict=False))}
        for segment, timeline in zip(results["segment"], results.get("timeline", []), strict=False)
        for entry in (timeline or [])
    ]
    frame = pd.DataFrame(rows, columns=["segment", *TIMELINE])
    for column in ("began", "ended"):
        frame[column] = pd.to_datetime(frame[column], unit="s", utc=True)
    return frame


def load_failures(run_dir: str | Path) -> pd.DataFrame:
    """Every failed item of a run: segment, key (JSON) and error, one row per item.

    Read from the run's failure log (``run_dir/failures/segment-<n>.jsonl``, which
    holds every failure), or, for runs without one, from the lists in the
    results (at most 100 per segment).
    """
    return _load_log(run_dir, "failures", "failures", "error")


def load_conflicts(run_dir: str | Path) -> pd.DataFrame:
    """Every item a rollback left alone because someone changed it: segment, key (JSON) and what changed.

    ``run_dir`` is the rollback's folder (``ddbnb.rollback`` prints it).
    """
    return _load_log(run_dir, "conflicts", "conflicted", "conflict")


def _load_log(run_dir: str | Path, log: str, listed: str, column: str) -> pd.DataFrame:
    """A per-item log of a run folder (``<log>/segment-<n>.jsonl``), else the bounded lists in its results."""
    import pandas as pd

    folder = Path(run_dir)
    logs = sorted((folder / log).glob("segment-*.jsonl"))
    rows: list[dict[str, Any]] = []
    if logs:
        for path in logs:
            for line in path.read_text().splitlines():
                if line.strip():
                    record = json.loads(line)
                    key = json.dumps(record["key"])
                    rows.append({"segment": record["segment"], "key": key, column: record["error"]})
    else:
        for entry in result_entries(folder):
            output = json.loads(entry["Output"]) if entry.get("Output") else {}
            for failure in output.get(listed, []):
                key = json.dumps(failure["key"])
                rows.append({"segment": output["segment"], "key": key, column: failure["error"]})
    frame = pd.DataFrame(rows, columns=["segment", "key", column])
    # A call that died is run again from its cursor, so an item can be logged twice.
    return frame.drop_duplicates(subset=["segment", "key"], keep="last").reset_index(drop=True)


def summarize(
    run_dir: str | Path, elapsed_s: float, expected_segments: int, counters: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Total the counters (and ``counters``) in a run folder's result files (either engine).

    Segments missing from the files (the engine never reported them) count as
    failed, so a run can only be SUCCEEDED when every segment and item was.
    """
    entries = result_entries(run_dir)
    names = (*COUNTERS, *counters)
    totals: dict[str, Any] = {name: 0 for name in names}
    succeeded = 0
    ranges: set[int] = set()  # key-range units: those the segments cut, and those that ran
    reasons: dict[str, int] = {}  # throttles by DynamoDB's reason
    for entry in entries:
        output = json.loads(entry["Output"]) if entry.get("Output") else {}
        for name in names:
            totals[name] += int(output.get(name, 0))
        succeeded += entry["Status"] == "SUCCEEDED"
        ranges |= {int(split["segment"]) for split in output.get("splits") or ()}
        merge_counts(reasons, output.get("throttle_reasons") or {})
        unit = json.loads(entry["Input"])
        if unit.get("key_range"):
            ranges.add(int(unit["segment"]))
    totals["segments"] = expected_segments + len(ranges)
    totals["key_range_units"] = len(ranges)
    totals["throttle_reasons"] = reasons
    totals["failed_segments"] = totals["segments"] - succeeded
    totals["elapsed_s"] = round(elapsed_s, 3)
    totals["items_per_s"] = round(totals["scanned"] / elapsed_s, 1) if elapsed_s > 0 else 0.0
    ok = totals["failed"] == 0 and totals["failed_segments"] == 0
    totals["status"] = "SUCCEEDED" if ok else "INCOMPLETE"
    return totals
