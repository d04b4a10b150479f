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

from ddbnb.worker.capacity import Bucket
from ddbnb.worker.conditional import (
    Guarded,
    GuardedOutcome,
    TooManyGuardsError,
    delete_statement,
    insert_statement,
    next_version,
    read_again,
    update_statement,
    write_guarded,
)
from ddbnb.worker.evaluate import DELETE, PUT, UNCHANGED, Verdict, evaluate
from ddbnb.worker.items import deserialize, matches
from ddbnb.worker.journal import JournalWriter, entry_for
from ddbnb.worker.wire import WireClient
from ddbnb.worker.writes import BATCH_SIZE, Backoff, Request, WriteOutcome, write_batch

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
    deadline: float | None = None  # time.time() after which no write call starts
    units_per_item: float = 1.0  # what the last call consumed per item: the next reservation's estimate
    journal: JournalWriter | None = None  # where each page's before-images go, before its writes

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
        self.write_bucket.acquire(reserved)
        if self.past_deadline():
            self.write_bucket.settle(reserved, 0)
            return stalled()  # out of time: the page is read again by the next call
        outcome = send()
        self.write_bucket.settle(reserved, outcome.write_units)
        done = count - len(outcome.stalled)
        if outcome.write_units and done:
            self.units_per_item = outcome.write_units / done
        if not outcome.throttled:
            self.write_bucket.calm(outcome.write_units)
        return outcome

    def _throttled(self, refused: int) -> None:
        """Writes were refused: slow down, and pace their retry like a first attempt."""
        self.write_bucket.throttled()
        self.write_bucket.acquire(refused * self.units_per_item)

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

    def write_page(self, items: Sequence[WireItem], pool: ThreadPoolExecutor) -> PageTally:
        """Transform ``items`` and write what they need; return the page's tally."""
        tally = PageTally()
        if self.mode == "conditional":
            self._conditional(items, tally, pool)
        else:
            self._batch(items, tally, pool)
        return tally

    # -- batch ---------------------------------------------------------------------------------------------
    def _batch(self, items: Sequence[WireItem], tally: PageTally, pool: ThreadPoolExecutor) -> None:
        requests: list[Request] = []
        sources: dict[int, WireItem] = {}
        targets: set[tuple[str, ...]] = set()
        entries: list[dict[str, Any]] = []
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
            if self.journal is not None:
                entries.append(self._entry(raw, verdict.wire if verdict.action == PUT else None))
        if self.journal is not None and entries:
            self.journal.write(self.journal.new_name(), entries)  # before any of the page's writes
        outcome = self.send_requests(requests, pool)
        tally.written += outcome.puts
        tally.deleted += outcome.deletes
        tally.write_units += outcome.write_units
        tally.throttled += outcome.throttled
        tally.stalled = bool(outcome.stalled)
        for request, error in outcome.failures:
            tally.failures.append((_key(sources[id(request)], self.keys), f"write_failed: {error}"))

    # -- conditional ---------------------------------------------------------------------------------------
    def guarded(self, raw: WireItem, tally: PageTally) -> Guarded | None:
        """The guarded write ``raw`` needs (None when none), counting what needs none."""
        verdict = self.judge(raw)
        try:
            if verdict.action == PUT and self.in_place:
                assert verdict.wire is not None
                statement = update_statement(self.table, self.keys, raw, verdict.wire, self.version_attribute)
                if statement is None:
                    tally.unchanged += 1
                    return None
                return Guarded("update", statement, raw, _key_id(raw, self.keys), verdict.wire)
            if verdict.action == PUT:
                assert verdict.wire is not None
                target = _key_id(verdict.wire, list(self.target_keys))
                return Guarded("insert", insert_statement(self.target, verdict.wire), raw, target, verdict.wire)
            if verdict.action == DELETE and self.in_place:
                statement = delete_statement(self.table, self.keys, raw, self.version_attribute)
                return Guarded("delete", statement, raw, _key_id(raw, self.keys))
        except TooManyGuardsError as exc:
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
        if written is not None and self.in_place and self.mode == "conditional" and self.version_attribute:
            written = {**written, self.version_attribute: next_version(raw, self.version_attribute)}
        return entry_for(raw, written, self.keys, self.target_keys, self.in_place)

    def _conditional(self, items: Sequence[WireItem], tally: PageTally, pool: ThreadPoolExecutor) -> None:
        writes = [w for w in (self.guarded(raw, tally) for raw in items) if w is not None]
        journaled = _PageJournal(self.journal, self._entry)
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
                tally.write_units += outcome.write_units
                tally.throttled += outcome.throttled
                tally.stalled = tally.stalled or bool(outcome.stalled)
                for write in outcome.done:
                    if write.kind == "delete":
                        tally.deleted += 1
                    else:
                        tally.written += 1
                for write, error in outcome.failures:
                    tally.failures.append((_key(write.raw, self.keys), f"write_failed: {error}"))
                conflicts.extend(outcome.conflicts)
            journaled.drop(conflicts)  # refused: never written
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

    def _after_conflict(self, write: Guarded, tally: PageTally) -> Guarded | None:
        """Read the item again and decide anew: the write that is still needed, if any."""
        if write.kind == "insert":
            assert write.new is not None
            there = read_again(self.dynamodb, self.target, _key(write.new, list(self.target_keys)))
            if there is None:
                return write  # gone meanwhile: insert it again
            if matches(deserialize(there), write.new):
                tally.unchanged += 1  # already copied, as it is (a re-run)
            else:
                tally.failures.append((_key(write.raw, self.keys), _collision(write.new, self.target_keys)))
            return None
        tally.conflicts += 1
        fresh = read_again(self.dynamodb, self.table, _key(write.raw, self.keys))
        if fresh is None:
            return None  # deleted meanwhile: it stays deleted
        return self.guarded(fresh, tally)


class _PageJournal:
    """One page's journal object in conditional mode: each key's latest intended write.

    Each round's writes are recorded (the object rewritten) before they are
    sent; writes refused by their condition are dropped, and the object is
    rewritten without them before the page ends.
    """

    def __init__(self, journal: JournalWriter | None, make: Callable[[WireItem, WireItem | None], dict[str, Any]]):
        self.journal = journal
        self.make = make
        self.name = journal.new_name() if journal is not None else ""
        self.entries: dict[tuple[str, ...], dict[str, Any]] = {}
        self.dirty = False

    def record(self, writes: Sequence[Guarded]) -> None:
        """Add ``writes`` and write the object, before they are sent."""
        if self.journal is None:
            return
        for write in writes:
            self.entries[write.target_key] = self.make(write.raw, write.new)
        self.journal.write(self.name, list(self.entries.values()))
        self.dirty = False

    def drop(self, refused: Sequence[Guarded]) -> None:
        """Forget writes whose condition failed: they changed nothing."""
        for write in refused:
            self.dirty = self.entries.pop(write.target_key, None) is not None or self.dirty

    def settle(self) -> None:
        """Rewrite the object without the dropped entries."""
        if self.journal is not None and self.dirty:
            self.journal.write(self.name, list(self.entries.values()))
            self.dirty = False


def _collision(new: WireItem, target_keys: Mapping[str, str]) -> str:
    key = json.dumps(deserialize(_key(new, list(target_keys))), default=str)
    return (
        f"key_collision: another item already has the destination key {key}; "
        "it was left as it is (two source items map to one destination key?)"
    )
