"""Dry run: apply the transform to a sample in memory and show every consequence first.

Nothing is written. The report holds the before/after differences, a finding
for each item the run would fail or handle badly (with the item's key and the
fix), the plan the run would follow, an estimate of units, time and cost, and
a verdict.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3

from ddbnb.exceptions import UnsafeDryRunError, option
from ddbnb.insight.diff import diff_items
from ddbnb.insight.estimate import Estimate, estimate
from ddbnb.insight.sample import sample_items
from ddbnb.insight.skew import KeyCount, count_cap, count_keys, hot_keys, ordinary, units_of_work
from ddbnb.plan import MIN_HOT_ITEMS, Plan, choose_segments, plan_migration
from ddbnb.progress import count_of, format_duration
from ddbnb.worker import journal, params
from ddbnb.worker.clients import clear_errors, client
from ddbnb.worker.evaluate import DELETE, FAILED, MAX_ITEM_BYTES, PUT, UNCHANGED, Verdict, evaluate
from ddbnb.worker.items import deserialize, format_key, item_size, matches, write_units
from ddbnb.worker.streams import Stream, stream_problems
from ddbnb.worker.tables import point_in_time_recovery
from ddbnb.worker.transforms import Transform, load_transform, transform_digest

if TYPE_CHECKING:
    import pandas as pd
    from pandas.io.formats.style import Styler

#: Items this close to the 400 KB limit are flagged: a little growth and they fail.
NEAR_LIMIT_BYTES = int(MAX_ITEM_BYTES * 0.9)
#: Runs estimated longer than this leave the follower too little of the stream's 24 hours.
STREAM_RUN_S = 12 * 3600.0
#: Findings that make a run unsafe; the others are warnings. A transform that is not idempotent is applied
#: twice to the items of a page read again (after throttling, a resume, a redrive): unsafe unless allowed.
BLOCKING = ("raised", "key_changed", "too_large", "invalid_type", "missing_key", "key_collision", "not_idempotent")
FIXES = {
    "raised": "handle this item in the transform, or return it unchanged",
    "key_changed": "keep key attributes as they are, or pass destination_table_name to copy into a re-keyed table",
    "missing_key": "return every key attribute of the destination table, with the type its key schema declares",
    "key_collision": "two source items map to one destination key: make the destination key unique "
    "(write_mode='conditional' reports such items instead of letting the last one win)",
    "too_large": "make the item smaller: DynamoDB refuses items over 400 KB",
    "invalid_type": "return types DynamoDB stores (Decimal, not float; no empty sets)",
    "near_limit": "the item is within 10% of DynamoDB's 400 KB limit; later growth will fail",
    "not_idempotent": "running the transform on its own result changes it again (a timestamp from now()?): "
    "a page read again (after throttling, a resume or a redrive) applies it twice; make it idempotent, or pass "
    "{allow} if applying it twice is harmless",
    "batch_overwrites": "write_mode='batch' writes whole items: what the application writes to an item between "
    "the scan and the write is overwritten, and items it deletes come back; on a live table keep "
    "write_mode='conditional' (the default)",
    "deletes_without_version": "the transform deletes items: each delete is guarded by every attribute as read, "
    "and one that finds the item changed is put back and read again; if the application increments a version "
    "attribute on every write, set version_attribute to it and each delete is guarded by that alone",
    "stream_off": "a copy is stale at cutover, and items written in the old shape after the scan passed them stay "
    "so. {call}",
    "stream_retention": "DynamoDB keeps stream records 24 hours, and ddbnb.follow replays them from the run's "
    "start once the run ends: split the run (a destination per key range, or raise its limits) so that it ends well "
    "within a day",
    "hot_key": "{remedy}",
    "pitr_off": "turn it on before the run, so the whole table can be restored to any second before it: "
    "aws dynamodb update-continuous-backups --table-name {table} "
    "--point-in-time-recovery-specification PointInTimeRecoveryEnabled=true",
}
_COLORS = {
    "added": "#e6f4ea",
    "removed": "#fce8e6",
    "changed": "#fef7e0",
    "type_changed": "#f3e8fd",
    "deleted": "#fce8e6",
}


def _index_units(plan: Plan, before: dict[str, Any], after: dict[str, Any] | None, size: int) -> float:
    """The write units one sampled write costs the written table's GSIs: a put on each index that holds a
    changed attribute (a delete and a put when it is the index's key); a delete on each index that held a
    deleted item; for a copy, a put on each index whose keys the new item has."""
    target = plan.destination_table or plan.table
    units = 0.0
    for index in target.indexes:
        one = 1.0 if index.projection == "KEYS_ONLY" else float(write_units(size))
        if after is None:
            units += one if all(k in before for k in index.keys) else 0.0
        elif plan.destination:
            units += one if all(k in after for k in index.keys) else 0.0
        else:
            changed = {name for name in before.keys() | after.keys() if before.get(name) != after.get(name)}
            units += one * index.writes_for(changed)
    return units


def _show(value: Any) -> str:
    text = repr(value) if not isinstance(value, str) else value
    return text if len(text) <= 120 else text[:117] + "..."


@dataclass
class DryRun:
    """What a transform would do to a sample of a table. Nothing was written."""

    table: str
    transform: str
    counts: dict[str, int]
    plan: Plan
    estimate: Estimate
    items_read: int
    changes: list[dict[str, Any]] = field(default_factory=list)
    findings: list[dict[str, Any]] = field(default_factory=list)
    transform_sha256: str = ""
    destination: str | None = None
    run_dir: str = ""
    allow_non_idempotent: bool = False
    keys: list[dict[str, Any]] = field(default_factory=list)  # the partition keys counted (KeyCount.to_dict)
    key_items_read: int = 0  # items read (keys only) to count them

    @property
    def sampled(self) -> int:
        """Items in the sample."""
        return sum(self.counts.values())

    @property
    def safe(self) -> bool:
        """True when no sampled item would fail (nor be transformed twice, unless that is allowed)."""
        allowed = {"not_idempotent"} if self.allow_non_idempotent else set()
        return not any(f["rule"] in BLOCKING and f["rule"] not in allowed for f in self.findings)

    @property
    def verdict(self) -> str:
        """One line: safe to run or not, and the warnings."""
        by_rule = Counter(f["rule"] for f in self.findings)
        problems = ", ".join(f"{n} {rule}" for rule, n in by_rule.items())
        if not self.safe:
            return f"NOT SAFE to run: {problems} in the sample. Fix the transform, then dry-run again."
        if problems:
            return f"Safe to run, with warnings: {problems}."
        return "Safe to run: every sampled item was transformed cleanly."

    def check(self, fail_on_unsafe: bool = True) -> None:
        """Raise UnsafeDryRunError when the verdict is not safe (unless ``fail_on_unsafe`` is False).

        02_dry_run calls it last, after the report is shown and saved, so a
        scripted ``02 && 03`` stops on a NOT SAFE verdict.
        """
        if params.check_bool("fail_on_unsafe", fail_on_unsafe) and not self.safe:
            raise UnsafeDryRunError(self.verdict, self.run_dir)

    def diffs(self) -> pd.DataFrame:
        """One row per changed attribute: key, path, change, before, after."""
        import pandas as pd

        return pd.DataFrame(self.changes, columns=["key", "path", "change", "before", "after"])

    def styled(self, rows: int = 50) -> Styler:
        """The first ``rows`` differences, coloured by kind of change, for Lab."""
        frame = self.diffs().head(rows)
        return frame.style.apply(
            lambda row: [f"background-color: {_COLORS.get(row['change'], 'white')}"] * len(row), axis=1
        )

    def summary(self) -> pd.DataFrame:
        """Counts of changes per attribute path and kind of change."""
        frame = self.diffs()
        if frame.empty:
            return frame
        return frame.groupby(["path", "change"]).size().rename("items").reset_index()

    def hot_keys(self) -> list[KeyCount]:
        """The counted partition keys that would make their segment more than twice an ordinary one."""
        return _skew(self.plan, self._counts(), self.sampled)[0]

    def _counts(self) -> list[KeyCount]:
        return [KeyCount(**k) for k in self.keys]

    def segment_sizes(self) -> pd.DataFrame:
        """The estimated items of each unit of work, with each key in one segment and as planned (hot keys
        cut into ranges): one row per unit (unit, kind, items, unsplit_items). See plot_segment_sizes."""
        import pandas as pd

        counts = self._counts()
        items = _table_items(self.plan, counts, self.sampled)
        hot = hot_keys(counts, items, self.plan.total_segments, MIN_HOT_ITEMS)[0]
        rows = units_of_work(items, self.plan.total_segments, self.plan.hot_items, hot)
        return pd.DataFrame(rows, columns=["unit", "kind", "items", "unsplit_items"])

    def findings_frame(self) -> pd.DataFrame:
        """The findings as a DataFrame: key, rule, message."""
        import pandas as pd

        rows = [{**f, "key": json.dumps(f["key"])} for f in self.findings]
        return pd.DataFrame(rows, columns=["key", "rule", "message"])

    def __str__(self) -> str:
        shares = (
            ", ".join(f"{name} {n} ({n / self.sampled:.0%})" for name, n in self.counts.items() if n)
            if self.sampled
            else "the table is empty"
        )
        lines = [
            f"Dry run of {self.transform} on {self.sampled} sampled item(s) of {self.table!r} "
            f"({self.items_read} read{self.counting_note}): {shares}",
            *[f"  ! {f['rule']} {json.dumps(f['key'])}: {f['message']}" for f in self.findings[:20]],
        ]
        if self.keys:
            lines.append(self.keys_note)
        if len(self.findings) > 20:
            lines.append(f"  ... and {len(self.findings) - 20} more findings in dry_run.json")
        lines += [str(self.plan), str(self.estimate), self.verdict, "Nothing was written to the table."]
        return "\n".join(lines)

    @property
    def counting_note(self) -> str:
        """What counting the partition keys read ("" when nothing)."""
        return f"; {self.key_items_read:,} more, keys only, to count partition keys" if self.key_items_read else ""

    @property
    def keys_note(self) -> str:
        """One line on the partition keys counted and the largest of them."""
        counts = self._counts()
        largest = max(counts, key=lambda k: k.items)
        census = sum(k.found_by == "census" for k in counts)
        hot, base = _skew(self.plan, counts, self.sampled)
        return (
            f"Partition keys counted: {len(counts)} ({census} first in the table's order, "
            f"{len(counts) - census} met by the sample); the largest holds {_items(largest)}, an ordinary "
            f"segment ~{base:,}; {count_of(len(hot), 'hot key')}. Keys not counted are cut by the run "
            "when it meets them."
        )

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(str(self))

    def save(self, run_dir: str | Path) -> Path:
        """Write dry_run.json (findings, plan, estimate, ...), diffs.csv and diffs.json into ``run_dir``."""
        folder = Path(run_dir)
        folder.mkdir(parents=True, exist_ok=True)
        report = {
            "findings": self.findings,
            "plan": self.plan.to_dict(),
            "estimate": self.estimate.to_dict(),
            "table": self.table,
            "destination": self.destination,
            "transform": self.transform,
            "transform_sha256": self.transform_sha256,
            "counts": self.counts,
            "items_read": self.items_read,
            "safe": self.safe,
            "verdict": self.verdict,
            "allow_non_idempotent": self.allow_non_idempotent,
            "partition_keys": self.keys,
            "key_items_read": self.key_items_read,
        }
        (folder / "dry_run.json").write_text(json.dumps(report, indent=1, default=str))
        self.run_dir = str(folder)
        frame = self.diffs()
        frame.to_csv(folder / "diffs.csv", index=False)
        frame.to_json(folder / "diffs.json", orient="records", indent=1, default_handler=str)
        return folder / "dry_run.json"


def _stream_findings(plan: Plan, planned: Estimate) -> list[dict[str, Any]]:
    """A live table's stream: off (nothing can be replayed), or a run too long for its 24 hours."""
    facts = plan.table
    stream = Stream(facts.name, facts.stream_arn, facts.stream_view_type)
    problem = stream_problems(facts.name, stream, bool(plan.destination))
    if problem:
        return [_finding({}, "stream_off", problem[0], call=problem[1])]
    if planned.duration_s > STREAM_RUN_S:
        hours = f"the run is estimated at {planned.duration_s / 3600:.1f} h"
        return [_finding({}, "stream_retention", hours)]
    return []


def _items(count: KeyCount) -> str:
    return f"{'at least ' if count.at_least else ''}{count.items:,} items"


def _table_items(plan: Plan, counts: list[KeyCount], sampled: int) -> int:
    """The table's items: DescribeTable's count (refreshed about every six hours), or more when the dry run
    saw more."""
    return max(plan.table.item_count, sampled, sum(k.items for k in counts))


def _skew(plan: Plan, counts: list[KeyCount], sampled: int) -> tuple[list[KeyCount], int]:
    """The hot keys among ``counts`` and an ordinary segment's items, for this plan's segments."""
    return hot_keys(counts, _table_items(plan, counts, sampled), plan.total_segments, MIN_HOT_ITEMS)


def _hot_key_findings(plan: Plan, counts: list[KeyCount], sampled: int, planned: Estimate) -> list[dict[str, Any]]:
    """A finding for each counted key that would make its segment more than twice an ordinary one: its
    items, the time it alone takes at one worker's pace, and what the run does about it."""
    findings = []
    hot, base = _skew(plan, counts, sampled)
    per_item_s = planned.duration_s * max(planned.workers, 1) / max(planned.items, 1)
    for count in hot:
        more = "at least " if count.at_least else ""
        detail = (
            f"{_items(count)} under this partition key, {count.items / base:,.1f} times an ordinary "
            f"segment's ~{base:,} (one segment holds all of a key's items); alone, at one worker's pace, it takes "
            f"{more}~{format_duration(count.items * per_item_s)}"
        )
        if plan.hot_items:
            ranges = math.ceil(max(count.items - plan.hot_items, 0) / (2 * plan.hot_items))
            remedy = (
                f"nothing to do: the run cuts it into {more}{ranges:,} sort-key ranges of {2 * plan.hot_items:,} "
                "items, each a unit of its own (split_hot_keys=True)"
            )
        else:
            remedy = "the run lasts at least that long: pass split_hot_keys=True (the default) to cut it into ranges"
        findings.append(_finding(format_key(deserialize(count.key)), "hot_key", detail, remedy=remedy))
    return findings


def _finding(key: dict[str, Any], rule: str, detail: str, **fields: str) -> dict[str, Any]:
    fix = FIXES[rule].format(allow=option("allow_non_idempotent", True), **fields)
    return {"key": key, "rule": rule, "message": f"{detail}: {fix}" if detail else fix}


def _earlier(
    verdict: Verdict, plan: Plan, key: dict[str, Any], targets: dict[str, dict[str, Any]]
) -> dict[str, Any] | None:
    """The key of an earlier sampled item with this item's destination key (None: remember this one)."""
    assert verdict.wire is not None
    target = json.dumps({name: verdict.wire.get(name) for name in plan.target_keys}, sort_keys=True)
    if target in targets:
        return targets[target]
    targets[target] = key
    return None


def _idempotent(func: Transform, verdict: Verdict) -> bool:
    """Whether the transform leaves its own result as it is."""
    assert verdict.wire is not None
    try:
        again = func(deserialize(verdict.wire))
    except Exception:
        return False
    return again is not None and matches(again, verdict.wire)


@clear_errors
def dry_run(
    table_name: str,
    transform: str,
    sample_size: int = 100,
    *,
    run_dir: str | Path = "",
    seed: int = 0,
    destination_table_name: str | None = None,
    write_mode: str = "conditional",
    version_attribute: str = "",
    capacity_share: float = 0,
    max_read_units: float = 0,
    max_write_units: float = 0,
    engine: str = "local",
    stack_name: str = "",
    rate_limit: float = 0,
    prewarm_read_units: int = 0,
    prewarm_write_units: int = 0,
    allow_non_idempotent: bool = False,
    follow: bool = False,
    split_hot_keys: bool = True,
    boto3_session: boto3.Session | None = None,
) -> DryRun:
    """Sample ``table_name`` across its key space, apply ``transform`` in memory, and report.

    Nothing is written to any table. The same ``seed`` gives the same sample.
    When ``run_dir`` is given, the report is saved there (dry_run.json, diffs.csv,
    diffs.json) with the transform's content hash, which 03_migrate checks.
    A transform that changes its own result again is NOT SAFE (a page read again
    would apply it twice) unless ``allow_non_idempotent``. The estimate times the
    transform on the sample. Call :meth:`DryRun.check` to raise when the verdict
    is not safe. The partition keys first in the table's order, and those the sample meets most, are
    counted (keys only, up to a cap): each that would make its segment more than twice an ordinary one is a
    ``hot_key`` finding, and :meth:`DryRun.segment_sizes` estimates every unit of work.
    """
    params.check_int("sample_size", sample_size, 1, 1_000_000)
    params.check_int("seed", seed, 0)
    params.check_bool("allow_non_idempotent", allow_non_idempotent)
    plan = plan_migration(
        table_name,
        transform,
        destination_table_name=destination_table_name,
        engine=engine,
        write_mode=write_mode,
        version_attribute=version_attribute,
        capacity_share=capacity_share,
        max_read_units=max_read_units,
        max_write_units=max_write_units,
        stack_name=stack_name,
        rate_limit=rate_limit,
        prewarm_read_units=prewarm_read_units,
        prewarm_write_units=prewarm_write_units,
        follow=follow,
        split_hot_keys=split_hot_keys,
        boto3_session=boto3_session,
    )
    digest = transform_digest(transform)
    facts, func = plan.table, load_transform(transform)
    stats: dict[str, int] = {}
    dynamodb = client("dynamodb", boto3_session)
    items = sample_items(
        dynamodb,
        table_name,
        sample_size,
        item_count=facts.item_count,
        key_names=facts.key_names,
        seed=seed,
        stats=stats,
    )
    counts: Counter[str] = Counter({"changed": 0, "unchanged": 0, "deleted": 0, "failed": 0})
    changes: list[dict[str, Any]] = []
    findings: list[dict[str, Any]] = []
    read_bytes = written_bytes = 0
    index_units = 0.0  # what the sampled writes cost the written table's GSIs
    targets: dict[str, dict[str, Any]] = {}  # destination key -> the source key that maps to it
    journaled: list[dict[str, Any]] = []  # what the journal would keep of the sampled writes
    spent = 0.0  # seconds in the transform (and the item conversions around it), as the worker spends them
    for raw in items:
        started = time.perf_counter()
        verdict = evaluate(
            func, raw, facts.key_names, in_place=not destination_table_name, target_keys=plan.target_keys
        )
        spent += time.perf_counter() - started
        key = format_key({name: verdict.before[name] for name in facts.key_names})
        read_bytes += item_size(raw)
        if verdict.action == FAILED:
            counts["failed"] += 1
            findings.append(_finding(key, verdict.rule, verdict.message))
        elif verdict.action == PUT and destination_table_name and (earlier := _earlier(verdict, plan, key, targets)):
            counts["failed"] += 1
            findings.append(_finding(key, "key_collision", f"the same destination key as item {json.dumps(earlier)}"))
        elif verdict.action == DELETE:
            counts["deleted"] += 1
            index_units += _index_units(plan, verdict.before, None, item_size(raw))
            if not destination_table_name:  # a copy leaves it out: nothing to journal
                journaled.append(journal.entry_for(raw, None, facts.key_names, (), in_place=True))
            changes.append({"key": json.dumps(key), "path": "*", "change": "deleted", "before": "", "after": ""})
        elif verdict.action == UNCHANGED or (verdict.action == PUT and matches(verdict.after, verdict.raw)):
            counts["unchanged"] += 1
        else:
            counts["changed"] += 1
            written_bytes += verdict.size
            index_units += _index_units(plan, verdict.before, verdict.after, verdict.size)
            in_place = not destination_table_name
            journaled.append(journal.entry_for(raw, verdict.wire, facts.key_names, plan.target_keys, in_place))
            if verdict.size > NEAR_LIMIT_BYTES:
                findings.append(_finding(key, "near_limit", f"{verdict.size:,} bytes"))
            if not _idempotent(func, verdict):
                findings.append(_finding(key, "not_idempotent", ""))
            changes.extend(
                {
                    "key": json.dumps(key),
                    "path": c.path,
                    "change": c.change,
                    "before": _show(c.before),
                    "after": _show(c.after),
                }
                for c in diff_items(verdict.before, verdict.after)
            )
    if counts["deleted"] and not destination_table_name and write_mode == "conditional" and not version_attribute:
        findings.append(_finding({}, "deletes_without_version", f"{counts['deleted']} sampled item(s) deleted"))
    if write_mode == "batch" and (counts["changed"] or counts["deleted"]):
        findings.append(_finding({}, "batch_overwrites", f"{counts['changed'] + counts['deleted']} sampled write(s)"))
    if not destination_table_name and (counts["changed"] or counts["deleted"]):  # it rewrites this table
        if point_in_time_recovery(table_name, boto3_session) is False:  # None: the endpoint cannot say
            detail = f"point-in-time recovery is off on {table_name!r}"
            findings.append(_finding({}, "pitr_off", detail, table=table_name))
    sampled = max(len(items), 1)
    written = counts["changed"] + counts["deleted"]
    planned = estimate(
        item_count=facts.item_count,
        average_item_bytes=read_bytes / sampled,
        written_share=written / sampled,
        average_written_bytes=written_bytes / max(counts["changed"], 1),
        billing_mode=facts.billing_mode,
        read_capacity=facts.read_capacity,
        write_capacity=facts.write_capacity,
        aws_segments=plan.total_segments if plan.engine == "aws" else choose_segments(facts, "aws")[0],
        read_limit=plan.read_units_per_s,
        write_limit=plan.write_units_per_s,
        journal_entry_bytes=len(journal.encode(journaled)) / len(journaled) if journaled else 0.0,
        transform_ms=spent * 1000 / sampled,
        workers=plan.max_concurrency,
        index_write_units_per_item=index_units / sampled,
    )
    cap = count_cap(ordinary(facts.item_count, plan.total_segments, MIN_HOT_ITEMS))
    keys = count_keys(dynamodb, table_name, facts.key_names, items, cap=cap, stats=stats)
    findings += _hot_key_findings(plan, keys, len(items), planned)
    findings += _stream_findings(plan, planned)
    report = DryRun(
        table=table_name,
        transform=transform,
        counts=dict(counts),
        plan=plan,
        estimate=planned,
        items_read=stats["items_read"],
        changes=changes,
        findings=findings,
        transform_sha256=digest,
        destination=destination_table_name or None,
        allow_non_idempotent=allow_non_idempotent,
        keys=[k.to_dict() for k in keys],
        key_items_read=stats.get("key_items_read", 0),
    )
    if run_dir:
        report.save(run_dir)
    return report
