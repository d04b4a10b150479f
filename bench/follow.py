"""How fast the follower keeps up, against the migration it follows, in one session on DynamoDB Local (ADR 0016).

On one seeded table with a stream (NEW_AND_OLD_IMAGES):

1. ``migration``: an in-place run of ``set_flag`` over every item (local engine), in items/s;
2. ``follow``: an old version of the application rewrites every item in the old
   shape (no ``flag``) after the run; ``ddbnb.follow`` then catches up: every
   record in the stream since the run's start (the run's own writes, the
   application's, and the follower's own coming back), in records/s and in
   items converted per second, with the client CPU per record;
3. ``lag``: caught up, the follower runs while a probe writes an old-shape
   item every 0.2 s and times how long until it reads it converted.

It reports ``follow / migration`` (records/s against the run's items/s),
``converted / migration`` (items the follower rewrote a second, against the
same), and the lag's median and maximum. `make bench` runs it; `python -m bench.follow` alone.
BENCH_FOLLOW_ITEMS sets the table size (default 5,000).
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import boto3

import ddbnb
from ddbnb.emulation.servers import sandbox
from ddbnb.worker.wire import WireClient
from ddbnb.worker.writes import BATCH_SIZE, Backoff, write_batch

RESULTS = Path(__file__).parent / "results"
TRANSFORM = str(Path(__file__).resolve().parent / "transforms.py") + ":set_flag"
PROBES = 40
PROBE_EVERY_S = 0.2


def _rows(items: int) -> list[dict[str, Any]]:
    return [{"pk": {"S": f"p{i:07d}"}, "n": {"N": str(i)}, "note": {"S": "x" * 200}} for i in range(items)]


def _put(table: str, rows: list[dict[str, Any]]) -> None:
    wire = WireClient()
    for start in range(0, len(rows), BATCH_SIZE):
        chunk = [{"PutRequest": {"Item": row}} for row in rows[start : start + BATCH_SIZE]]
        if write_batch(wire, table, chunk, Backoff()).failures:
            raise SystemExit("writing failed")


def _seed(table: str, items: int) -> None:
    dynamodb = boto3.client("dynamodb")
    dynamodb.create_table(
        TableName=table,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )
    _put(table, _rows(items))


def _probe(table: str, delays: list[float], stop: threading.Event) -> None:
    """Write an old-shape item, then read it (consistent) until the follower has converted it."""
    dynamodb = boto3.client("dynamodb")
    for i in range(PROBES):
        key = {"pk": {"S": f"probe{i:04d}"}}
        written = time.perf_counter()
        dynamodb.put_item(TableName=table, Item={**key, "n": {"N": str(i)}})
        while not stop.is_set():
            item = dynamodb.get_item(TableName=table, Key=key, ConsistentRead=True).get("Item", {})
            if "flag" in item:
                delays.append(time.perf_counter() - written)
                break
            time.sleep(0.01)
        time.sleep(PROBE_EVERY_S)


def main() -> None:
    items = int(os.environ.get("BENCH_FOLLOW_ITEMS", "5000"))
    table = f"bench-follow-{int(time.time())}"
    started = time.perf_counter()
    with sandbox(), tempfile.TemporaryDirectory() as folder:
        run_dir = Path(folder) / "run"
        _seed(table, items)
        plan = ddbnb.plan_migration(table, TRANSFORM, follow=True)
        began = time.perf_counter()
        ddbnb.migrate(plan, execute=True, run_dir=run_dir, require_dry_run=False, progress=False)
        migration_s = time.perf_counter() - began

        _put(table, _rows(items))  # the old version of the application, after the scan passed every item
        cpu, began = time.process_time(), time.perf_counter()
        followed = ddbnb.follow(run_dir, progress=False)
        follow_s, follow_cpu = time.perf_counter() - began, time.process_time() - cpu

        delays: list[float] = []
        stop = threading.Event()
        probe = threading.Thread(target=_probe, args=(table, delays, stop))
        probe.start()
        ddbnb.follow(run_dir, until="stopped", for_s=PROBES * (PROBE_EVERY_S + 0.1) + 5, progress=False)
        stop.set()
        probe.join()
    records_per_s = followed["records"] / follow_s
    report = {
        "items": items,
        "migration_items_per_s": round(items / migration_s),
        "follow_records": followed["records"],
        "follow_records_per_s": round(records_per_s),
        "follow_converted_per_s": round(followed["written"] / follow_s),
        "follow / migration": round(records_per_s / (items / migration_s), 3),
        "converted / migration": round(followed["written"] / follow_s / (items / migration_s), 3),
        "follow_client_cpu_ms_per_record": round(follow_cpu * 1000 / max(followed["records"], 1), 3),
        "follow_client_cpu_share": round(follow_cpu / follow_s, 3),
        "lag_s_median": round(statistics.median(delays), 3) if delays else None,
        "lag_s_max": round(max(delays), 3) if delays else None,
        "probes_converted": f"{len(delays)}/{PROBES}",
        "seconds": round(time.perf_counter() - started, 1),
    }
    print(
        f"migration: {report['migration_items_per_s']:,} items/s; follow: {report['follow_records_per_s']:,} "
        f"records/s ({report['follow_converted_per_s']:,} items converted/s, "
        f"{report['follow_client_cpu_ms_per_record']} ms client CPU a record, "
        f"{report['follow_client_cpu_share']:.0%} of one core)"
    )
    print(
        f"follow / migration: {report['follow / migration']} (items converted: {report['converted / migration']}); "
        f"lag once caught up: median "
        f"{report['lag_s_median']} s, max {report['lag_s_max']} s ({report['probes_converted']} probes)"
    )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "follow-latest.json").write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
