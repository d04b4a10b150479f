"""Conditional writes for live tables: only what the transform changed, guarded by the values as read.

Only the standard library and boto3: this module ships inside the Lambda package.

A write is described once (:class:`Guarded`: what it sets, removes or inserts,
and the guard: the attributes that must still hold the values that were read)
and sent in one of two forms, with the same meaning:

- a PartiQL statement, 25 to a BatchExecuteStatement call, each answered on its
  own (ADR 0007: 3x the items/s of per-item calls, at a sixteenth of the client
  CPU). PartiQL cannot carry every write: a quoted name that starts with ``#``
  or ``:`` fails in a document path, and a statement holds at most 8,192
  characters;
- otherwise the item API (UpdateItem, DeleteItem, PutItem), one call per write,
  with a ConditionExpression whose names and values are placeholders, so any
  name fits. It carries up to 4 KB per expression and 300 operators (about 150
  guards); a write beyond that fails for its item alone, with a reason that
  names ``version_attribute`` (ADR 0014).

The writes:

- **update**: ``SET`` the changed top-level attributes and ``REMOVE`` the
  removed ones, where each of them still holds the value that was read (or is
  still missing). An update of an item that no longer exists fails its
  condition, so a deleted item is never brought back. Attributes the transform
  did not touch are never written, so concurrent writes to them survive.
- **delete**: only while every attribute still holds the value that was read,
  and it returns what it deleted (``RETURNING ALL OLD *`` / ``ALL_OLD``): an
  item that gained an attribute after the read is put back and read again, so
  nothing the application wrote is deleted unseen; one already gone deleted
  nothing and counts as a conflict (ADR 0014).
- **version_attribute**: guard on that one attribute instead, and increment it.
- **insert** (copying into a destination): fails on an existing key, so a
  collision is reported, never overwritten.

A call sent again after its response was lost (:meth:`WireClient.call_tracked`)
may have been applied the first time: a conflict of such a write is checked
against the item as it is now, and a write found applied counts as done. A
statement DynamoDB refuses for access or a missing table stops the run
(:class:`~ddbnb.exceptions.WriteRefusedError`): every other write would meet it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from botocore.exceptions import ClientError

from ddbnb.exceptions import WriteRefusedError
from ddbnb.worker.items import attribute_size, item_size, write_units
from ddbnb.worker.journal import item_digest, value_digest
from ddbnb.worker.reads import key_text
from ddbnb.worker.wire import WireClient
from ddbnb.worker.writes import (
    BATCH_SIZE,
    THROTTLE_CODES,
    Backoff,
    call_patiently,
    consumed_units,
    is_throttle,
    retry_until_stalled,
)

#: PartiQL's limit on one statement (botocore's model: PartiQLStatement, at most 8,192 characters).
MAX_STATEMENT_CHARS = 8192
#: Guards one PartiQL statement carries; a write with more goes through the item API.
MAX_PARTIQL_GUARDS = 100
#: The item API's limits on each expression: 4 KB, and 300 operators or functions.
MAX_EXPRESSION_BYTES = 4096
MAX_OPERATORS = 300
#: PartiQL error codes that mean "try again later".
RETRY_CODES = THROTTLE_CODES | {"ThrottlingError", "ProvisionedThroughputExceeded", "TransactionConflict"}
#: PartiQL error codes that mean "the item is not as read" (or, for INSERT, "the key exists").
CONFLICT_CODES = frozenset({"ConditionalCheckFailed", "DuplicateItem"})
#: Error codes that every write of the run would meet: the run stops at once.
SYSTEMIC_CODES = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "ResourceNotFound",
        "ResourceNotFoundException",
        "UnrecognizedClientException",
    }
)
#: A name PartiQL cannot carry in a document path (DynamoDB reads it as an undefined placeholder).
_PLACEHOLDER_PREFIXES = ("#", ":")

WireItem = dict[str, Any]


class UnwritableError(ValueError):
    """A conditional write that neither PartiQL nor the item API can carry."""


@dataclass
class Guarded:
    """One conditional write: what it changes, its guard, and the form it is sent in.

    ``guards`` are ``(attribute, value as read)`` pairs; a value of None means the
    attribute must still be missing. ``statement`` is set when PartiQL carries the
    write, ``request`` (operation, payload) when the item API does.
    """

    kind: str  # "update", "delete" or "insert"; a rollback's "restore" and "recreate" too
    table: str
    key: WireItem  # the written item's key
    raw: WireItem  # the item as read (for an insert, the source item)
    target_key: str  # the written item's key as text (reads.key_text), to keep one key out of one call twice
    new: WireItem | None = None  # update: the item as the write leaves it; insert: the item
    sets: dict[str, Any] = field(default_factory=dict)
    removes: list[str] = field(default_factory=list)
    guards: list[tuple[str, Any]] = field(default_factory=list)
    statement: dict[str, Any] | None = None
    request: tuple[str, dict[str, Any]] | None = None
    resent: bool = False  # a call that carried it was sent again after a lost response: it may have been applied
    old: WireItem | None = None  # what a delete deleted (RETURNING ALL OLD *)
    size_change: int | None = None  # update: bytes ``new`` adds to ``raw``, so the item is sized once, not twice

    def applied_in(self, now: WireItem | None) -> bool:
        """Whether the item as it is ``now`` is what this write leaves (so it was applied, or needs no more)."""
        if self.kind == "delete":
            return now is None
        if now is None or self.new is None:
            return False
        if self.kind in ("insert", "recreate"):
            return item_digest(now) == item_digest(self.new)
        return all(name in now and value_digest(now[name]) == value_digest(v) for name, v in self.sets.items()) and (
            not any(name in now for name in self.removes)
        )

    def written_size(self) -> int:
        """The bytes DynamoDB charges this write by: the larger of the item before and after it."""
        before = item_size(self.raw)
        if self.new is None:
            return before
        after = item_size(self.new) if self.size_change is None else before + self.size_change
        return max(before, after)


def next_version(raw: Mapping[str, Any], version_attribute: str) -> dict[str, str]:
    """The value a guarded update gives ``version_attribute``: one more than in ``raw`` (1 when missing).

    A version that is not a whole number cannot be incremented: UnwritableError names it.
    """
    current = raw.get(version_attribute)
    if current is None:
        return {"N": "1"}
    try:
        number = Decimal(current["N"]) if "N" in current else None
    except InvalidOperation:
        number = None
    if number is None or number != number.to_integral_value():
        shown = next(iter(current.values())) if current else current
        raise UnwritableError(
            f"version_attribute {version_attribute!r} holds {shown!r}, not a whole number: "
            "ddbnb increments it on every write"
        )
    return {"N": str(number.to_integral_value() + 1)}


def _guards_for(raw: Mapping[str, Any], names: Sequence[str], version_attribute: str) -> list[tuple[str, Any]]:
    if version_attribute:
        return [(version_attribute, raw.get(version_attribute))]
    return [(name, raw.get(name)) for name in names]


def update_write(
    table: str,
    key_names: Sequence[str],
    raw: Mapping[str, Any],
    new: Mapping[str, Any],
    version_attribute: str = "",
    kind: str = "update",
) -> Guarded | None:
    """The guarded write that turns ``raw`` into ``new``; None when nothing changed."""
    changed = [name for name, value in new.items() if name not in key_names and raw.get(name) != value]
    removed = [name for name in raw if name not in new and name not in key_names]
    if version_attribute:
        changed = [name for name in changed if name != version_attribute]
        removed = [name for name in removed if name != version_attribute]
    if not changed and not removed:
        return None
    sets = {name: new[name] for name in changed}
    if version_attribute:
        sets[version_attribute] = next_version(raw, version_attribute)
    after = {name: value for name, value in raw.items() if name not in removed}
    after.update(sets)
    key = {name: raw[name] for name in key_names}
    grown = sum(attribute_size(name, value) for name, value in sets.items())
    shrunk = sum(attribute_size(name, raw[name]) for name in [*sets, *removed] if name in raw)
    write = Guarded(
        kind,
        table,
        key,
        dict(raw),
        key_text(key, key_names),
        new=after,
        sets=sets,
        removes=removed,
        guards=_guards_for(raw, [*changed, *removed], version_attribute),
        size_change=grown - shrunk,
    )
    return _render(write, key_names)


def delete_write(table: str, key_names: Sequence[str], raw: Mapping[str, Any], version_attribute: str = "") -> Guarded:
    """The DELETE of ``raw``, only while it is still as read (or its version is); it returns what it deleted."""
    key = {name: raw[name] for name in key_names}
    others = [name for name in raw if name not in key_names]
    write = Guarded(
        "delete", table, key, dict(raw), key_text(key, key_names), guards=_guards_for(raw, others, version_attribute)
    )
    return _render(write, key_names)


def insert_write(
    table: str,
    key_names: Sequence[str],
    new: Mapping[str, Any],
    raw: Mapping[str, Any] | None = None,
    kind: str = "insert",
) -> Guarded:
    """The INSERT of ``new``: it fails (a conflict) when the key already exists."""
    key = {name: new[name] for name in key_names if name in new}  # one it lacks: DynamoDB refuses the write
    write = Guarded(kind, table, key, dict(raw if raw is not None else new), key_text(key, key_names), new=dict(new))
    return _render(write, key_names)


# -- the two forms -------------------------------------------------------------------------------------------
def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _partiql_guard(name: str, value: Any, params: list[Any]) -> str:
    if value is None:
        return f"{_quoted(name)} IS MISSING"
    if "NULL" in value:
        return f"{_quoted(name)} IS NULL AND {_quoted(name)} IS NOT MISSING"  # MISSING IS NULL in PartiQL
    params.append(value)
    return f"{_quoted(name)} = ?"


def _partiql(write: Guarded, key_names: Sequence[str]) -> dict[str, Any] | None:
    """The PartiQL statement of ``write``, or None when PartiQL cannot carry it."""
    table = _quoted(write.table)
    if write.kind in ("insert", "recreate"):
        assert write.new is not None
        fields = ", ".join("'" + name.replace("'", "''") + "': ?" for name in write.new)
        statement = f"INSERT INTO {table} VALUE {{{fields}}}"
        return _within_limit(statement, list(write.new.values()))
    paths = [*write.sets, *write.removes, *(name for name, _ in write.guards), *key_names]
    if any(name.startswith(_PLACEHOLDER_PREFIXES) for name in paths) or len(write.guards) > MAX_PARTIQL_GUARDS:
        return None
    params: list[Any] = []
    head = f"DELETE FROM {table}"
    if write.kind != "delete":
        params.extend(write.sets.values())
        parts = [*(f"SET {_quoted(name)} = ?" for name in write.sets), *(f"REMOVE {_quoted(n)}" for n in write.removes)]
        head = f"UPDATE {table} " + " ".join(parts)
    where = []
    for name in key_names:
        params.append(write.key[name])
        where.append(f"{_quoted(name)} = ?")
    where += [_partiql_guard(name, value, params) for name, value in write.guards]
    tail = " RETURNING ALL OLD *" if write.kind == "delete" else ""
    return _within_limit(f"{head} WHERE {' AND '.join(where)}{tail}", params)


def _within_limit(statement: str, params: list[Any]) -> dict[str, Any] | None:
    return {"Statement": statement, "Parameters": params} if len(statement) <= MAX_STATEMENT_CHARS else None


class _Expression:
    """Placeholders for one item-API request: ``#n<i>`` for names, ``:v<i>`` for values."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}
        self.values: dict[str, Any] = {}
        self._by_name: dict[str, str] = {}

    def name(self, attribute: str) -> str:
        if attribute not in self._by_name:
            placeholder = f"#n{len(self._by_name)}"
            self._by_name[attribute] = placeholder
            self.names[placeholder] = attribute
        return self._by_name[attribute]

    def value(self, value: Any) -> str:
        placeholder = f":v{len(self.values)}"
        self.values[placeholder] = value
        return placeholder

    def guard(self, attribute: str, value: Any) -> tuple[str, int]:
        """One condition and the operators it costs."""
        if value is None:
            return f"attribute_not_exists({self.name(attribute)})", 1
        if "NULL" in value:
            return f"attribute_type({self.name(attribute)}, {self.value({'S': 'NULL'})})", 1
        return f"{self.name(attribute)} = {self.value(value)}", 1


def _condition(write: Guarded, names: _Expression, first: list[tuple[str, int]]) -> tuple[str, int]:
    clauses = first + [names.guard(name, value) for name, value in write.guards]
    text = " AND ".join(clause for clause, _ in clauses)
    return text, sum(cost for _, cost in clauses) + max(0, len(clauses) - 1)


def _item_call(write: Guarded, key_names: Sequence[str]) -> tuple[str, dict[str, Any]]:
    """The item-API call of ``write``; UnwritableError when it is beyond the item API's limits too."""
    names = _Expression()
    payload: dict[str, Any] = {"TableName": write.table, "ReturnConsumedCapacity": "TOTAL"}
    exists = [(f"attribute_exists({names.name(key_names[0])})", 1)]
    if write.kind in ("insert", "recreate"):
        operation = "PutItem"
        payload["Item"] = write.new
        condition, operators = f"attribute_not_exists({names.name(key_names[0])})", 1
    elif write.kind == "delete":
        operation = "DeleteItem"
        payload.update(Key=write.key, ReturnValues="ALL_OLD")
        condition, operators = _condition(write, names, exists)
    else:
        operation = "UpdateItem"
        payload["Key"] = write.key
        assignments = [f"{names.name(n)} = {names.value(v)}" for n, v in write.sets.items()]
        update = ("SET " + ", ".join(assignments)) if assignments else ""
        if write.removes:
            update += (" " if update else "") + "REMOVE " + ", ".join(names.name(n) for n in write.removes)
        _check_expression("UpdateExpression", update, len(write.sets) + len(write.removes), write)
        payload["UpdateExpression"] = update
        condition, operators = _condition(write, names, exists)  # an update never creates a deleted item
    _check_expression("ConditionExpression", condition, operators, write)
    payload["ConditionExpression"] = condition
    payload["ExpressionAttributeNames"] = names.names
    if names.values:
        payload["ExpressionAttributeValues"] = names.values
    return operation, payload


def _check_expression(what: str, text: str, operators: int, write: Guarded) -> None:
    if len(text.encode()) <= MAX_EXPRESSION_BYTES and operators <= MAX_OPERATORS:
        return
    raise UnwritableError(
        f"the {write.kind} of this item needs {len(write.guards)} guard(s) and {len(write.sets) + len(write.removes)} "
        f"changed attribute(s): its {what} ({len(text.encode()):,} bytes, {operators} operators) is over what one "
        f"DynamoDB write carries ({MAX_EXPRESSION_BYTES:,} bytes, {MAX_OPERATORS} operators) and its PartiQL "
        "statement is over 8,192 characters; set version_attribute to guard on one attribute instead"
    )


def _render(write: Guarded, key_names: Sequence[str]) -> Guarded:
    """Give ``write`` its PartiQL statement, or its item-API call when PartiQL cannot carry it."""
    write.statement = _partiql(write, key_names)
    if write.statement is None:
        write.request = _item_call(write, key_names)
    return write


# -- sending ------------------------------------------------------------------------------------------------
@dataclass
class GuardedOutcome:
    """What happened to a list of conditional writes.

    ``done`` were applied; ``conflicts`` were not (for certain, unless the write
    was ``resent``: then it may have been); ``failures`` DynamoDB refused;
    ``stalled`` stayed throttled.
    """

    done: list[Guarded] = field(default_factory=list)
    conflicts: list[Guarded] = field(default_factory=list)
    failures: list[tuple[Guarded, str]] = field(default_factory=list)
    stalled: list[Guarded] = field(default_factory=list)
    write_units: float = 0.0
    throttled: int = 0


def _batches(writes: Sequence[Guarded]) -> list[list[Guarded]]:
    """Chunks of at most 25 with no key twice (DynamoDB refuses duplicates in one call)."""
    batches: list[list[Guarded]] = []
    keys: list[set[str]] = []
    for write in writes:
        for batch, seen in zip(batches, keys, strict=True):
            if len(batch) < BATCH_SIZE and write.target_key not in seen:
                batch.append(write)
                seen.add(write.target_key)
                break
        else:
            batches.append([write])
            keys.append({write.target_key})
    return batches


def _systemic(code: str, message: str, write: Guarded) -> WriteRefusedError:
    return WriteRefusedError(write.table, code, message)


class _Sender:
    """Sends one list of guarded writes and sorts out what happened to each."""

    def __init__(self, dynamodb: WireClient, backoff: Backoff) -> None:
        self.dynamodb = dynamodb
        self.backoff = backoff
        self.outcome = GuardedOutcome()
        self.settled: list[Guarded] = []  # answered as applied: checked for a delete that saw more than it read

    def answer(self, write: Guarded, code: str | None, message: str, old: WireItem | None = None) -> bool:
        """File one write's answer; return True when it is to be sent again (throttled)."""
        if code is None:
            write.old = old
            self.settled.append(write)
        elif code in CONFLICT_CODES or code == "ConditionalCheckFailedException":
            self.outcome.conflicts.append(write)
        elif code in RETRY_CODES:
            return True
        elif code in SYSTEMIC_CODES:
            raise _systemic(code, message, write)
        else:
            self.outcome.failures.append((write, f"{code}: {message}"))
        return False

    def statements(self, pending: list[Guarded]) -> list[Guarded]:
        payload = {"Statements": [w.statement for w in pending], "ReturnConsumedCapacity": "TOTAL"}
        try:
            response, resent = self.dynamodb.call_tracked("BatchExecuteStatement", payload)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            if error.get("Code") == "ValidationException" and len(pending) > 1:
                for write in pending:  # one by one, so only the statement refused fails
                    self._until_stalled([write], self.statements)
                return []
            if error.get("Code") == "ValidationException":
                self.outcome.failures.append((pending[0], f"ValidationException: {error.get('Message')}"))
                return []
            if not is_throttle(exc) and error.get("Code") in SYSTEMIC_CODES:
                raise _systemic(str(error.get("Code")), str(error.get("Message")), pending[0]) from None
            raise
        for write in pending:
            write.resent = write.resent or resent
        reported = "ConsumedCapacity" in response
        self.outcome.write_units += consumed_units(response) if reported else _estimated_units(pending, response)
        retry = []
        for write, answer in zip(pending, response.get("Responses", []), strict=True):
            error = answer.get("Error") or {}
            if self.answer(write, error.get("Code"), str(error.get("Message")), answer.get("Item")):
                retry.append(write)
        return retry

    def item_call(self, pending: list[Guarded]) -> list[Guarded]:
        (write,) = pending
        assert write.request is not None
        operation, payload = write.request
        try:
            response, resent = self.dynamodb.call_tracked(operation, payload)
        except ClientError as exc:
            if is_throttle(exc):
                raise
            error = exc.response.get("Error", {})
            if error.get("Code") == "ConditionalCheckFailedException":  # a refused write is charged too
                self.outcome.write_units += write_units(write.written_size())
            return [write] if self.answer(write, error.get("Code"), str(error.get("Message"))) else []
        write.resent = write.resent or resent
        self.outcome.write_units += consumed_units(response)
        self.answer(write, None, "", response.get("Attributes") if write.kind == "delete" else None)
        return []

    def send(self, writes: Sequence[Guarded]) -> None:
        by_statement = [w for w in writes if w.statement is not None]
        for batch in _batches(by_statement):
            self._until_stalled(batch, self.statements)
        for write in (w for w in writes if w.statement is None):
            self._until_stalled([write], self.item_call)

    def _until_stalled(self, batch: list[Guarded], send: Callable[[list[Guarded]], list[Guarded]]) -> None:
        stalled, throttled = retry_until_stalled(batch, send, self.backoff)
        self.outcome.stalled.extend(stalled)
        self.outcome.throttled += throttled


def write_guarded(dynamodb: WireClient, writes: Sequence[Guarded], backoff: Backoff) -> GuardedOutcome:
    """Send ``writes``: PartiQL ones 25 a call, the others one by one; retry throttled ones until they stall.

    A write whose condition fails is a conflict (the caller reads the item again);
    one DynamoDB refuses is a failure with DynamoDB's reason; one still throttled
    after ``backoff.attempts`` calls without progress is returned as stalled.
    A delete that deleted more than was read is put back (a conflict), or, when
    the application re-created the item first, a failure. Refused for access or
    a missing table: WriteRefusedError.
    """
    sender = _Sender(dynamodb, backoff)
    sender.send(writes)
    outcome = sender.outcome
    for write in sender.settled:
        _settle(dynamodb, write, outcome, backoff)
    _check_resent(dynamodb, outcome, backoff)
    return outcome


def _settle(dynamodb: WireClient, write: Guarded, outcome: GuardedOutcome, backoff: Backoff) -> None:
    """File a write DynamoDB answered as applied; a delete must have deleted exactly what was read."""
    if write.kind != "delete":
        outcome.done.append(write)
        return
    if write.old is None:  # nothing was there: the item was deleted meanwhile, and this deleted nothing...
        if write.resent:  # ...or by this delete's first send, whose answer was lost: the item is gone either way
            outcome.done.append(write)
        else:
            outcome.conflicts.append(write)
        return
    if item_digest(write.old) == item_digest(write.raw):
        outcome.done.append(write)
        return
    # The item had changed in ways the guard could not see (an attribute added after the read): put it back.
    try:
        back = put_back(dynamodb, write.table, write.key, write.old, backoff)
    except ClientError as exc:
        if not is_throttle(exc):
            raise
        why = "DynamoDB throttled every try to put it back"
    else:
        if back:
            outcome.conflicts.append(write)
            return
        why = "the application wrote it again before ddbnb could put it back"
    outcome.failures.append(
        (
            write,
            f"deleted_changed_item: the item had changed since it was read and {why}; "
            "the deleted image is in the journal",
        )
    )


def put_back(dynamodb: WireClient, table: str, key: Mapping[str, Any], old: WireItem, backoff: Backoff) -> bool:
    """Write ``old`` again unless an item with its key exists by now; whether it was written."""
    name = next(iter(key))
    payload = {
        "TableName": table,
        "Item": old,
        "ConditionExpression": "attribute_not_exists(#k)",
        "ExpressionAttributeNames": {"#k": name},
    }
    try:
        call_patiently(lambda: dynamodb.call("PutItem", payload), backoff)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
            return False
        raise
    return True


def _check_resent(dynamodb: WireClient, outcome: GuardedOutcome, backoff: Backoff) -> None:
    """A refused write whose call was sent twice may have been applied by the first send: look."""
    for write in [w for w in outcome.conflicts if w.resent]:
        try:
            now = read_again(dynamodb, write.table, write.key, backoff)
        except ClientError as exc:
            if is_throttle(exc):
                continue  # unknown still: the caller reads it again
            raise
        if write.applied_in(now):
            outcome.conflicts.remove(write)
            outcome.done.append(write)


def _estimated_units(writes: Sequence[Guarded], response: dict[str, Any]) -> float:
    """Write units by DynamoDB's sizing rules, for endpoints that report none (DynamoDB Local's PartiQL)."""
    units = 0.0
    for write, answer in zip(writes, response.get("Responses", []), strict=True):
        if "Error" not in answer or answer["Error"].get("Code") in CONFLICT_CODES:
            units += write_units(write.written_size())
    return units


def read_again(
    dynamodb: WireClient, table: str, key: Mapping[str, Any], backoff: Backoff | None = None
) -> WireItem | None:
    """The item as it is now (strongly consistent), or None when it is gone.

    Throttled reads are retried; still throttled after ``backoff.attempts``, the
    throttling ClientError propagates (the caller stalls the page).
    """
    payload = {"TableName": table, "Key": dict(key), "ConsistentRead": True}
    response, _ = call_patiently(lambda: dynamodb.call("GetItem", payload), backoff or Backoff())
    item: WireItem | None = response.get("Item")
    return item
