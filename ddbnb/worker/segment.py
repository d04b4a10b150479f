"""The segment worker: one parallel-scan segment, from a cursor, until done or a deadline.

Only the standard library and boto3: this module ships inside the Lambda package
and is the same code the local engine runs.

Event (a Map item plus run settings)::

    {table, destination?, segment, total_segments, transform, write_mode,
     rate_limit, cursor?, totals?, page_size?}

Result::

    {segment, total_segments, cursor, scanned, written, unchanged, deleted,
     failed, conflicts, read_units, write_units, pages, invocations,
     started_at, finished_at, failures: [{key, error}]}

``cursor`` is None when the segment is finished. Otherwise call again with the
result as ``totals`` and its ``cursor``: counts accumulate across calls.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any

import boto3

from ddbnb.worker import params
from ddbnb.worker.evaluate import DELETE, PUT, UNCHANGED, evaluate
from ddbnb.worker.items import deserialize, format_key
from ddbnb.worker.tables import table_facts
from ddbnb.worker.transforms import load_transform
from ddbnb.worker.wire import WireClient
from ddbnb.worker.writes import BATCH_SIZE, Backoff, RateLimiter, Request, WriteOutcome, write_batch

#: At most this many failures are listed per segment; the ``failed`` count is exact.
MAX_FAILURES = 100
#: ...and they take at most this many bytes of JSON, so a result stays far below
#: Step Functions' 256 KiB state limit even with 2 KB keys.
MAX_FAILURE_BYTES = 64 * 1024
#: Longer error messages are cut to this many characters.
MAX_ERROR_CHARS = 400
#: Concurrent BatchWriteItem calls per worker.
WRITE_THREADS = 4

COUNTERS = ("scanned", "written", "unchanged", "deleted", "failed", "conflicts", "pages")


def validate_event(event: Mapping[str, Any]) -> None:
    """Raise InvalidParameterError when the event cannot be processed."""
    params.check_table_name("table", event.get("table"))
    if event.get("destination") is not None:
        params.check_table_name("destination", event.get("destination"))
    total = params.check_total_segments(event.get("total_segments"))
    params.check_int("segment", event.get("segment"), 0, total - 1)
    params.check_choice("write_mode", event.get("write_mode", "batch"), params.WRITE_MODES)
    params.check_rate("rate_limit", event.get("rate_limit", 0))
    if event.get("page_size") is not None:
        params.check_int("page_size", event.get("page_size"), 1)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _start_result(event: Mapping[str, Any]) -> dict[str, Any]:
    totals = event.get("totals") or {}
    result: dict[str, Any] = {
        "segment": event["segment"],
        "total_segments": event["total_segments"],
        "cursor": None,
    }
    for name in COUNTERS:
        result[name] = int(totals.get(name, 0))
    result["read_units"] = float(totals.get("read_units", 0.0))
    result["write_units"] = float(totals.get("write_units", 0.0))
    result["invocations"] = int(totals.get("invocations", 0)) + 1
    result["started_at"] = totals.get("started_at") or _now()
    result["failures"] = list(totals.get("failures", []))
    return result


class _Segment:
    """State for one invocation over one segment."""

    def __init__(self, event: Mapping[str, Any], boto3_session: boto3.Session | None) -> None:
        self.event = event
        self.dynamodb = WireClient(boto3_session)
        self.table = event["table"]
        self.target = event.get("destination") or self.table
        self.in_place = self.target == self.table
        self.keys = table_facts(self.dynamodb.client, self.table).key_names
        if not self.in_place:
            table_facts(self.dynamodb.client, self.target)  # fail fast when it is missing
        self.transform = load_transform(event["transform"])
        self.limiter = RateLimiter(float(event.get("rate_limit", 0) or 0))
        self.backoff = Backoff()
        self.result = _start_result(event)

    def fail(self, key: Mapping[str, Any], error: str) -> None:
        self.result["failed"] += 1
        failures = self.result["failures"]
        if len(failures) >= MAX_FAILURES:
            return
        entry = {"key": format_key(key), "error": error[:MAX_ERROR_CHARS]}
        size = len(json.dumps(entry, default=str))
        if sum(len(json.dumps(f, default=str)) for f in failures) + size <= MAX_FAILURE_BYTES:
            failures.append(entry)

    def read_page(self, cursor: dict[str, Any] | None) -> dict[str, Any]:
        """Scan one page from ``cursor``; its read units count now, its items once it is processed."""
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "Segment": self.event["segment"],
            "TotalSegments": self.event["total_segments"],
            "ReturnConsumedCapacity": "TOTAL",
        }
        if cursor:
            kwargs["ExclusiveStartKey"] = cursor
        if self.event.get("page_size"):
            kwargs["Limit"] = self.event["page_size"]
        page: dict[str, Any] = self.dynamodb.call("Scan", kwargs)
        self.result["read_units"] += float(page.get("ConsumedCapacity", {}).get("CapacityUnits", 0))
        return page

    def plan_writes(self, items: list[dict[str, Any]]) -> list[Request]:
        """Apply the transform to a page and return the write requests it needs."""
        requests: list[Request] = []
        for raw in items:
            verdict = evaluate(self.transform, raw, self.keys, in_place=self.in_place, check_size=False)
            if verdict.action == PUT:
                requests.append({"PutRequest": {"Item": verdict.wire}})
            elif verdict.action == DELETE and not self.in_place:
                self.result["deleted"] += 1  # left out of the destination
            elif verdict.action == DELETE:
                requests.append({"DeleteRequest": {"Key": {name: raw[name] for name in self.keys}}})
            elif verdict.action == UNCHANGED:
                self.result["unchanged"] += 1
            else:
                self.fail({name: verdict.before[name] for name in self.keys}, f"{verdict.rule}: {verdict.message}")
        return requests

    def write(self, requests: list[Request], pool: ThreadPoolExecutor) -> None:
        chunks = [requests[i : i + BATCH_SIZE] for i in range(0, len(requests), BATCH_SIZE)]

        def one(chunk: list[Request]) -> WriteOutcome:
            self.limiter.acquire(len(chunk))
            return write_batch(self.dynamodb, self.target, chunk, self.backoff)

        outcome = WriteOutcome()
        for part in pool.map(one, chunks):
            outcome.add(part)
        self.result["written"] += outcome.puts
        self.result["deleted"] += outcome.deletes
        self.result["write_units"] += outcome.write_units
        for request, error in outcome.failures:
            raw = request["PutRequest"]["Item"] if "PutRequest" in request else request["DeleteRequest"]["Key"]
            self.fail(deserialize({n: raw[n] for n in self.keys if n in raw}), f"write_failed: {error}")


def process_segment(
    event: Mapping[str, Any],
    *,
    deadline: float | None = None,
    on_page: Callable[[int], None] | None = None,
    boto3_session: boto3.Session | None = None,
) -> dict[str, Any]:
    """Process one segment from ``event['cursor']`` until it ends or ``deadline`` nears.

    ``deadline`` is a ``time.time()`` value; the worker always finishes at least one
    page, then stops when the next page might not finish in time (twice the slowest
    page so far) and returns its cursor. The next page is read while the current
    one is written; a page read ahead when time runs out is dropped, not skipped:
    the cursor still points before it. ``on_page`` is called with the number of
    items scanned in each page, for progress bars.
    """
    validate_event(event)
    work = _Segment(event, boto3_session)
    cursor = event.get("cursor") or None
    slowest = 0.0

    def out_of_time() -> bool:
        return deadline is not None and time.time() + 2 * slowest > deadline

    with ThreadPoolExecutor(WRITE_THREADS) as pool, ThreadPoolExecutor(1) as reader:
        ahead: Future[dict[str, Any]] | None = reader.submit(work.read_page, cursor)
        while ahead is not None:
            started = time.monotonic()
            page = ahead.result()
            items = page.get("Items", [])
            next_cursor = page.get("LastEvaluatedKey")
            # Read the next page while this one is transformed and written.
            ahead = reader.submit(work.read_page, next_cursor) if next_cursor and not out_of_time() else None
            work.write(work.plan_writes(items), pool)
            work.result["pages"] += 1
            work.result["scanned"] += len(items)
            cursor = next_cursor
            if on_page is not None:
                on_page(len(items))
            slowest = max(slowest, time.monotonic() - started)
            if cursor is None or out_of_time():
                break
        if ahead is not None:
            ahead.result()  # read ahead but not processed: the cursor still points before it
    work.result["cursor"] = cursor
    work.result["finished_at"] = _now()
    return work.result
