"""Dry run: apply the transform to a sample in memory and show what would change."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3

from ddbnb import params
from ddbnb.clients import client
from ddbnb.diff import diff_items
from ddbnb.evaluate import DELETE, FAILED, PUT, UNCHANGED, evaluate
from ddbnb.items import format_key, matches
from ddbnb.sample import sample_items
from ddbnb.tables import describe_table
from ddbnb.transforms import load_transform

if TYPE_CHECKING:
    import pandas as pd


def _show(value: Any) -> str:
    text = repr(value) if not isinstance(value, str) else value
    return text if len(text) <= 120 else text[:117] + "..."


@dataclass
class DryRun:
    """What a transform would do to a sample of a table. Nothing was written."""

    table: str
    transform: str
    counts: dict[str, int]
    changes: list[dict[str, Any]] = field(default_factory=list)
    findings: list[dict[str, Any]] = field(default_factory=list)

    @property
    def sampled(self) -> int:
        """Items in the sample."""
        return sum(self.counts.values())

    def diffs(self) -> pd.DataFrame:
        """One row per changed attribute: key, path, change, before, after."""
        import pandas as pd

        return pd.DataFrame(self.changes, columns=["key", "path", "change", "before", "after"])

    def summary(self) -> pd.DataFrame:
        """Counts of changes per attribute path and kind of change."""
        frame = self.diffs()
        if frame.empty:
            return frame
        return frame.groupby(["path", "change"]).size().rename("items").reset_index()

    def __str__(self) -> str:
        shares = (
            ", ".join(f"{name} {count} ({count / self.sampled:.0%})" for name, count in self.counts.items() if count)
            if self.sampled
            else "the table is empty"
        )
        lines = [f"Dry run of {self.transform} on {self.sampled} sampled item(s) of {self.table!r}: {shares}"]
        lines += [f"  ! {f['rule']} {json.dumps(f['key'])}: {f['message']}" for f in self.findings[:20]]
        if len(self.findings) > 20:
            lines.append(f"  ... and {len(self.findings) - 20} more findings in dry_run.json")
        lines.append("Nothing was written to the table.")
        return "\n".join(lines)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(str(self))

    def save(self, run_dir: str | Path) -> Path:
        """Write dry_run.json, diffs.csv and diffs.json into ``run_dir``."""
        folder = Path(run_dir)
        folder.mkdir(parents=True, exist_ok=True)
        report = {"table": self.table, "transform": self.transform, "counts": self.counts, "findings": self.findings}
        (folder / "dry_run.json").write_text(json.dumps(report, indent=1, default=str))
        frame = self.diffs()
        frame.to_csv(folder / "diffs.csv", index=False)
        frame.to_json(folder / "diffs.json", orient="records", indent=1, default_handler=str)
        return folder / "dry_run.json"


def dry_run(
    table_name: str,
    transform: str,
    sample_size: int = 100,
    *,
    run_dir: str | Path = "",
    seed: int = 0,
    destination_table_name: str | None = None,
    boto3_session: boto3.Session | None = None,
) -> DryRun:
    """Sample ``table_name``, apply ``transform`` in memory and report the differences.

    Nothing is written to any table. When ``run_dir`` is given, the report is
    saved there (dry_run.json, diffs.csv, diffs.json).
    """
    params.check_int("sample_size", sample_size, 1, 1_000_000)
    func = load_transform(transform)
    facts = describe_table(table_name, boto3_session)
    dynamodb = client("dynamodb", boto3_session)
    items = sample_items(
        dynamodb, table_name, sample_size, item_count=facts.item_count, key_names=facts.key_names, seed=seed
    )
    counts: Counter[str] = Counter({"changed": 0, "unchanged": 0, "deleted": 0, "failed": 0})
    report = DryRun(table_name, transform, {})
    for raw in items:
        verdict = evaluate(func, raw, facts.key_names, in_place=not destination_table_name)
        key = format_key({name: verdict.before[name] for name in facts.key_names})
        if verdict.action == FAILED:
            counts["failed"] += 1
            report.findings.append({"key": key, "rule": verdict.rule, "message": verdict.message})
        elif verdict.action == DELETE:
            counts["deleted"] += 1
            report.changes.append({"key": json.dumps(key), "path": "*", "change": "deleted", "before": "", "after": ""})
        elif verdict.action == UNCHANGED or (verdict.action == PUT and matches(verdict.after, verdict.raw)):
            counts["unchanged"] += 1
        else:
            counts["changed"] += 1
            for change in diff_items(verdict.before, verdict.after):
                report.changes.append(
                    {
                        "key": json.dumps(key),
                        "path": change.path,
                        "change": change.change,
                        "before": _show(change.before),
                        "after": _show(change.after),
                    }
                )
    report.counts = dict(counts)
    if run_dir:
        report.save(run_dir)
    return report
