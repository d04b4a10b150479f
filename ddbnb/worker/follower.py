"""Apply a run's transform to the items a stream says changed: the follower's worker.

Only the standard library and boto3: this is the same code on either engine.

Every write comes from a fresh read, so the order of records and records seen
twice do not matter: the follower converges on "the destination (or the item)
is the transform of the source as it is now".

- **In place**: the item is read again (consistent) and written exactly as the
  run writes it (:func:`ddbnb.worker.segment.rewrite_keys`): an item already in
  the new shape costs one read and no write, and an item gone needs nothing.
- **Copy**: the source item is read again. Its transform is written into the
  destination, guarded by the destination item as read (an insert when there is
  none). A destination item that an earlier image of the source produced, under
  another key (the transform moved it) or because the source is now gone or
  dropped, is deleted, guarded, but only while it is still exactly what that
  image produced: an item another source wrote there since is left alone.

Writes are journaled like the run's (journal segment :data:`SEGMENT`), so
``rollback`` undoes them too, newest first.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import boto3

from ddbnb.exceptions import ThrottledError
from ddbnb.worker.conditional import Guarded, UnwritableError, delete_write, insert_write, update_write
from ddbnb.worker.evaluate import FAILED, PUT
from ddbnb.worker.journal import entry, item_digest
from ddbnb.worker.page import CONFLICT_ROUNDS, PageTally, _PageJournal, count_outcome
from ddbnb.worker.params import MAX_TOTAL_SEGMENTS
from ddbnb.worker.reads import key_text, read_items
from ddbnb.worker.segment import WRITE_THREADS, SegmentWork, now, rewrite_keys
from ddbnb.worker.streams import Change

#: The journal segment (and result segment) of the follower's writes: after every run segment.
SEGMENT = MAX_TOTAL_SEGMENTS - 1

WireItem = dict[str, Any]


class Follower:
    """Applies changes to one run's target, counting into :attr:`result` (a segment result)."""

    def __init__(self, event: Mapping[str, Any], boto3_session: boto3.Session | None = None) -> None:
        self.work = SegmentWork(
            {**event, "segment": SEGMENT, "total_segments": MAX_TOTAL_SEGMENTS, "cursor": None}, boto3_session
        )
        self.pool = ThreadPoolExecutor(WRITE_THREADS)
        self.result = self.work.result
        self.result.setdefault("gone", 0)

    def close(self) -> None:
        """Flush the failure log and stop the write threads."""
        self.work.failures.flush()
        self.pool.shutdown()

    def apply(self, changes: Sequence[Change]) -> dict[str, Any]:
        """Bring the target in step with the source for every changed item; the running result."""
        if self.work.writer.in_place:
            gone = rewrite_keys(self.work, [change.key for change in changes], self.pool)
            self.result["gone"] += len(gone)
        else:
            self._copy(list(changes))
        self.work.failures.flush()
        self.result["finished_at"] = now()
        return self.result

    # -- copy -----------------------------------------------------------------------------------------------
    def _copy(self, changes: list[Change]) -> None:
        writer = self.work.writer
        journaled = _PageJournal(writer.journal, _entry)
        try:
            for round_ in range(CONFLICT_ROUNDS + 1):
                began, tally = time.time(), _Tally()
                writes, sources = self._copy_writes(changes, tally)
                journaled.record(writes)  # before they are sent
                retry: list[Guarded] = []
                source_key = functools.partial(_source_key, sources)
                for outcome in writer.send_guarded(writes, self.pool):
                    count_outcome(outcome, tally, journaled, source_key)
                    tally.conflicts += len(outcome.conflicts)
                    retry.extend(outcome.conflicts)
                    retry.extend(outcome.stalled)  # throttled throughout: decided again from a fresh read
                journaled.drop(retry)
                changes = list({id(sources[id(w)]): sources[id(w)] for w in retry}.values())
                if round_ == CONFLICT_ROUNDS:
                    reason = "conflict: the destination item kept changing while it was followed; follow again"
                    tally.failures.extend((change.key, reason) for change in changes)
                    changes = []
                self.work.count(tally, tally.scanned, began)
                if not changes:
                    return
        finally:
            journaled.settle()

    def _copy_writes(self, changes: list[Change], tally: _Tally) -> tuple[list[Guarded], dict[int, Change]]:
        """The guarded writes that make the destination the transform of each changed source item now,
        and the change each write comes from (by ``id``)."""
        writer = self.work.writer
        names, target_names = list(writer.keys), list(writer.target_keys)
        source = self._read(writer.table, [c.key for c in changes], names)
        tally.scanned += len(changes)
        wanted: dict[str, tuple[WireItem, Change]] = {}  # destination key text: (item, its source)
        stale: dict[str, tuple[WireItem, set[str], Change]] = {}  # key text: (key, digests it may hold, source)
        for change in changes:
            now_item = source.get(key_text(change.key, names))
            mine: str | None = None
            if now_item is None:
                self.result["gone"] += 1
            else:
                verdict = writer.judge(now_item)
                if verdict.action == PUT and verdict.wire is not None:
                    mine = key_text(verdict.wire, target_names)
                    wanted[mine] = (verdict.wire, change)
                elif verdict.action == FAILED:
                    tally.failures.append((change.key, f"{verdict.rule}: {verdict.message}"))
                    continue  # what it was copied as stays, until the transform can handle it
            for image in change.images:
                earlier = writer.judge(image)
                if earlier.action != PUT or earlier.wire is None:
                    continue
                text = key_text(earlier.wire, target_names)
                if text != mine:
                    key = {name: earlier.wire[name] for name in target_names if name in earlier.wire}
                    stale.setdefault(text, (key, set(), change))[1].add(_digest(earlier.wire))
        for text in wanted:
            stale.pop(text, None)  # wanted by a source in this batch: written, not deleted
        keys = [{n: item[n] for n in target_names} for item, _ in wanted.values()] + [k for k, _, _ in stale.values()]
        there = self._read(writer.target, keys, target_names)
        writes: list[Guarded] = []
        sources: dict[int, Change] = {}
        for text, (item, change) in wanted.items():
            held = there.get(text)
            try:
                write = (
                    insert_write(writer.target, target_names, item)
                    if held is None
                    else update_write(writer.target, target_names, held, item)
                )
            except UnwritableError as exc:
                tally.failures.append((change.key, f"invalid_write: {exc}"))
                continue
            if write is None:
                tally.unchanged += 1
                continue
            writes.append(write)
            sources[id(write)] = change
        for text, (_, digests, change) in stale.items():
            held = there.get(text)
            if held is not None and _digest(held) in digests:
                write = delete_write(writer.target, target_names, held)
                writes.append(write)
                sources[id(write)] = change
        return writes, sources

    def _read(self, table: str, keys: list[WireItem], names: list[str]) -> dict[str, WireItem]:
        """The items with ``keys`` as they are now (consistent), by key text; ThrottledError when reads stall."""
        work = self.work
        read = read_items(work.dynamodb, table, keys, names, work.limits.read, work.read_backoff)
        work.result["read_units"] += read.read_units
        work.read_throttles += read.throttled
        if read.stalled:
            raise ThrottledError(SEGMENT, 1, None)
        return read.found


@dataclass
class _Tally(PageTally):
    """A page's tally that also counts the items read."""

    scanned: int = 0


def _source_key(sources: dict[int, Change], write: Guarded) -> WireItem:
    """The key of the source item a follower's write comes from (its failures are logged under it)."""
    return sources[id(write)].key


def _digest(item: Mapping[str, Any]) -> str:
    return repr(sorted((item_digest(item) or {}).items()))


def _entry(write: Guarded) -> dict[str, Any]:
    """The journal entry of a follower's write into the destination: what the key held before, and after."""
    if write.kind == "delete":
        return entry(write.key, write.old or write.raw, None)
    return entry(write.key, None if write.kind == "insert" else write.raw, write.new)
