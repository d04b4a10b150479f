"""The segment worker: one parallel-scan segment, from a cursor, until done or a deadline.

Only the standard library and boto3: this module ships inside the Lambda package
and is the same code the local engine runs.

Event (a Map item plus run settings)::

    {table, destination?, segment, total_segments, transform, write_mode,
     version_attribute?, rate_limit, read_units_per_s?, write_units_per_s?,
     limits?: {share, max_read_units, max_write_units, divide},
     failures_to?, missing_to?, journal?: {to}, cursor?, totals?, page_size?,
     hot_items?, key_range?: {key, after, until}}

``write_mode`` defaults to ``"conditional"``. ``hot_items`` makes a scan segment
cut a partition key past that many items into key-range units
(:mod:`ddbnb.worker.hotkeys`); an event with ``key_range`` is such a unit and
reads its range with Query. With ``limits`` (the aws engine),
each invocation derives its read and write budgets from the tables' capacity
as it is when it starts, instead of ``read_units_per_s`` / ``write_units_per_s``.

Result::

    {segment, total_segments, cursor, scanned, written, unchanged, deleted,
     failed, conflicts, throttled, read_units, write_units, pages, invocations,
     stalls, started_at, finished_at, failures: [{key, wire, error}] (bounded),
     timeline: [[began, ended, scanned, written, unchanged, deleted, failed,
     write_units, throttled], ...] (bounded), journal_objects, journal_bytes,
     missing, passed, splits: [{segment, key, after, until}], key_range?}

``cursor`` is None when the segment is finished. Otherwise call again with the
result as ``totals`` and its ``cursor``: counts accumulate across calls.

A page whose writes stall under throttling is not skipped: the call returns the
cursor from *before* that page, so the next call reads it again. Items of it
that were already written come back unchanged (the transform is idempotent:
the dry run checks it). They count once as written and once more as unchanged.
After :data:`MAX_STALLS` calls in a row without a finished page the segment
fails with ThrottledError, its cursor kept in the error.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, MutableMapping
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any

import boto3
from botocore.exceptions import ClientError

from ddbnb.exceptions import ThrottledError, TransformFailingError
from ddbnb.worker import params
from ddbnb.worker.budgets import budgets_now
from ddbnb.worker.capacity import PARTITION_READ_UNITS, Bucket, Limits, limits_for, slow_down
from ddbnb.worker.failures import FailureLog
from ddbnb.worker.hotkeys import HotKeys, cut, in_range, range_query, range_segment
from ddbnb.worker.items import deserialize, format_key
from ddbnb.worker.journal import JournalWriter
from ddbnb.worker.page import PageTally, PageWriter
from ddbnb.worker.reads import key_text, read_items
from ddbnb.worker.tables import TableFacts, worker_facts
from ddbnb.worker.transforms import load_transform
from ddbnb.worker.wire import item_texts, shared_client
from ddbnb.worker.writes import Backoff, call_patiently, is_throttle, key_range_only, merge_counts

#: Concurrent write calls per worker.
WRITE_THREADS = 4
#: Calls in a row that finish no page (every write throttled) before the segment fails.
MAX_STALLS = 20
#: A segment whose first this-many items all failed stops the run (TransformFailingError).
FAIL_FAST_ITEMS = 100
#: Seconds between two progress reports from within a page (a big page can take a minute to write).
PROGRESS_S = 2.0

COUNTERS = (
    "scanned",
    "written",
    "unchanged",
    "deleted",
    "failed",
    "conflicts",
    "throttled",
    "pages",
    "stalls",
    "journal_objects",
    "journal_bytes",
    "missing",
    "passed",
)


def validate_event(event: Mapping[str, Any]) -> None:
    """Raise InvalidParameterError when the event cannot be processed."""
    params.check_table_name("table", event.get("table"))
    if event.get("destination") is not None:
        params.check_table_name("destination", event.get("destination"))
    total = params.check_total_segments(event.get("total_segments"))
    if event.get("key_range"):  # a key-range unit: numbered past the scan segments
        params.check_int("segment", event.get("segment"), total)
    else:
        params.check_int("segment", event.get("segment"), 0, total - 1)
    params.check_int("hot_items", event.get("hot_items") or 0, 0)
    params.check_choice("write_mode", event.get("write_mode", "conditional"), params.WRITE_MODES)
    params.check_attribute("version_attribute", event.get("version_attribute") or "")
    params.check_rate("rate_limit", event.get("rate_limit", 0))
    params.check_rate("read_units_per_s", event.get("read_units_per_s") or 0)
    params.check_rate("write_units_per_s", event.get("write_units_per_s") or 0)
    if event.get("page_size"):
        params.check_int("page_size", event.get("page_size"), 1)


def now() -> str:
    """The time now, as results record it (UTC, ISO 8601, milliseconds)."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def start_result(event: Mapping[str, Any]) -> dict[str, Any]:
    """A segment's result at the start of an invocation: the counters carried in ``totals``, or zero."""
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
    result["started_at"] = totals.get("started_at") or now()
    result["failures"] = list(totals.get("failures", []))
    result["timeline"] = [list(entry) for entry in totals.get("timeline", [])]
    result["splits"] = [dict(split) for split in totals.get("splits", [])]
    result["cut_read_units"] = float(totals.get("cut_read_units", 0.0))
    result["throttle_reasons"] = dict(totals.get("throttle_reasons") or {})
    if event.get("key_range"):
        result["key_range"] = event["key_range"]
    return result


#: Entries a segment's timeline keeps (each ~60 bytes of JSON: a result stays far below Step Functions' 256 KiB).
MAX_TIMELINE = 400
#: What each timeline entry holds, after the page's start and end (epoch seconds).
TIMELINE = ("scanned", "written", "unchanged", "deleted", "failed", "write_units", "throttled")


def add_to_timeline(timeline: list[list[float]], began: float, ended: float, counts: Mapping[str, float]) -> None:
    """Record one page: when it was processed and what it did. Past :data:`MAX_TIMELINE` entries,
    neighbours are merged two by two, so a long segment keeps its whole span at a coarser grain."""
    timeline.append([round(began, 3), round(ended, 3), *(round(float(counts.get(n, 0)), 1) for n in TIMELINE)])
    if len(timeline) > MAX_TIMELINE:
        merged = []
        for first, second in zip(timeline[0::2], timeline[1::2], strict=False):
            merged.append([first[0], second[1], *(a + b for a, b in zip(first[2:], second[2:], strict=True))])
        if len(timeline) % 2:
            merged.append(timeline[-1])
        timeline[:] = merged


class SegmentWork:
    """State for one invocation over one segment."""

    def __init__(
        self,
        event: Mapping[str, Any],
        boto3_session: boto3.Session | None,
        limits: Limits | None = None,
        known: MutableMapping[str, TableFacts] | None = None,
    ) -> None:
        self.event = event
        self.dynamodb = shared_client(boto3_session)
        self.table = event["table"]
        source = worker_facts(self.dynamodb, self.table, known=known)
        target = event.get("destination") or self.table
        target_facts = source if target == self.table else worker_facts(self.dynamodb, target, "destination", known)
        self.limits = limits or limits_for(event, budgets=budgets_now(event, source, target_facts))
        self.read_backoff = Backoff(on_throttle=self._read_throttled)
        self.read_estimate = 0.0  # read units of the last page: the next page's reservation
        self.read_throttles = 0
        self.writer = PageWriter(
            dynamodb=self.dynamodb,
            transform=load_transform(event["transform"]),
            table=self.table,
            keys=source.key_names,
            target=target,
            target_keys=target_facts.key_schema,
            mode=event.get("write_mode", "conditional"),
            version_attribute=event.get("version_attribute") or "",
            backoff=Backoff(),
            items_bucket=Bucket(float(event.get("rate_limit", 0) or 0)),
            write_bucket=self.limits.write,
            read_bucket=self.limits.read,
            range_bucket=self.limits.range_write,
        )
        self.result = start_result(event)
        self.key_names = source.key_names
        self.hot = HotKeys.for_event(event, source.key_names, self.result["splits"])
        self.failures = FailureLog(self.result, event.get("failures_to"), boto3_session)
        self.on_page: Callable[[dict[str, Any]], None] | None = None
        self.in_page = 0  # items of the page being written that their calls have settled
        self.reported = time.monotonic()
        self.progress_lock = threading.Lock()
        self.writer.on_call = self._settled
        journal_to = (event.get("journal") or {}).get("to")
        if journal_to:
            self.writer.journal = JournalWriter(journal_to, int(event["segment"]), boto3_session)

    def add_throttles(self) -> None:
        """Add this invocation's throttled reads, and its throttles by reason, to the result."""
        self.result["throttled"] += self.read_throttles
        for backoff in (self.read_backoff, self.writer.backoff):
            merge_counts(self.result["throttle_reasons"], backoff.take_reasons())
        self.read_throttles = 0

    def report(self, in_page: int = 0) -> None:
        """Tell ``on_page`` the running totals; ``in_page`` items of the current page are counted as handled."""
        if self.on_page is None:
            return
        totals = {name: value for name, value in self.result.items() if name not in ("failures", "timeline")}
        totals["scanned"] += in_page
        self.on_page(totals)
        self.reported = time.monotonic()

    def _settled(self, items: int) -> None:
        """A write call settled ``items``: report within the page at most every :data:`PROGRESS_S`."""
        with self.progress_lock:
            self.in_page += items
            if time.monotonic() - self.reported >= PROGRESS_S:
                self.report(self.in_page)

    def _read_throttled(self, _: int, reasons: tuple[str, ...]) -> None:
        """A read was throttled: slow reads down (only this worker's, when DynamoDB said its key range
        alone is hot), and pace its retry like a first attempt."""
        slowed = slow_down(self.limits.read, self.limits.range_read, key_range_only(reasons), PARTITION_READ_UNITS)
        slowed.acquire(self.read_estimate)

    def read_page(self, cursor: dict[str, Any] | None) -> dict[str, Any]:
        """Read one page from ``cursor`` (Scan, or Query for a key-range unit); its read units count now,
        its items once it is processed."""
        if self.event.get("key_range"):
            kwargs = {**range_query(self.event, self.key_names, cursor), "ReturnConsumedCapacity": "TOTAL"}
            operation = "Query"
        else:
            kwargs = {
                "TableName": self.table,
                "Segment": self.event["segment"],
                "TotalSegments": self.event["total_segments"],
                "ReturnConsumedCapacity": "TOTAL",
            }
            if cursor:
                kwargs["ExclusiveStartKey"] = cursor
            operation = "Scan"
        if self.event.get("page_size"):
            kwargs["Limit"] = self.event["page_size"]
        return self.read(operation, kwargs)

    def read(self, operation: str, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Send one read (``operation``: Scan or Query), paced by the read budget and retried under
        throttling; its read units count now."""
        buckets = (self.limits.range_read, self.limits.read)  # its own range first, as for writes
        for bucket in buckets:
            bucket.acquire(self.read_estimate)
        try:
            page, throttled = call_patiently(lambda: self.dynamodb.call(operation, kwargs), self.read_backoff)
        except ClientError:
            for bucket in buckets:
                bucket.settle(self.read_estimate, 0)
            raise
        units = float(page.get("ConsumedCapacity", {}).get("CapacityUnits", 0))
        for bucket in buckets:
            bucket.settle(self.read_estimate, units)
            if not throttled:
                bucket.calm(units)
        self.read_estimate = units
        self.result["read_units"] += units
        self.read_throttles += throttled
        return page

    def sift(self, page: dict[str, Any]) -> tuple[list[dict[str, Any]], int, dict[str, Any] | None]:
        """A page's items to handle, the items left to key ranges, and the cursor to go on from."""
        items, cursor = page.get("Items", []), page.get("LastEvaluatedKey")
        if self.event.get("key_range"):
            kept = in_range(self.event, self.key_names, items)
            return kept, len(items) - len(kept), cursor
        if self.hot is None:
            return items, 0, cursor
        sifted = self.hot.sift(items)
        if sifted.hot is not None:
            last = self.split(sifted.hot, sifted.last_handled)
            pk, sk = self.hot.key_names
            if cursor and items[-1].get(pk) == sifted.hot[pk]:  # the page ends in the key: jump past it
                cursor = {pk: sifted.hot[pk], sk: last}
        return sifted.items, sifted.passed, cursor

    def split(self, hot: dict[str, Any], last_handled: dict[str, Any] | None) -> Any:
        """Cut the rest of ``hot``'s partition key into key-range units (recorded in the result's
        ``splits``); return the last sort key the cut read."""
        assert self.hot is not None
        units_before = self.result["read_units"]
        ranges, last, _ = cut(
            lambda kwargs: self.read("Query", kwargs),
            self.table,
            self.hot.key_names,
            hot,
            last_handled,
            self.hot.hot_items * 2,
        )
        self.result["cut_read_units"] += self.result["read_units"] - units_before
        first = len(self.result["splits"])
        total = int(self.event["total_segments"])
        for index, unit in enumerate(ranges, first):
            self.result["splits"].append({"segment": range_segment(int(self.event["segment"]), index, total), **unit})
        self.hot.cut_keys.append(ranges[0]["key"])
        return last

    def count(self, tally: PageTally, scanned: int, began: float) -> None:
        """Add a page's tally (processed from ``began``, a ``time.time()``, until now) to the totals and the
        timeline. A stalled page adds only the writes it really made."""
        result = self.result
        # Copying, deletes are items left out, not writes: a stalled page's count when the page is done.
        deleted = tally.deleted if self.writer.in_place or not tally.stalled else 0
        done = {
            "scanned": 0 if tally.stalled else scanned,
            "written": tally.written,
            "unchanged": 0 if tally.stalled else tally.unchanged,
            "deleted": deleted,
            "failed": 0 if tally.stalled else len(tally.failures),
            "write_units": tally.write_units,
            "throttled": tally.throttled,
        }
        add_to_timeline(result["timeline"], began, time.time(), done)
        journal = self.writer.journal
        if journal is not None:
            result["journal_objects"] += journal.objects
            result["journal_bytes"] += journal.bytes
            journal.objects = journal.bytes = 0
        result["written"] += tally.written
        result["conflicts"] += tally.conflicts
        result["throttled"] += tally.throttled
        result["write_units"] += tally.write_units
        result["deleted"] += deleted
        if tally.stalled:
            return
        result["unchanged"] += tally.unchanged
        result["scanned"] += scanned
        result["pages"] += 1
        result["stalls"] = 0
        self.failures.add([self.failures.entry(key, error) for key, error in tally.failures])

    def check_not_failing_everything(self, tally: PageTally) -> None:
        """Stop the run when the first :data:`FAIL_FAST_ITEMS` or more items all failed, none done."""
        result = self.result
        done = result["written"] + result["unchanged"] + result["deleted"]
        if tally.failures and not done and result["failed"] == result["scanned"] >= FAIL_FAST_ITEMS:
            key, error = tally.failures[0]
            first = format_key(deserialize(key))
            raise TransformFailingError(int(self.event["segment"]), result["scanned"], first, error)


def process_segment(
    event: Mapping[str, Any],
    *,
    deadline: float | None = None,
    on_page: Callable[[dict[str, Any]], None] | None = None,
    checkpoint: Callable[[dict[str, Any]], None] | None = None,
    limits: Limits | None = None,
    boto3_session: boto3.Session | None = None,
    known_tables: MutableMapping[str, TableFacts] | None = None,
) -> dict[str, Any]:
    """Process one segment from ``event['cursor']`` until it ends or ``deadline`` nears.

    ``deadline`` is a ``time.time()`` value; the worker always finishes at least one
    page, then stops when the next page might not finish in time (twice the slowest
    page so far) and returns its cursor. The next page is read while the current
    one is written; a page read ahead when time runs out is dropped, not skipped:
    the cursor still points before it. ``on_page`` is called after each page
    with the segment's running totals (the result so far, without its failure
    list), for live progress. ``checkpoint``, when given, is
    called after every finished page with the result so far (its ``cursor`` is
    where to go on), after that page's failures are logged. ``limits`` are the
    read and write buckets (capacity units per second) when the engine shares
    them between workers; by default they come from the event's
    ``read_units_per_s`` and ``write_units_per_s``. ``known_tables`` keeps the
    tables' facts between invocations of one run (see
    :func:`~ddbnb.worker.tables.worker_facts`); by default each describes them.
    """
    validate_event(event)
    work = SegmentWork(event, boto3_session, limits, known_tables)
    work.on_page = on_page
    cursor = event.get("cursor") or None
    slowest = 0.0
    stalled = interrupted = False

    def out_of_time() -> bool:
        return deadline is not None and time.time() + 2 * slowest > deadline

    with ThreadPoolExecutor(WRITE_THREADS) as pool, ThreadPoolExecutor(1) as reader:
        ahead: Future[dict[str, Any]] | None = reader.submit(work.read_page, cursor)
        while ahead is not None:
            started = time.monotonic()
            try:
                page = ahead.result()
                began = time.time()
            except ClientError as exc:
                if not is_throttle(exc):
                    raise
                stalled = True  # reads throttled for every retry: this page is read again later
                ahead = None
                break
            items, passed, next_cursor = work.sift(page)
            # Read the next page while this one is transformed and written.
            ahead = reader.submit(work.read_page, next_cursor) if next_cursor and not out_of_time() else None
            work.in_page = 0
            texts = item_texts(page) if work.writer.journal is not None else None  # only the journal uses them
            tally = work.writer.write_page(items, pool, texts)
            work.count(tally, len(items), began)
            if tally.stalled:  # the cursor stays before this page: it is read again
                if work.writer.past_deadline():
                    interrupted = True  # out of time: no stall
                else:
                    stalled = True
                break
            work.result["passed"] += passed
            work.check_not_failing_everything(tally)
            cursor = next_cursor
            work.add_throttles()  # so the checkpoint and the live view have them by reason
            if checkpoint is not None:
                work.failures.flush()
                checkpoint({**work.result, "cursor": cursor, "finished_at": now()})
            work.report()
            work.writer.deadline = deadline  # one page always finishes; later ones stop writing at the deadline
            slowest = max(slowest, time.monotonic() - started)
            if cursor is None or out_of_time():
                break
        if ahead is not None:
            ahead.exception()  # read ahead but not processed: the cursor still points before it
    work.failures.flush()
    work.add_throttles()
    if stalled:
        work.result["stalls"] += 1
        if work.result["stalls"] >= MAX_STALLS:
            raise ThrottledError(int(event["segment"]), work.result["stalls"], cursor)
    if stalled or interrupted:
        work.result["cursor"] = cursor if cursor is not None else {}
    else:
        work.result["cursor"] = cursor
    work.result["finished_at"] = now()
    return work.result


def process_keys(
    event: Mapping[str, Any], keys: list[dict[str, Any]], *, boto3_session: boto3.Session | None = None
) -> dict[str, Any]:
    """Read exactly the items with ``keys`` (wire format) again, transform and write them.

    ``event`` is a segment event (its segment and cursor are not used). A key
    whose item no longer exists is counted as ``missing`` and logged (to
    ``event['missing_to']``), never skipped in silence. Returns a result shaped
    like a segment's.
    """
    validate_event(event)
    work = SegmentWork(event, boto3_session)
    missing = FailureLog(work.result, event.get("missing_to"), boto3_session, counter="missing", listed="missing_keys")
    with ThreadPoolExecutor(WRITE_THREADS) as pool:
        gone = rewrite_keys(work, keys, pool)
    missing.add([missing.entry(key, "missing: no item has this key any more (deleted since?)") for key in gone])
    work.failures.flush()
    missing.flush()
    work.add_throttles()
    work.result["finished_at"] = now()
    return work.result


def rewrite_keys(work: SegmentWork, keys: list[dict[str, Any]], pool: ThreadPoolExecutor) -> list[dict[str, Any]]:
    """Read the items with ``keys`` again (consistent), transform and write them, counting into
    ``work.result``; return the keys that have no item. Throttled reads or writes are tried again
    (:data:`MAX_STALLS` times, then ThrottledError)."""
    left = list(keys)
    gone: list[dict[str, Any]] = []
    for attempt in range(MAX_STALLS):
        items, missing, stalled = _read_keys(work, left)
        gone.extend(missing)
        left = [key for key in left if key not in missing]
        began = time.time()
        tally = work.writer.write_page(items, pool) if not stalled else None
        if tally is not None:
            work.count(tally, len(items), began)
            if not tally.stalled:
                return gone
        if attempt + 1 == MAX_STALLS:
            raise ThrottledError(int(work.event["segment"]), MAX_STALLS, None)
    return gone


def _read_keys(
    work: SegmentWork, keys: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], bool]:
    """The items with ``keys`` as they are now, the keys that have none, and whether the reads stalled."""
    names = work.writer.keys
    read = read_items(work.dynamodb, work.table, keys, names, work.limits.read, work.read_backoff)
    work.result["read_units"] += read.read_units
    work.read_throttles += read.throttled
    if read.stalled:
        return [], [], True
    texts = [key_text(key, names) for key in keys]
    items = [read.found[text] for text in texts if text in read.found]
    gone = [key for key, text in zip(keys, texts, strict=True) if text not in read.found]
    return items, gone, False
