"""What the conditional writes at the edges cost, in one session on DynamoDB Local (ADR 0014).

One segment worker (its 4 write threads) rewrites the same seeded table three
ways, alternating, the table seeded again before each run:

- ``partiql``: a guarded update of one attribute, 25 PartiQL statements a call;
- ``item api``: the same update of an attribute named ``#flag``, which PartiQL
  cannot carry, so each write is one UpdateItem;
- ``delete``: a guarded delete of every item, returning what it deleted.

It reports each way's items/s (median of the rounds), ``item api / partiql``,
and the client CPU per item, to show the Python process was not the bottleneck.
`make bench` runs it; `python -m bench.edges` alone. BENCH_EDGES_ITEMS sets the
table size (default 5,000).
"""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import boto3

from ddbnb.emulation.servers import sandbox
from ddbnb.worker.segment import process_segment
from ddbnb.worker.wire import WireClient
from ddbnb.worker.writes import BATCH_SIZE, Backoff, write_batch

RESULTS = Path(__file__).parent / "results"
ROUNDS = 2
WAYS = {
    "partiql": "bench/transforms.py:set_flag",
    "item api": "bench/transforms.py:set_hash_flag",
    "delete": "bench/transforms.py:delete_all",
}


def _seed(table: str, items: int) -> None:
    dynamodb = boto3.client("dynamodb")
    if table in dynamodb.list_tables()["TableNames"]:
        dynamodb.delete_table(TableName=table)
    dynamodb.create_table(
        TableName=table,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    wire = WireClient()
    rows = [{"pk": {"S": f"p{i:07d}"}, "n": {"N": str(i)}, "note": {"S": "x" * 200}} for i in range(items)]
    for start in range(0, items, BATCH_SIZE):
        chunk = [{"PutRequest": {"Item": row}} for row in rows[start : start + BATCH_SIZE]]
        if write_batch(wire, table, chunk, Backoff()).failures:
            raise SystemExit("seeding failed")


def _run(table: str, transform: str) -> dict[str, Any]:
    event = {
        "table": table,
        "segment": 0,
        "total_segments": 1,
        "transform": str(Path(__file__).resolve().parents[1] / transform),
        "write_mode": "conditional",
        "rate_limit": 0,
    }
    cpu, started = time.process_time(), time.perf_counter()
    result = process_segment(event)
    seconds = time.perf_counter() - started
    done = result["written"] + result["deleted"]
    if result["failed"] or result["cursor"] is not None:
        raise SystemExit(f"{transform}: {result['failed']} failed")
    return {"items_per_s": done / seconds, "cpu_ms_per_item": (time.process_time() - cpu) * 1000 / max(done, 1)}


def main() -> None:
    items = int(os.environ.get("BENCH_EDGES_ITEMS", "5000"))
    table = "bench-edges"
    rates: dict[str, list[float]] = {way: [] for way in WAYS}
    cpu: dict[str, list[float]] = {way: [] for way in WAYS}
    started = time.perf_counter()
    with sandbox():
        for round_ in range(ROUNDS):
            for way in WAYS if round_ % 2 == 0 else reversed(list(WAYS)):
                _seed(table, items)
                measured = _run(table, WAYS[way])
                rates[way].append(measured["items_per_s"])
                cpu[way].append(measured["cpu_ms_per_item"])
    median = {way: statistics.median(values) for way, values in rates.items()}
    report = {
        "items": items,
        "items_per_s": {way: round(value) for way, value in median.items()},
        "client_cpu_ms_per_item": {way: round(statistics.median(values), 3) for way, values in cpu.items()},
        "item api / partiql": round(median["item api"] / median["partiql"], 3),
        "delete / partiql": round(median["delete"] / median["partiql"], 3),
        "rounds": ROUNDS,
        "seconds": round(time.perf_counter() - started, 1),
    }
    for way in WAYS:
        print(f"{way}: {median[way]:,.0f} items/s, {report['client_cpu_ms_per_item'][way]} ms client CPU an item")
    print(f"item api / partiql: {report['item api / partiql']}; delete / partiql: {report['delete / partiql']}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "edges-latest.json").write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
