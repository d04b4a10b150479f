"""Conditional writes on DynamoDB Local: per-item UpdateItem from threads vs PartiQL BatchExecuteStatement.

Run: .venv/bin/python -m bench.conditional_modes [items]. Each way updates every item of the
same table once, guarded by the value as read (the issue-10 write), with the same number of
client threads; it prints items/s and the client's CPU per item. Decided ADR 0007.
"""

from __future__ import annotations

import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import ddbnb
from ddbnb.emulation.demo import create_demo_table, demo_item
from ddbnb.worker.wire import WireClient
from ddbnb.worker.writes import BATCH_SIZE, Backoff, write_batch

THREADS = 8


def _seed(table: str, items: int) -> list[dict[str, Any]]:
    import random

    create_demo_table(table, replace=True)
    rng = random.Random(1)
    rows = [demo_item(i, rng) for i in range(items)]
    wire = WireClient()
    for start in range(0, items, BATCH_SIZE):
        chunk = [{"PutRequest": {"Item": r}} for r in rows[start : start + BATCH_SIZE]]
        assert not write_batch(wire, table, chunk, Backoff()).failures
    return rows


def update_item(wire: WireClient, table: str, row: dict[str, Any], value: str) -> None:
    wire.call(
        "UpdateItem",
        {
            "TableName": table,
            "Key": {"pk": row["pk"], "sk": row["sk"]},
            "UpdateExpression": "SET #f = :new",
            "ConditionExpression": "attribute_exists(#k) AND #s = :s",
            "ExpressionAttributeNames": {"#f": "flag", "#k": "pk", "#s": "status"},
            "ExpressionAttributeValues": {":new": {"S": value}, ":s": row["status"]},
        },
    )


def partiql(wire: WireClient, table: str, rows: list[dict[str, Any]], value: str) -> None:
    statements = [
        {
            "Statement": f'UPDATE "{table}" SET "flag" = ? WHERE "pk" = ? AND "sk" = ? AND "status" = ?',
            "Parameters": [{"S": value}, r["pk"], r["sk"], r["status"]],
        }
        for r in rows
    ]
    response = wire.call("BatchExecuteStatement", {"Statements": statements})
    errors = [r["Error"] for r in response["Responses"] if "Error" in r]
    assert not errors, errors[:2]


def measure(name: str, work: Any) -> dict[str, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    count = work()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return {"case": name, "items_per_s": count / wall, "client_cpu_ms_per_item": cpu / count * 1000}


def main(items: int = 20_000) -> None:
    with ddbnb.sandbox():
        rows = _seed("cond-bench", items)
        wire = WireClient()
        chunks = [rows[i : i + BATCH_SIZE] for i in range(0, len(rows), BATCH_SIZE)]
        results = []
        for round_ in range(2):  # round 0 warms the JVM up; both are printed
            with ThreadPoolExecutor(THREADS) as pool:

                def per_item(value: str = f"u{round_}") -> int:
                    return sum(1 for _ in pool.map(lambda r: update_item(wire, "cond-bench", r, value), rows))

                def batched(value: str = f"p{round_}") -> int:
                    return (
                        sum(1 for _ in pool.map(lambda c: partiql(wire, "cond-bench", c, value), chunks)) * BATCH_SIZE
                    )

                results.append(measure(f"UpdateItem, {THREADS} threads, round {round_}", per_item))
                results.append(measure(f"BatchExecuteStatement, {THREADS} threads, round {round_}", batched))
        print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20_000)
