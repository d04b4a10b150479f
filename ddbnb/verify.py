"""Prove a run's target matches the transform of its source, before anyone cuts over.

- **Copy**: every destination item (or those of a random sample of source items)
  is compared with the transform of its source item as it is now: *missing*
  (the source makes it, the destination lacks it), *different* (with the
  attributes that differ) and, on a full verify, *extra* (the destination holds
  a key no source item makes).
- **In place**: every item the transform would still change is *not migrated*.

Items the transform fails on are listed apart (*failing*). The report goes to
``run_dir/verify.json`` and the run folder's history.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import boto3

from ddbnb.exceptions import DdbnbError, command
from ddbnb.insight.sample import sample_items
from ddbnb.progress import progress_bar
from ddbnb.runfolder import VERIFY, VERIFY_KINDS, RunFolder, utc_now
from ddbnb.worker import params
from ddbnb.worker.budgets import capacity_limits
from ddbnb.worker.capacity import Bucket
from ddbnb.worker.clients import clear_errors
from ddbnb.worker.evaluate import FAILED, PUT, UNCHANGED, evaluate
from ddbnb.worker.items import deserialize, format_key
from ddbnb.worker.journal import differences, item_digest
from ddbnb.worker.reads import key_text, read_items
from ddbnb.worker.tables import TableFacts, table_facts
from ddbnb.worker.transforms import load_transform
from ddbnb.worker.wire import WireClient, shared_client
from ddbnb.worker.writes import Backoff

#: Keys listed per kind of difference in verify.json (the counts are always whole).
MAX_LISTED = 1000

WireItem = dict[str, Any]


@clear_errors
def verify(
    run_dir: str | Path,
    *,
    sample: int = 0,
    progress: bool = True,
    boto3_session: boto3.Session | None = None,
) -> dict[str, Any]:
    """Compare the run's target with the transform of its source as it is now; write ``verify.json``.

    ``sample=0`` checks every item (and, for a copy, finds extra destination
    items too); ``sample=N`` checks about N random source items. It reads
    within the run's recorded capacity limits (``capacity_share``,
    ``max_read_units``), strongly consistent. Returns the
    report: ``checked``, ``missing``, ``extra``, ``different``,
    ``not_migrated`` and ``failing`` counts, each with up to
    :data:`MAX_LISTED` keys, and ``matches`` (True when all are 0).
    """
    params.check_int("sample", sample, 0)
    params.check_bool("progress", progress)
    folder = RunFolder(run_dir)
    recorded = folder.plan()
    if not recorded:
        raise DdbnbError(f"{folder} holds no migration (plan.json is missing). Pass the run_dir 03 used.")
    dynamodb = shared_client(boto3_session)
    source = table_facts(dynamodb.client, recorded["table"])
    target = (
        table_facts(dynamodb.client, recorded["destination"], "destination") if recorded.get("destination") else None
    )
    limits = [float(recorded.get(name) or 0) for name in ("capacity_share", "max_read_units", "max_write_units")]
    read_budget, _, _ = capacity_limits(source, target or source, *limits)  # the run's limits hold for its verify
    check = _Check(dynamodb, recorded["transform"], source, target, Bucket(read_budget))
    if sample:
        items = sample_items(
            dynamodb.client, source.name, sample, item_count=source.item_count, key_names=source.key_names
        )
        check.source_items(items, progress=False)
    else:
        check.source_items(_scan(dynamodb, source.name, check.reads), progress, total=source.item_count)
    if target is not None:
        check.destination(full=not sample, progress=progress)
    report = check.report(sample)
    folder.record_verify(report)
    folder.add_history("verifies", {k: report[k] for k in ("at", "sample", "checked", "matches", *VERIFY_KINDS)})
    print(_said(report, str(folder)))
    return report


class _Check:
    """What one verify found so far."""

    def __init__(
        self, dynamodb: WireClient, transform: str, source: TableFacts, target: TableFacts | None, reads: Bucket
    ) -> None:
        self.dynamodb, self.reads = dynamodb, reads
        self.transform = load_transform(transform)
        self.source, self.target = source, target
        self.target_names = list(target.key_names) if target is not None else []
        self.checked = 0
        self.found: dict[str, list[Any]] = {kind: [] for kind in VERIFY_KINDS}
        self.counts = dict.fromkeys(VERIFY_KINDS, 0)
        # destination key text: (fingerprint, source key, destination key)
        self.expected: dict[str, tuple[str, WireItem, WireItem]] = {}

    def note(self, kind: str, entry: Any) -> None:
        self.counts[kind] += 1
        if len(self.found[kind]) < MAX_LISTED:
            self.found[kind].append(entry)

    def source_items(self, items: Iterator[WireItem] | list[WireItem], progress: bool, total: int = 0) -> None:
        """Judge each source item: in place, whether it is migrated; for a copy, what the destination must hold."""
        names = self.source.key_names
        bar = progress_bar(total or None, unit="items", desc="verify source", enabled=progress)
        try:
            for raw in items:
                self.checked += 1
                bar.update(1)
                key = {name: raw[name] for name in names}
                verdict = evaluate(
                    self.transform,
                    raw,
                    names,
                    in_place=self.target is None,
                    target_keys=dict(zip(self.target_names, self.target.key_types, strict=True))
                    if self.target
                    else None,
                )
                if verdict.action == FAILED:
                    self.note("failing", {"key": _shown(key), "reason": f"{verdict.rule}: {verdict.message}"})
                elif self.target is None and verdict.action != UNCHANGED:
                    self.note("not_migrated", {"key": _shown(key), "would": verdict.action})
                elif verdict.action == PUT and verdict.wire is not None and self.target is not None:
                    wanted = {name: verdict.wire[name] for name in self.target_names}
                    self.expected[key_text(wanted, self.target_names)] = (_fingerprint(verdict.wire), key, wanted)
        finally:
            bar.close()

    def destination(self, full: bool, progress: bool) -> None:
        """Compare the destination with what the source makes (a full verify scans it, and finds extras)."""
        assert self.target is not None
        seen: set[str] = set()
        if full:
            items: Iterator[WireItem] = _scan(self.dynamodb, self.target.name, self.reads)
        else:
            keys = [wanted for _, _, wanted in self.expected.values()]
            read = read_items(self.dynamodb, self.target.name, keys, self.target_names, self.reads, Backoff())
            items = iter(read.found.values())
        bar = progress_bar(self.target.item_count or None, unit="items", desc="verify destination", enabled=progress)
        try:
            for raw in items:
                bar.update(1)
                text = key_text(raw, self.target_names)
                seen.add(text)
                expected = self.expected.get(text)
                key = {name: raw[name] for name in self.target_names}
                if expected is None:
                    self.note("extra", {"key": _shown(key)})
                elif expected[0] != _fingerprint(raw):
                    self.note("different", self._difference(key, raw, expected[1]))
        finally:
            bar.close()
        for text, (_, source_key, wanted) in self.expected.items():
            if text not in seen:
                self.note("missing", {"key": _shown(wanted), "source_key": _shown(source_key)})

    def _difference(self, key: WireItem, held: WireItem, source_key: WireItem) -> dict[str, Any]:
        """Which attributes of a destination item differ from what its source makes now."""
        read = read_items(
            self.dynamodb, self.source.name, [source_key], list(self.source.key_names), Bucket(0), Backoff()
        )
        now = next(iter(read.found.values()), None)
        wanted = evaluate(self.transform, now, self.source.key_names, in_place=False).wire if now else None
        return {
            "key": _shown(key),
            "source_key": _shown(source_key),
            "attributes": differences(item_digest(held), item_digest(wanted)),
        }

    def report(self, sample: int) -> dict[str, Any]:
        return {
            "at": utc_now(),
            "table": self.source.name,
            "destination": self.target.name if self.target is not None else None,
            "sample": sample,
            "checked": self.checked,
            **self.counts,
            "matches": not any(self.counts.values()),
            "listed": self.found,
        }


def _fingerprint(item: Mapping[str, Any]) -> str:
    """A short digest of a whole item, the same however DynamoDB spells its numbers."""
    digest = item_digest(item) or {}
    return hashlib.sha256(json.dumps(digest, sort_keys=True).encode()).hexdigest()[:32]


def _shown(key: Mapping[str, Any]) -> dict[str, Any]:
    return format_key(deserialize(key)) if key else {}


def _scan(dynamodb: WireClient, table: str, reads: Bucket) -> Iterator[WireItem]:
    """Every item of ``table``, page by page (strongly consistent), paced to ``reads`` units a second."""
    kwargs: dict[str, Any] = {"TableName": table, "ConsistentRead": True, "ReturnConsumedCapacity": "TOTAL"}
    estimate = 1.0
    while True:
        reads.acquire(estimate)
        page = dynamodb.call("Scan", kwargs)
        used = float(page.get("ConsumedCapacity", {}).get("CapacityUnits", estimate))
        reads.settle(estimate, used)
        estimate = used
        yield from page.get("Items", [])
        if not page.get("LastEvaluatedKey"):
            return
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def _said(report: dict[str, Any], run_dir: str) -> str:
    checked = f"{report['checked']:,} item(s)" + (" (a sample)" if report["sample"] else "")
    if report["matches"]:
        return f"MATCHES: {checked} checked; the target is the transform of the source. Verify: {run_dir}/{VERIFY}"
    found = ", ".join(f"{report[kind]:,} {kind.replace('_', ' ')}" for kind in VERIFY_KINDS if report[kind])
    return (
        f"DIFFERS: {checked} checked; {found}. The keys are in {run_dir}/{VERIFY}. Follow until caught up "
        f"({command('follow', run_dir)}) and verify again; what still differs needs a look before cutover."
    )
