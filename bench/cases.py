"""One benchmark case per call, run in its own process: ``python -m bench.cases CASE ...``.

Each case prints one JSON line: items it handled, wall seconds of the timed part,
and CPU seconds of this process and the children it waited for.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import sys
import tempfile
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from bench.cpu import process_tree_cpu

FLAG_VALUES = {"seed_style": "seed", "awswrangler": "wrangler"}


# -- raw BatchWriteItem ------------------------------------------------------------------------------------
def _writer(args: tuple[str, int, int, int, int, Any]) -> tuple[int, float]:
    from ddbnb.emulation.demo import demo_item
    from ddbnb.worker.wire import WireClient
    from ddbnb.worker.writes import BATCH_SIZE, Backoff, write_batch

    table, start, stop, threads, seed, go = args
    rng = random.Random(seed * 1_000_003 + start)
    items = [demo_item(i, rng) for i in range(start, stop)]
    chunks = [
        [{"PutRequest": {"Item": it}} for it in items[i : i + BATCH_SIZE]] for i in range(0, len(items), BATCH_SIZE)
    ]
    client, backoff = WireClient(), Backoff()
    go.wait()
    cpu = time.process_time()
    with ThreadPoolExecutor(threads) as pool:
        failures = sum(len(o.failures) for o in pool.map(lambda c: write_batch(client, table, c, backoff), chunks))
    assert failures == 0
    return len(items), time.process_time() - cpu


def write(table: str, items: int, processes: int, threads: int, seed: int = 7) -> dict[str, Any]:
    """Raw BatchWriteItem of demo items into ``table`` (items are generated before the clock starts)."""
    context = multiprocessing.get_context("spawn")
    manager = context.Manager()
    go = manager.Event()
    bounds = [items * p // processes for p in range(processes + 1)]
    with context.Pool(processes) as pool:
        result = pool.map_async(
            _writer, [(table, bounds[p], bounds[p + 1], threads, seed, go) for p in range(processes)]
        )
        time.sleep(0.5 + items / processes / 15_000)  # let every process build its items
        started = time.perf_counter()
        go.set()
        done = result.get()
        seconds = time.perf_counter() - started
    manager.shutdown()
    # CPU of the timed part only: building the items is not part of the ceiling.
    return {"items": sum(n for n, _ in done), "seconds": seconds, "cpu_s": sum(c for _, c in done)}


def _over_segments(worker: Any, table: str, segments: int, processes: int, *extra: Any) -> dict[str, Any]:
    """Run ``worker((table, segment, segments, *extra))`` for every segment over ``processes`` processes, timed."""
    context = multiprocessing.get_context("spawn")
    with context.Pool(processes) as pool:
        pool.map(int, range(processes))  # start the workers before the clock
        started = time.perf_counter()
        count = sum(pool.map(worker, [(table, s, segments, *extra) for s in range(segments)], chunksize=1))
        seconds = time.perf_counter() - started
    return {"items": count, "seconds": seconds}


# -- raw parallel Scan -------------------------------------------------------------------------------------
def _scanner(args: tuple[str, int, int]) -> int:
    from ddbnb.worker.wire import WireClient

    table, segment, total = args
    client, count, cursor = WireClient(), 0, None
    while True:
        payload: dict[str, Any] = {"TableName": table, "Segment": segment, "TotalSegments": total}
        if cursor:
            payload["ExclusiveStartKey"] = cursor
        page = client.call("Scan", payload)
        count += len(page["Items"])
        cursor = page.get("LastEvaluatedKey")
        if not cursor:
            return count


def scan(table: str, segments: int, processes: int) -> dict[str, Any]:
    """Parallel scan of the whole table, ``segments`` spread over ``processes``, items parsed from JSON."""
    return _over_segments(_scanner, table, segments, processes)


# -- migration ceilings ------------------------------------------------------------------------------------
def _put_chunk(client: Any, table: str, items: list[Any], backoff: Any) -> None:
    """BatchWriteItem of ``items``, each with the new attribute: what batch mode sends."""
    from ddbnb.worker.writes import write_batch

    outcome = write_batch(
        client, table, [{"PutRequest": {"Item": {**it, "flag": {"S": "ddbnb"}}}} for it in items], backoff
    )
    assert not (outcome.failures or outcome.stalled)


def _update_chunk(client: Any, table: str, items: list[Any], backoff: Any) -> None:
    """BatchExecuteStatement of the guarded UPDATE conditional mode sends for ``set_flag`` on the demo table."""
    from ddbnb.worker.conditional import RETRY_CODES
    from ddbnb.worker.writes import retry_until_stalled

    statement = f'UPDATE "{table}" SET "flag" = ? WHERE "pk" = ? AND "sk" = ? AND "flag" IS MISSING'

    def send(pending: list[Any]) -> list[Any]:
        response = client.call("BatchExecuteStatement", {"Statements": pending, "ReturnConsumedCapacity": "TOTAL"})
        answers = response["Responses"]
        errors = [a["Error"]["Code"] for a in answers if "Error" in a]
        assert all(code in RETRY_CODES for code in errors), errors
        return [p for p, a in zip(pending, answers, strict=True) if "Error" in a]

    pending = [{"Statement": statement, "Parameters": [{"S": "ddbnb"}, it["pk"], it["sk"]]} for it in items]
    stalled, _ = retry_until_stalled(pending, send, backoff)
    assert not stalled, f"{len(stalled)} statements still throttled"


_CHUNK_WRITERS = {"batch": _put_chunk, "conditional": _update_chunk}


def _ceiling_segment(args: tuple[str, int, int, str]) -> int:
    """Scan one segment and write every item back with a new attribute, all in wire format."""
    from ddbnb.worker.collector import settle_collector
    from ddbnb.worker.segment import WRITE_THREADS
    from ddbnb.worker.wire import WireClient
    from ddbnb.worker.writes import BATCH_SIZE, Backoff

    settle_collector()  # as ddbnb's own workers do
    table, segment, total, mode = args
    client, backoff, count, write = WireClient(), Backoff(), 0, _CHUNK_WRITERS[mode]

    def read(cursor: Any) -> Any:
        payload: dict[str, Any] = {"TableName": table, "Segment": segment, "TotalSegments": total}
        if cursor:
            payload["ExclusiveStartKey"] = cursor
        return client.call("Scan", payload)

    with ThreadPoolExecutor(WRITE_THREADS) as writers, ThreadPoolExecutor(1) as reader:
        ahead: Future[Any] | None = reader.submit(read, None)
        while ahead is not None:
            page = ahead.result()
            cursor = page.get("LastEvaluatedKey")
            ahead = reader.submit(read, cursor) if cursor else None  # the next page while this one is written
            items = page["Items"]
            chunks = [items[i : i + BATCH_SIZE] for i in range(0, len(items), BATCH_SIZE)]
            list(writers.map(lambda chunk: write(client, table, chunk, backoff), chunks))
            count += len(items)
    return count


def migration_ceiling(table: str, segments: int, processes: int, mode: str = "batch") -> dict[str, Any]:
    """ddbnb's pipeline (parallel scan, read-ahead, 25 writes a call on 4 threads) with no deserialization,
    transform or bookkeeping: the server does the same work as in the ddbnb case of the same ``mode``."""
    return _over_segments(_ceiling_segment, table, segments, processes, mode)


# -- ddbnb -------------------------------------------------------------------------------------------------
def ddbnb_migrate(
    table: str,
    segments: int = 0,
    processes: int = 0,
    mode: str = "batch",
    view: str = "off",
    journal: bool = True,
    run_dir: str = "",
) -> dict[str, Any]:
    """The migration through the public API, with the plan ddbnb chooses (unless told).

    ``view`` is the live view's mode (``widget``, ``lines``), or ``off`` for none.
    """
    import ddbnb

    if view != "off":
        os.environ.update(DDBNB_PROGRESS=view, DDBNB_PROGRESS_INTERVAL="1")
    plan = ddbnb.plan_migration(
        table,
        "bench/transforms.py:set_flag",
        total_segments=segments,
        max_concurrency=processes,
        write_mode=mode,
        journal=journal,
    )
    started = time.perf_counter()
    summary = ddbnb.migrate(
        plan,
        execute=True,
        run_dir=run_dir or tempfile.mkdtemp(prefix="bench-run-"),
        progress=view != "off",
        require_dry_run=False,
    )
    seconds = time.perf_counter() - started
    assert summary is not None
    return {
        "items": summary["scanned"],
        "seconds": seconds,
        "written": summary["written"],
        "segments": plan.total_segments,
        "concurrency": plan.max_concurrency,
    }


def ddbnb_rollback(run_dir: str, processes: int = 0, mode: str = "conditional") -> dict[str, Any]:
    """The rollback of the migration in ``run_dir``, through the public API."""
    import ddbnb

    started = time.perf_counter()
    summary = ddbnb.rollback(run_dir, execute=True, write_mode=mode, max_concurrency=processes, progress=False)
    return {"items": summary["scanned"], "seconds": time.perf_counter() - started, "written": summary["written"]}


# -- ddbnb against the capacity emulation --------------------------------------------------------------------
def capacity(table: str, share: float, write_units: float) -> dict[str, Any]:
    """ddbnb through the capacity emulation at ``write_units`` per second, with ``capacity_share``."""
    import ddbnb
    from ddbnb.emulation.capacity_proxy import CapacityProxy

    proxy = CapacityProxy(os.environ["AWS_ENDPOINT_URL_DYNAMODB"], read_units=0, write_units=write_units).start()
    os.environ["AWS_ENDPOINT_URL_DYNAMODB"] = proxy.url  # the worker processes inherit it
    # Batch writes, as when this case's targets were set: the emulation charges a PartiQL update by its
    # parameters, not by the whole item as DynamoDB does, so a conditional run would look underused.
    plan = ddbnb.plan_migration(table, "bench/transforms.py:set_flag", capacity_share=share, write_mode="batch")
    started = time.perf_counter()
    summary = ddbnb.migrate(
        plan,
        execute=True,
        run_dir=tempfile.mkdtemp(prefix="bench-run-"),
        progress=False,
        require_dry_run=False,
    )
    seconds = time.perf_counter() - started
    assert summary is not None
    stats, steady = proxy.stats(table), proxy.steady_write_rate(table)
    proxy.stop()
    return {
        "items": summary["scanned"],
        "seconds": seconds,
        "written": summary["written"],
        "write_units_per_s": steady,
        "capacity": write_units,
        "write_calls": stats["write_calls"],
        "throttled_writes": stats["throttled_writes"],
        "share": share,
    }


# -- seed-style baseline -----------------------------------------------------------------------------------
def _seed_segment(args: tuple[str, int, int]) -> int:
    import boto3
    from botocore.config import Config

    table_name, segment, total = args
    table = boto3.resource("dynamodb", config=Config(max_pool_connections=256)).Table(table_name)
    kwargs: dict[str, Any] = {"Segment": segment, "TotalSegments": total}
    count = 0
    with ThreadPoolExecutor(256) as pool:
        while True:
            page = table.scan(**kwargs)
            items = page["Items"]
            for item in items:
                item["flag"] = "seed"
            list(pool.map(lambda it: table.put_item(Item=it), items))  # the whole page in flight at once
            count += len(items)
            if "LastEvaluatedKey" not in page:
                return count
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]  # the seed forgot this line


def seed_style(table: str, segments: int, processes: int) -> dict[str, Any]:
    """The seed's algorithm: scan a page, then one PutItem per item, all in flight; segments in parallel."""
    return _over_segments(_seed_segment, table, segments, processes)


# -- awswrangler baseline ----------------------------------------------------------------------------------
def _plain(value: Any) -> Any:
    import numpy

    if isinstance(value, numpy.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def awswrangler_migrate(table: str) -> dict[str, Any]:
    """What a pandas user reaches for: read_items, set a column, put_df."""
    import awswrangler as wr

    started = time.perf_counter()
    frame = wr.dynamodb.read_items(table_name=table, allow_full_scan=True)
    frame["flag"] = "wrangler"
    # The glue a pandas user has to add: read_items hands sets and lists back as numpy
    # arrays, which put_df's serializer refuses. This table's sets are tags and ratings.
    for column in frame.columns:
        frame[column] = frame[column].map(_plain)
    for column in ("tags", "ratings"):
        frame[column] = frame[column].map(set)
    wr.dynamodb.put_df(frame, table_name=table)
    seconds = time.perf_counter() - started
    return {"items": len(frame), "seconds": seconds}


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "case", choices=["write", "scan", "ceiling", "ddbnb", "rollback", "capacity", "seed_style", "awswrangler"]
    )
    parser.add_argument("--table", required=True)
    parser.add_argument("--items", type=int, default=0)
    parser.add_argument("--processes", type=int, default=0, help="0: ddbnb chooses")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--segments", type=int, default=0, help="0: ddbnb chooses")
    parser.add_argument("--mode", default="batch", choices=["batch", "conditional"], help="ddbnb's write mode")
    parser.add_argument("--share", type=float, default=1.0, help="capacity_share, for the capacity case")
    parser.add_argument("--write-units", type=float, default=1_000, help="the emulated capacity")
    parser.add_argument("--view", default="off", choices=["off", "widget", "lines"], help="ddbnb's live view")
    parser.add_argument("--no-journal", action="store_true", help="ddbnb: migrate with journal=False")
    parser.add_argument("--run-dir", default="", help="ddbnb: the run folder; rollback: the run to undo")
    args = parser.parse_args(argv)
    cpu_before = process_tree_cpu()
    if args.case == "write":
        result = write(args.table, args.items, args.processes, args.threads)
    elif args.case == "scan":
        result = scan(args.table, args.segments, args.processes)
    elif args.case == "ddbnb":
        result = ddbnb_migrate(
            args.table,
            args.segments if args.segments != 4 else 0,
            args.processes if args.processes != 2 else 0,
            args.mode,
            args.view,
            journal=not args.no_journal,
            run_dir=args.run_dir,
        )
    elif args.case == "rollback":
        result = ddbnb_rollback(args.run_dir, args.processes, args.mode)
    elif args.case == "ceiling":
        result = migration_ceiling(args.table, args.segments, args.processes, args.mode)
    elif args.case == "capacity":
        result = capacity(args.table, args.share, args.write_units)
    elif args.case == "seed_style":
        result = seed_style(args.table, args.segments, args.processes)
    else:
        result = awswrangler_migrate(args.table)
    result.setdefault("cpu_s", process_tree_cpu() - cpu_before)
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
