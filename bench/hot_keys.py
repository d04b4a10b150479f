"""A table where one partition key holds half the items, against a uniform one, in one session (ADR 0018).

Three tables of the same size, each migrated once in place with ``set_flag`` on
the local engine, with the same segments and concurrency:

1. ``uniform``: every item under its own partition key;
2. ``hot``: half the items under one partition key (a tenant's orders), the
   rest each under its own; hot keys split (the default);
3. ``hot, not split``: the same table shape with ``split_hot_keys=False``.

Twice: with each worker capped at WORKER_ITEMS_PER_S (``workers capped``), as a
Lambda worker is bounded by its one connection and its partition, so that a
run lasts as long as its largest unit; and as fast as DynamoDB Local goes
(``server-bound``: on a small machine DynamoDB Local, not the workers, sets the
pace, and one big segment costs little time).

It reports ``largest unit share`` (the most items one unit of work handled,
over the table's items; target at most 2/32 = 0.0625), ``hot-key run / uniform
run`` (wall time, workers capped; target at most 1.3), and the same without
the split, for the size of the problem. `make bench` runs it; `python -m bench.hot_keys`
alone. BENCH_HOT_ITEMS sets the table size (default 50,000).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import boto3

import ddbnb
from bench.cpu import workers_cpu
from ddbnb.emulation.servers import sandbox
from ddbnb.insight.results import result_entries
from ddbnb.worker.wire import WireClient
from ddbnb.worker.writes import BATCH_SIZE, Backoff, write_batch

RESULTS = Path(__file__).parent / "results"
TRANSFORM = str(Path(__file__).resolve().parent / "transforms.py") + ":set_flag"
SEGMENTS, CONCURRENCY = 32, 4
#: Items a second each worker may handle in the capped runs (rate_limit is for the whole run).
WORKER_ITEMS_PER_S = 250
TARGETS = {"largest unit share": 0.0625, "hot-key run / uniform run": 1.3}  # both at most


def _rows(items: int, hot: bool) -> list[dict[str, Any]]:
    half = items // 2 if hot else 0
    rows = [{"pk": {"S": "tenant#hot"}, "sk": {"S": f"order#{i:08d}"}} for i in range(half)]
    rows += [{"pk": {"S": f"user#{i:08d}"}, "sk": {"S": "profile"}} for i in range(items - half)]
    for i, row in enumerate(rows):
        row.update(n={"N": str(i)}, note={"S": "x" * 200})
    return rows


def _seed(table: str, items: int, hot: bool) -> None:
    boto3.client("dynamodb").create_table(
        TableName=table,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=[{"AttributeName": n, "AttributeType": "S"} for n in ("pk", "sk")],
        BillingMode="PAY_PER_REQUEST",
    )
    wire, rows = WireClient(), _rows(items, hot)
    for start in range(0, len(rows), BATCH_SIZE):
        chunk = [{"PutRequest": {"Item": row}} for row in rows[start : start + BATCH_SIZE]]
        if write_batch(wire, table, chunk, Backoff()).failures:
            raise SystemExit("seeding failed")


def _migrate(table: str, items: int, split: bool, capped: bool, folder: Path) -> dict[str, Any]:
    plan = ddbnb.plan_migration(
        table,
        TRANSFORM,
        total_segments=SEGMENTS,
        max_concurrency=CONCURRENCY,
        split_hot_keys=split,
        rate_limit=WORKER_ITEMS_PER_S * CONCURRENCY if capped else 0,
    )
    began, workers = time.perf_counter(), workers_cpu()
    summary = ddbnb.migrate(plan, execute=True, run_dir=folder, require_dry_run=False, progress=False)
    seconds = time.perf_counter() - began
    assert summary is not None
    if summary["scanned"] != items or summary["written"] != items:
        raise SystemExit(f"{table}: {summary['scanned']} scanned, {summary['written']} written of {items}")
    largest = max(json.loads(entry["Output"])["scanned"] for entry in result_entries(folder))
    return {
        "seconds": round(seconds, 2),
        "items_per_s": round(items / seconds),
        "units": summary["segments"],
        "largest_unit_items": largest,
        # each worker process's CPU over the wall time: well under 1, so Python is not what sets the pace
        "worker_cpu_share": round((workers_cpu() - workers) / seconds / CONCURRENCY, 3),
    }


def main() -> None:
    items = int(os.environ.get("BENCH_HOT_ITEMS", "50000"))
    stamp = int(time.time())
    runs: dict[str, dict[str, Any]] = {}
    with sandbox(), tempfile.TemporaryDirectory() as folder:
        for variant, capped in (("workers capped", True), ("server-bound", False)):
            for name, hot, split in (("uniform", False, True), ("hot", True, True), ("hot, not split", True, False)):
                table = f"bench-hot-{stamp}-{len(runs)}"
                _seed(table, items, hot)
                key = f"{variant}: {name}"
                runs[key] = _migrate(table, items, split, capped, Path(folder) / str(len(runs)))
                print(f"  {key}: {runs[key]}", flush=True)

    def ratio(variant: str, name: str) -> float:
        return float(runs[f"{variant}: {name}"]["seconds"] / runs[f"{variant}: uniform"]["seconds"])

    ratios = {
        "largest unit share": runs["workers capped: hot"]["largest_unit_items"] / items,
        "hot-key run / uniform run": ratio("workers capped", "hot"),
        "largest unit share, not split": runs["workers capped: hot, not split"]["largest_unit_items"] / items,
        "hot-key run not split / uniform run": ratio("workers capped", "hot, not split"),
        "server-bound: hot-key run / uniform run": ratio("server-bound", "hot"),
        "server-bound: hot-key run not split / uniform run": ratio("server-bound", "hot, not split"),
    }
    report: dict[str, Any] = {
        "items": items,
        "segments": SEGMENTS,
        "concurrency": CONCURRENCY,
        "worker_items_per_s": WORKER_ITEMS_PER_S,
        "runs": runs,
    }
    report["ratios"] = {name: round(value, 4) for name, value in ratios.items()}
    report["targets"] = {name: f"<= {value}" for name, value in TARGETS.items()}
    report["met"] = {name: ratios[name] <= value for name, value in TARGETS.items()}
    for name, value in report["ratios"].items():
        met = name in TARGETS and ("met" if report["met"][name] else "MISSED")
        target = f" (target <= {TARGETS[name]}: {met})" if met else ""
        print(f"{name}: {value}{target}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "hot-keys-latest.json").write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
