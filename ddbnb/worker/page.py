"""Transform one page of items and write what changed: in batches, or guarded for a live table.

Only the standard library and boto3: this module ships inside the Lambda package.

``batch`` writes whole items with BatchWriteItem (fastest; for tables nobody
else writes during the run). ``conditional`` writes only what the transform
changed, guarded by the values as read (:mod:`ddbnb.worker.conditional`); an
item that changed meanwhile is read again (strongly consistent), transformed
again and written again, up to :data:`CONFLICT_ROUNDS` times.

A page whose writes stall under throttling is reported as such (``stalled``),
never as failed items: the segment stops before it and reads it again later.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from ddbnb.worker.capacity import PARTITION_WRITE_UNITS, Bucket, slow_down
from ddbnb.worker.conditional import (
    Guarded,
    GuardedOutcome,
    UnwritableError,
    delete_write,
    insert_write,
    read_again,
    update_write,
    write_guarded,
)
from ddbnb.worker.evaluate import DELETE, PUT, UNCHANGED, Verdict, evaluate
from ddbnb.worker.items import deserialize, item_size, matches, write_units
from ddbnb.worker.journal import JournalWriter, entry, entry_for, item_digest
from ddbnb.worker.reads import key_text, read_items
from ddbnb.worker.wire import WireClient
from ddbnb.worker.writes import (
    BATCH_SIZE,
    Backoff,
    Request,
    WriteOutcome,
    is_throttle,
    key_range_only,
    write_batch,
)

#: Items of a worker's first page whose size estimates the first write's units (until a call says).
SIZE_SAMPLE = 32
#: How many times an item that keeps changing under the migration is read and written again.
CONFLICT_ROUNDS = 3

WireItem = dict[str, Any]


@dataclass
class PageTally:
    """What one page did. ``stalled``: some writes could not be sent; the page must be read again."""

    written: int = 0
    deleted: int = 0
    unchanged: int = 0
    conflicts: int = 0
    throttled: int = 0
    write_units: float = 0.0
    failures: list[tuple[WireItem, str]] = field(default_factory=list)  # (source key, reason)
    stalled: bool = False


def _key(item: Mapping[str, Any], names: Sequence[str]) -> WireItem:
    return {name: item[name] for name in names if name in item}


def _key_id(item: Mapping[str, Any], names: Sequence[str]) -> tuple[str, ...]:
    """A key as text, also for an item that lacks a key attribute (DynamoDB then refuses it, item by item)."""
    return tuple(json.dumps(item.get(name), sort_keys=True) for name in names)


@dataclass
class PageWriter:
    """Everything one segment needs to transform and write its pages."""

    dynamodb: WireClient
    transform: Callable[[dict[str, Any]], Any]
    table: str
    keys: tuple[str, ...]
    target: str
    target_keys: dict[str, str]  # name: "S" | "N" | "B"
    mode: str = "batch"
    version_attribute: str = ""
    backoff: Backoff = field(default_factory=Backoff)
    items_bucket: Bucket = field(default_factory=lambda: Bucket(0))  # rate_limit, in items per second
    write_bucket: Bucket = field(default_factory=lambda: Bucket(0))  # write units per second
    read_bucket: Bucket = field(default_factory=lambda: Bucket(0))  # read units per second (a batch copy's reads)
    range_bucket: Bucket = field(default_factory=lambda: Bucket(0))  # this worker's key range: off until it is hot
    deadline: float | None = None  # time.time() after which no write call starts
    units_per_item: float = 0.0  # what the last call consumed per item: the next reservation's estimate
    journal: JournalWriter | None = None  # where each page's before-images go, before its writes
    on_call: Callable[[int], None] | None = None  # told how many items each write call settled, for live progress
    texts: Mapping[int, tuple[WireItem, str]] = field(default_factory=dict)  # this page's items as read, as text

    def __post_init__(self) -> None:
        self.backoff.on_throttle = self._throttled

    def paced(self, count: int, send: Callable[[], Any], stalled: Callable[[], Any]) -> Any:
        """Send one write call of ``count`` items within the run's limits, or ``stalled()`` past the deadline.

        The limits are items per second and write units per second; the units are
        reserved from an estimate, settled with what DynamoDB reports, and the
        write bucket adapts to throttling (``backoff`` cuts it on each throttle).
        """
        self.items_bucket.acquire(count)
        reserved = count * self.units_per_item
        # The worker's own key range first: a worker slowed for a hot range holds none of the run's budget
        # while it waits.
        buckets = (self.range_bucket, self.write_bucket)
        for bucket in buckets:
            bucket.acquire(reserved)
        if self.past_deadline():
            for bucket in buckets:
                bucket.settle(reserved, 0)
            return stalled()  # out of time: the page is read again by the next call
        outcome = send()
        done = count - len(outcome.stalled)
        if self.on_call is not None:
            self.on_call(done)
        if outcome.write_units and done:
            self.units_per_item = outcome.write_units / done
        for bucket in buckets:
            bucket.settle(reserved, outcome.write_units)
            if not outcome.throttled:
                bucket.calm(outcome.write_units)
        return outcome

    def _throttled(self, refused: int, reasons: tuple[str, ...]) -> None:
        """Writes were refused: slow down (only this worker, when DynamoDB said its key range alone is hot;
        the run otherwise), and pace their retry like a first attempt."""
        slowed = slow_down(self.write_bucket, self.range_bucket, key_range_only(reasons), PARTITION_WRITE_UNITS)
        slowed.acquire(refused * self.units_per_item)

    def send_requests(self, requests: Sequence[Request], pool: ThreadPoolExecutor) -> WriteOutcome:
        """Send BatchWriteItem requests to the target, 25 a call on ``pool``, each call paced; one outcome."""
        chunks = [list(requests[i : i + BATCH_SIZE]) for i in range(0, len(requests), BATCH_SIZE)]

        def one(chunk: list[Request]) -> WriteOutcome:
            outcome: WriteOutcome = self.paced(
                len(chunk),
                lambda: write_batch(self.dynamodb, self.target, chunk, self.backoff),
                lambda: WriteOutcome(stalled=list(chunk)),
            )
            return outcome

        outcome = WriteOutcome()
        for part in pool.map(one, chunks):
            outcome.add(part)
        return outcome

    def send_guarded(self, writes: Sequence[Guarded], pool: ThreadPoolExecutor) -> list[GuardedOutcome]:
        """Send conditional writes, 25 a call on ``pool``, each call paced; one outcome per call."""
        chunks = [list(writes[i : i + BATCH_SIZE]) for i in range(0, len(writes), BATCH_SIZE)]

        def one(chunk: list[Guarded]) -> GuardedOutcome:
            outcome: GuardedOutcome = self.paced(
                len(chunk),
                lambda: write_guarded(self.dynamodb, chunk, self.backoff),
                lambda: GuardedOutcome(stalled=list(chunk)),
            )
            return outcome

        return list(pool.map(one, chunks))

    def past_deadline(self) -> bool:
        """Whether the deadline has passed: no more write calls start."""
        return self.deadline is not None and time.time() > self.deadline

    @property
    def in_place(self) -> bool:
        """Whether the page is written back to the table it was read from."""
        return self.target == self.table

    def judge(self, raw: WireItem) -> Verdict:
        """The transform's verdict on one item as read."""
        return evaluate(
            self.transform, raw, self.keys, in_place=self.in_place, check_size=False, target_keys=self.target_keys
        )

    def write_page(
        self,
        items: Sequence[WireItem],
        pool: ThreadPoolExecutor,
        texts: Mapping[int, tuple[WireItem, str]] | None = None,
    ) -> PageTally:
        """Transform ``items`` and write what they need; return the page's tally.

        ``texts`` holds items' JSON texts as read (:func:`ddbnb.worker.wire.item_texts`), which the
        journal writes as they are.
        """
        tally = PageTally()
        if not self.units_per_item and items:  # before any call has said: the items' own size, by DynamoDB's rules
            spread = items[:: max(1, len(items) // SIZE_SAMPLE)]  # sizing every item costs as much as transforming it
            self.units_per_item = sum(write_units(item_size(raw)) for raw in spread) / len(spread)
        self.texts = texts or {}
        try:
            if self.mode == "conditional":
                self._conditional(items, tally, pool)
            else:
                self._batch(items, tally, pool)
        finally:
            self.texts = {}
        return tally

    # -- batch ---------------------------------------------------------------------------------------------
    def _batch(self, items: Sequence[WireItem], tally: PageTally, pool: ThreadPoolExecutor) -> None:
        requests: list[Request] = []
        sources: dict[int, WireItem] = {}
        targets: set[tuple[str, ...]] = set()
        written: list[tuple[WireItem, WireItem | None]] = []  # (item as read, item as written), for the journal
        for raw in items:
            verdict = self.judge(raw)
            if verdict.action == PUT:
                assert verdict.wire is not None
                if not self.in_place:  # in place, keys are the source's own: they cannot collide
                    target = _key_id(verdict.wire, list(self.target_keys))
                    if target in targets:
                        tally.failures.append((_key(raw, self.keys), _collision(verdict.wire, self.target_keys)))
                        continue
                    targets.add(target)
                request: Request = {"PutRequest": {"Item": verdict.wire}}
            elif verdict.action == DELETE and not self.in_place:
                tally.deleted += 1  # left out of the destination
                continue
            elif verdict.action == DELETE:
                request = {"DeleteRequest": {"Key": _key(raw, self.keys)}}
            elif verdict.action == UNCHANGED:
                tally.unchanged += 1
                continue
            else:
                tally.failures.append((_key(raw, self.keys), f"{verdict.rule}: {verdict.message}"))
                continue
            sources[id(request)] = raw  # its key is taken only if the write fails
            requests.append(request)
            written.append((raw, verdict.wire if verdict.action == PUT else None))
        if self.journal is not None and written and not self._journal_batch(written, tally):
            tally.stalled = True  # the destination could not be read: the page is read again later
            return
        outcome = self.send_requests(requests, pool)
        tally.written += outcome.puts
        tally.deleted += outcome.deletes
        tally.write_units += outcome.write_units
        tally.throttled += outcome.throttled
        tally.stalled = bool(outcome.stalled)
        for request, error in outcome.failures:
            tally.failures.append((_key(sources[id(request)], self.keys), f"write_failed: {error}"))

    def _journal_batch(self, written: list[tuple[WireItem, WireItem | None]], tally: PageTally) -> bool:
        """Journal a batch page before its writes; False when a copy's destination reads stalled.

        In place, the before-image is the item as read. A copy overwrites whatever
        the destination holds under each key, so it reads those items first and
        journals them as the before-images (none: the rollback deletes the copy).
        """
        assert self.journal is not None
        if self.in_place:
            entries = [self._entry(raw, after) for raw, after in written]
        else:
            names = list(self.target_keys)
            keys = [_key(after, names) for _, after in written if after is not None]
            read = read_items(self.dynamodb, self.target, keys, names, self.read_bucket, self.backoff)
            tally.throttled += read.throttled
            if read.stalled:
                return False
            entries = [
                entry(_key(after, names), read.found.get(key_text(after, names)), after)
                for _, after in written
                if after is not None
            ]
        self.journal.write(self.journal.new_name(), entries)  # before any of the page's writes
        return True

    # -- conditional ---------------------------------------------------------------------------------------
    def guarded(self, raw: WireItem, tally: PageTally) -> Guarded | None:
        """The guarded write ``raw`` needs (None when none), counting what needs none."""
        verdict = self.judge(raw)
        try:
            if verdict.action == PUT and self.in_place:
                assert verdict.wire is not None
                write = update_write(self.table, self.keys, raw, verdict.wire, self.version_attribute)
                if write is None:
                    tally.unchanged += 1
                return write
            if verdict.action == PUT:
                assert verdict.wire is not None
                return insert_write(self.target, list(self.target_keys), verdict.wire, raw)
            if verdict.action == DELETE and self.in_place:
                return delete_write(self.table, self.keys, raw, self.version_attribute)
        except UnwritableError as exc:
            tally.failures.append((_key(raw, self.keys), f"invalid_write: {exc}"))
            return None
        if verdict.action == DELETE:
            tally.deleted += 1  # left out of the destination
        elif verdict.action == UNCHANGED:
            tally.unchanged += 1
        else:
            tally.failures.append((_key(raw, self.keys), f"{verdict.rule}: {verdict.message}"))
        return None

    def _entry(self, raw: WireItem, written: WireItem | None) -> dict[str, Any]:
        """The journal entry of one write: ``raw`` as read, and ``written`` (None for a delete)."""
        item, text = self.texts.get(id(raw), (None, ""))
        return entry_for(raw, written, self.keys, self.target_keys, self.in_place, text if item is raw else "")

    def _write_entry(self, write: Guarded) -> dict[str, Any]:
        """The journal entry of a guarded write: a delete's before-image is what it deleted, when it says."""
        if write.kind == "delete":
            return self._entry(write.old or write.raw, None)
        return self._entry(write.raw, write.new)

    def _conditional(self, items: Sequence[WireItem], tally: PageTally, pool: ThreadPoolExecutor) -> None:
        writes = [w for w in (self.guarded(raw, tally) for raw in items) if w is not None]
        journaled = _PageJournal(self.journal, self._write_entry)
        try:
            self._rounds(writes, tally, pool, journaled)
        finally:
            journaled.settle()

    def _rounds(
        self, writes: list[Guarded], tally: PageTally, pool: ThreadPoolExecutor, journaled: _PageJournal
    ) -> None:
        for round_ in range(CONFLICT_ROUNDS + 1):
            if not writes:
                return
            journaled.record(writes)  # before this round's writes
            conflicts: list[Guarded] = []
            for outcome in self.send_guarded(writes, pool):
                count_outcome(outcome, tally, journaled, lambda write: _key(write.raw, self.keys))
                tally.stalled = tally.stalled or bool(outcome.stalled)
                conflicts.extend(outcome.conflicts)
            journaled.drop(conflicts)  # refused: never written (unless sent twice: then it stays)
            if tally.stalled:
                return  # the page is read again; its conflicts with it
            if round_ == CONFLICT_ROUNDS:
                for write in conflicts:
                    tally.failures.append(
                        (
                            _key(write.raw, self.keys),
                            f"conflict: the item changed {CONFLICT_ROUNDS + 1} times while it was migrated; "
                            "retry_failed(run_dir) tries it again",
                        )
                    )
                return
            writes = [w for w in (self._after_conflict(write, tally) for write in conflicts) if w is not None]
            if tally.stalled:
                return

    def _after_conflict(self, write: Guarded, tally: PageTally) -> Guarded | None:
        """Read the item again and decide anew: the write that is still needed, if any.

        A read that stays throttled stalls the page (it is read again later).
        """
        try:
            if write.kind == "insert":
                assert write.new is not None
                there = read_again(self.dynamodb, self.target, write.key, self.backoff)
                if there is None:
                    return write  # gone meanwhile: insert it again
                if matches(deserialize(there), write.new):
                    tally.unchanged += 1  # already copied, as it is (a re-run)
                else:
                    tally.failures.append((_key(write.raw, self.keys), _collision(write.new, self.target_keys)))
                return None
            tally.conflicts += 1
            fresh = read_again(self.dynamodb, self.table, write.key, self.backoff)
        except ClientError as exc:
            if not is_throttle(exc):
                raise
            tally.stalled = True
            return None
        if fresh is None:
            return None  # deleted meanwhile: it stays deleted
        return self.guarded(fresh, tally)


def count_outcome(
    outcome: GuardedOutcome, tally: PageTally, journaled: _PageJournal, key_of: Callable[[Guarded], WireItem]
) -> None:
    """Add one call's conditional writes to ``tally`` (refused ones as failures under ``key_of(write)``),
    and forget the refused ones' journal entries (a delete that says what it deleted keeps its entry)."""
    tally.write_units += outcome.write_units
    tally.throttled += outcome.throttled
    tally.deleted += sum(1 for write in outcome.done if write.kind == "delete")
    tally.written += sum(1 for write in outcome.done if write.kind != "delete")
    tally.failures.extend((key_of(write), f"write_failed: {error}") for write, error in outcome.failures)
    journaled.drop([w for w, _ in outcome.failures if w.kind != "delete" or w.old is None])


class _PageJournal:
    """One page's journal object in conditional mode: one entry per write, in the order they were made.

    Each round's writes are recorded (the object rewritten) before they are
    sent. A write refused for certain changed nothing and is dropped; a write
    whose call was sent twice (a lost response) may have been applied and
    stays. Entries are made from the writes when the object is written, so a
    delete's entry holds what it really deleted.
    """

    def __init__(self, journal: JournalWriter | None, make: Callable[[Guarded], dict[str, Any]]):
        self.journal = journal
        self.make = make
        self.name = journal.new_name() if journal is not None else ""
        self.writes: dict[int, Guarded] = {}
        self.dirty = False

    def record(self, writes: Sequence[Guarded]) -> None:
        """Add ``writes`` and write the object, before they are sent."""
        if self.journal is None:
            return
        for write in writes:
            self.writes[id(write)] = write
        self._write()

    def drop(self, refused: Sequence[Guarded]) -> None:
        """Forget writes refused for certain: they changed nothing."""
        for write in refused:
            if not write.resent:
                self.dirty = self.writes.pop(id(write), None) is not None or self.dirty

    def settle(self) -> None:
        """Rewrite the object as the page ended: without the dropped writes, with what deletes deleted."""
        deleted_more = any(w.old is not None and item_digest(w.old) != item_digest(w.raw) for w in self.writes.values())
        if self.journal is not None and (self.dirty or deleted_more):
            self._write()

    def _write(self) -> None:
        assert self.journal is not None
        self.journal.write(self.name, [self.make(write) for write in self.writes.values()])
        self.dirty = False


def _collision(new: WireItem, target_keys: Mapping[str, str]) -> str:
    key = json.dumps(deserialize(_key(new, list(target_keys))), default=str)
    return (
        f"key_collision: another item already has the destination key {key}; "
        "it was left as it is (two source items map to one destination key?)"
    )
