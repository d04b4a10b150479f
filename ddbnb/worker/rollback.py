"""Roll back one segment of a migration from its journal, newest object first.

Only the standard library and boto3: this module ships inside the Lambda package
and is the same code the local engine runs.

For each journal entry the item is read as it is now (strongly consistent) and
compared with the digest of what the migration wrote:

- still as written: it is restored to its before-image (an item the migration
  deleted and that is still absent is re-created; into a destination, where
  there was no before-image, it is deleted), by a write guarded by the item as
  read now, so a change racing with the rollback is left alone too;
- already as before (the write never happened, or was rolled back): nothing;
- anything else: someone changed it since; it is left alone and reported as a
  conflict, with the attributes that differ.

Event: a segment event with ``operation: "rollback"`` and
``journal: {from, execute, conflicts_to?}``; ``table`` is the table to put back
(the destination, for a copy). ``cursor`` is the name of the next journal object
to read (objects are read newest first, an undo log). The result is a
segment's, plus ``restored``, ``recreated`` and the bounded ``conflicted`` list;
``scanned`` counts journal entries, ``unchanged`` those already as before.
With ``execute`` False nothing is written: the counts say what would be done.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import boto3

from ddbnb.exceptions import InvalidParameterError, ThrottledError
from ddbnb.worker import journal, params
from ddbnb.worker.budgets import budgets_now
from ddbnb.worker.capacity import Bucket, Limits, limits_for
from ddbnb.worker.conditional import Guarded, UnwritableError, delete_write, insert_write, update_write
from ddbnb.worker.failures import FailureLog
from ddbnb.worker.page import PageWriter
from ddbnb.worker.reads import key_text, read_items
from ddbnb.worker.segment import MAX_STALLS, WRITE_THREADS, now, start_result
from ddbnb.worker.tables import TableFacts, worker_facts
from ddbnb.worker.wire import WireClient, shared_client
from ddbnb.worker.writes import Backoff, Request

OPERATION = "rollback"
#: What a rollback did (or, without execute, would do): restored, re-created and removed items.
COUNTERS = ("restored", "recreated", "removed")
#: Why an item whose guarded restore was refused is left alone.
RACED = "changed while the rollback ran; left as it is"

WireItem = dict[str, Any]


def validate_event(event: Mapping[str, Any]) -> None:
    """Raise InvalidParameterError when a rollback event cannot be processed."""
    params.check_table_name("table", event.get("table"))
    total = params.check_total_segments(event.get("total_segments"))
    params.check_int("segment", event.get("segment"), 0, total - 1)
    params.check_choice("write_mode", event.get("write_mode", "conditional"), params.WRITE_MODES)
    params.check_rate("rate_limit", event.get("rate_limit", 0))
    params.check_rate("read_units_per_s", event.get("read_units_per_s") or 0)
    params.check_rate("write_units_per_s", event.get("write_units_per_s") or 0)
    settings = event.get("journal") or {}
    if not isinstance(settings.get("from"), str) or not settings["from"]:
        raise InvalidParameterError("journal.from", settings.get("from"), "the folder or s3:// prefix of a journal")
    params.check_bool("journal.execute", settings.get("execute"))


@dataclass
class Decision:
    """What to do with one journal entry's item: restore, recreate, delete, already, or conflict."""

    action: str
    key: WireItem
    now: WireItem | None  # the item as read now
    before: WireItem | None
    reason: str = ""


def decide(record: Mapping[str, Any], current: WireItem | None) -> Decision:
    """Compare the item as it is now with the journal entry ``record``."""
    key, before, after = record["k"], record["b"], journal.after_digest(record)
    seen = journal.item_digest(current)
    if seen == after:
        if before is None:
            return Decision("delete", key, current, None)
        return Decision("restore" if current is not None else "recreate", key, current, before)
    if seen == journal.item_digest(before):
        return Decision("already", key, current, before)
    if current is None:
        reason = "deleted since the migration wrote it"
    elif after is None:
        reason = "re-created since the migration deleted it"
    else:
        reason = "changed since the migration wrote it: " + ", ".join(journal.differences(seen, after))
    return Decision("conflict", key, current, before, reason)


@dataclass
class _Tally:
    decisions: list[Decision] = field(default_factory=list)
    conflicts: list[tuple[WireItem, str]] = field(default_factory=list)
    failures: list[tuple[WireItem, str]] = field(default_factory=list)
    done: dict[str, int] = field(default_factory=lambda: {"restore": 0, "recreate": 0, "delete": 0, "already": 0})
    write_units: float = 0.0
    read_units: float = 0.0
    throttled: int = 0
    stalled: bool = False
    entries: int = 0


class _Rollback:
    """State for one invocation over one segment's journal."""

    def __init__(
        self,
        event: Mapping[str, Any],
        boto3_session: boto3.Session | None,
        limits: Limits | None,
        known: MutableMapping[str, TableFacts] | None,
    ) -> None:
        settings = event["journal"]
        self.source, self.execute = str(settings["from"]), bool(settings["execute"])
        self.segment = int(event["segment"])
        self.session = boto3_session
        self.dynamodb: WireClient = shared_client(boto3_session)
        self.table = event["table"]
        facts = worker_facts(self.dynamodb, self.table, known=known)
        self.limits = limits or limits_for(event, budgets=budgets_now(event, facts, facts))
        self.keys = facts.key_names
        self.mode = event.get("write_mode", "conditional")
        self.read_backoff = Backoff(on_throttle=lambda _, __: self.limits.read.throttled())
        self.writer = PageWriter(
            dynamodb=self.dynamodb,
            transform=lambda item: item,  # unused: the writer only paces the rollback's writes
            table=self.table,
            keys=self.keys,
            target=self.table,
            target_keys=facts.key_schema,
            mode=self.mode,
            items_bucket=Bucket(float(event.get("rate_limit", 0) or 0)),
            write_bucket=self.limits.write,
        )
        self.result = start_result(event)
        for name in COUNTERS:
            self.result[name] = int((event.get("totals") or {}).get(name, 0))
        self.failures = FailureLog(self.result, event.get("failures_to"), boto3_session)
        self.conflicts = FailureLog(
            self.result, settings.get("conflicts_to"), boto3_session, counter="conflicts", listed="conflicted"
        )

    # -- one journal object --------------------------------------------------------------------------------
    def undo_object(self, name: str, pool: ThreadPoolExecutor) -> _Tally:
        """Decide (and, with execute, carry out) every entry of journal object ``name``, newest first.

        A key journaled twice in one object (a write sent twice after a lost
        response, then written again after a conflict) is undone in passes: its
        newest entry first, against the item as read now, then the older one
        against the item as that left it.
        """
        tally = _Tally()
        records = journal.read_object(self.source, self.segment, name, self.session)
        tally.entries = len(records)
        for group in _passes(list(reversed(records)), self.keys):
            read = read_items(
                self.dynamodb, self.table, [r["k"] for r in group], self.keys, self.limits.read, self.read_backoff
            )
            tally.read_units += read.read_units
            tally.throttled += read.throttled
            if read.stalled:
                tally.stalled = True
                return tally
            decisions = []
            for record in group:
                decision = decide(record, read.found.get(key_text(record["k"], self.keys)))
                if decision.action == "conflict":
                    tally.conflicts.append((decision.key, f"conflict: {decision.reason}; left as it is"))
                elif decision.action == "already" or not self.execute:
                    tally.done[decision.action] += 1
                else:
                    decisions.append(decision)
            tally.decisions = decisions
            if self.execute and decisions:
                if self.mode == "conditional":
                    self._guarded(tally, pool)
                else:
                    self._batch(tally, pool)
            if tally.stalled:
                return tally
        return tally

    def _guarded(self, tally: _Tally, pool: ThreadPoolExecutor) -> None:
        writes: list[Guarded] = []
        for decision in tally.decisions:
            try:
                writes.append(_guarded_write(self.table, self.keys, decision))
            except UnwritableError as exc:
                tally.failures.append((decision.key, f"invalid_write: {exc}"))
        for outcome in self.writer.send_guarded(writes, pool):
            tally.write_units += outcome.write_units
            tally.throttled += outcome.throttled
            tally.stalled = tally.stalled or bool(outcome.stalled)
            for write in outcome.done:
                tally.done[write.kind] += 1
            for write in outcome.conflicts:
                tally.conflicts.append((_key_of(write, self.keys), "conflict: " + RACED))
            for write, error in outcome.failures:
                tally.failures.append((_key_of(write, self.keys), f"write_failed: {error}"))

    def _batch(self, tally: _Tally, pool: ThreadPoolExecutor) -> None:
        requests: list[Request] = []
        kinds: dict[int, Decision] = {}
        for decision in tally.decisions:
            request: Request = (
                {"DeleteRequest": {"Key": decision.key}}
                if decision.before is None
                else {"PutRequest": {"Item": decision.before}}
            )
            kinds[id(request)] = decision
            requests.append(request)
        outcome = self.writer.send_requests(requests, pool)
        tally.write_units += outcome.write_units
        tally.throttled += outcome.throttled
        tally.stalled = bool(outcome.stalled)
        refused = {id(request) for request, _ in outcome.failures} | {id(request) for request in outcome.stalled}
        for request in requests:
            if id(request) not in refused:
                tally.done[kinds[id(request)].action] += 1
        for request, error in outcome.failures:
            tally.failures.append((kinds[id(request)].key, f"write_failed: {error}"))

    def count(self, tally: _Tally) -> None:
        """Add one object's tally to the result (a stalled object only what it wrote)."""
        result = self.result
        result["read_units"] += tally.read_units
        result["write_units"] += tally.write_units
        result["throttled"] += tally.throttled
        result["restored"] += tally.done["restore"]
        result["recreated"] += tally.done["recreate"]
        result["removed"] += tally.done["delete"]
        if self.execute:
            result["written"] += tally.done["restore"] + tally.done["recreate"]
            result["deleted"] += tally.done["delete"]
        if tally.stalled:
            return
        result["unchanged"] += tally.done["already"]
        result["scanned"] += tally.entries
        result["pages"] += 1
        result["stalls"] = 0
        self.failures.add([self.failures.entry(key, error) for key, error in tally.failures])
        self.conflicts.add([self.conflicts.entry(key, reason) for key, reason in tally.conflicts])


def _passes(records: list[dict[str, Any]], names: Sequence[str]) -> list[list[dict[str, Any]]]:
    """``records`` (newest first) in groups with each key once; a key's older entries in later groups."""
    passes: list[list[dict[str, Any]]] = []
    seen: dict[str, int] = {}  # entries of each key met so far: its next entry goes to that pass
    for record in records:
        key = key_text(record["k"], names)
        depth = seen.get(key, 0)
        seen[key] = depth + 1
        if depth == len(passes):
            passes.append([])
        passes[depth].append(record)
    return passes


def _key_of(write: Guarded, names: Sequence[str]) -> WireItem:
    return {name: write.key[name] for name in names}


def _guarded_write(table: str, keys: Sequence[str], decision: Decision) -> Guarded:
    """The conditional write that carries out ``decision``, guarded by the item as read now."""
    if decision.action == "recreate":
        assert decision.before is not None
        return insert_write(table, keys, decision.before, kind="recreate")
    assert decision.now is not None
    if decision.action == "delete":
        return delete_write(table, keys, decision.now)
    assert decision.before is not None
    write = update_write(table, keys, decision.now, decision.before, kind="restore")
    assert write is not None  # the item differs from its before-image, or it would be "already"
    return write


def rollback_segment(
    event: Mapping[str, Any],
    *,
    deadline: float | None = None,
    on_page: Callable[[dict[str, Any]], None] | None = None,
    checkpoint: Callable[[dict[str, Any]], None] | None = None,
    limits: Limits | None = None,
    boto3_session: boto3.Session | None = None,
    known_tables: MutableMapping[str, TableFacts] | None = None,
) -> dict[str, Any]:
    """Roll back one segment's journal objects from ``event['cursor']`` until done or ``deadline`` nears.

    Takes the keyword arguments of :func:`ddbnb.worker.segment.process_segment`
    and returns a result of the same shape; ``cursor`` names the next object.
    """
    validate_event(event)
    work = _Rollback(event, boto3_session, limits, known_tables)
    names = journal.object_names(work.source, work.segment, boto3_session)
    cursor = event.get("cursor") or None
    todo = [name for name in names if cursor is None or name <= cursor]
    slowest, stalled = 0.0, False
    with ThreadPoolExecutor(WRITE_THREADS) as pool:
        for index, name in enumerate(todo):
            started = time.monotonic()
            work.writer.deadline = deadline if index else None  # one object always finishes
            tally = work.undo_object(name, pool)
            work.count(tally)
            if tally.stalled:
                stalled = True
                cursor = name
                break
            cursor = todo[index + 1] if index + 1 < len(todo) else None
            if checkpoint is not None:
                work.failures.flush()
                work.conflicts.flush()
                checkpoint({**work.result, "cursor": cursor, "finished_at": now()})
            if on_page is not None:
                on_page({k: v for k, v in work.result.items() if k not in ("failures", "conflicted")})
            slowest = max(slowest, time.monotonic() - started)
            if cursor is None or (deadline is not None and time.time() + 2 * slowest > deadline):
                break
    work.failures.flush()
    work.conflicts.flush()
    if stalled:
        work.result["stalls"] += 1
        if work.result["stalls"] >= MAX_STALLS:
            raise ThrottledError(work.segment, work.result["stalls"], cursor)
    work.result["cursor"] = cursor
    work.result["finished_at"] = now()
    return work.result
