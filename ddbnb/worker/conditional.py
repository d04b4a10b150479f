"""Conditional writes for live tables: only what the transform changed, guarded by the values as read.

Only the standard library and boto3: this module ships inside the Lambda package.

Each write is one PartiQL statement; 25 go in one BatchExecuteStatement call and
DynamoDB answers each on its own (ADR 0007: 3x the items/s of per-item
UpdateItem on DynamoDB Local, at a sixteenth of the client CPU).

- **update**: ``SET`` the changed top-level attributes and ``REMOVE`` the
  removed ones, where each of them still holds the value that was read (or is
  still missing); an UPDATE of an item that no longer exists fails its
  condition, so a deleted item is never brought back. Attributes the transform
  did not touch are never written, so concurrent writes to them survive.
- **delete**: only while every attribute still holds the value that was read.
- **version_attribute**: guard on that one attribute instead, and increment it.
- **insert** (copying into a destination): ``INSERT`` fails on an existing key,
  so a collision is reported, never overwritten.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ddbnb.worker.items import item_size, write_units
from ddbnb.worker.wire import WireClient
from ddbnb.worker.writes import (
    BATCH_SIZE,
    THROTTLE_CODES,
    Backoff,
    call_patiently,
    consumed_units,
    retry_until_stalled,
)

#: Guards (conditions) one statement may carry; beyond it, use ``version_attribute``.
MAX_GUARDS = 100
#: PartiQL error codes that mean "try again later".
RETRY_CODES = THROTTLE_CODES | {"ThrottlingError", "ProvisionedThroughputExceeded", "TransactionConflict"}
#: PartiQL error codes that mean "the item is not as read" (or, for INSERT, "the key exists").
CONFLICT_CODES = frozenset({"ConditionalCheckFailed", "DuplicateItem"})

WireItem = dict[str, Any]


class TooManyGuardsError(ValueError):
    """A conditional write would need more guards than one statement carries."""


def _name(attribute: str) -> str:
    return '"' + attribute.replace('"', '""') + '"'


def _guard(attribute: str, value: Mapping[str, Any] | None, params: list[Any]) -> str:
    """The condition that ``attribute`` still holds ``value`` (None: still missing)."""
    if value is None:
        return f"{_name(attribute)} IS MISSING"
    if "NULL" in value:
        return f"{_name(attribute)} IS NULL"
    params.append(value)
    return f"{_name(attribute)} = ?"


def _where(key_names: Sequence[str], item: Mapping[str, Any], params: list[Any]) -> list[str]:
    clauses = []
    for name in key_names:
        params.append(item[name])
        clauses.append(f"{_name(name)} = ?")
    return clauses


def _guards(
    raw: Mapping[str, Any], names: Sequence[str], version_attribute: str, params: list[Any], what: str
) -> list[str]:
    """The conditions that ``names`` still hold their values in ``raw``, or that its version does."""
    if version_attribute:
        return [_guard(version_attribute, raw.get(version_attribute), params)]
    if len(names) > MAX_GUARDS:
        raise TooManyGuardsError(f"{len(names)} {what} are more than {MAX_GUARDS} conditions; use version_attribute")
    return [_guard(name, raw.get(name), params) for name in names]


def next_version(raw: Mapping[str, Any], version_attribute: str) -> dict[str, str]:
    """The value a guarded update gives ``version_attribute``: one more than in ``raw`` (1 when missing)."""
    current = raw.get(version_attribute)
    if current is None:
        return {"N": "1"}
    if "N" not in current:
        raise TooManyGuardsError(f"version attribute {version_attribute!r} is not a number")
    return {"N": str(int(current["N"]) + 1)}


def update_statement(
    table: str,
    key_names: Sequence[str],
    raw: Mapping[str, Any],
    new: Mapping[str, Any],
    version_attribute: str = "",
) -> dict[str, Any] | None:
    """The guarded UPDATE that turns ``raw`` into ``new``; None when nothing changed."""
    changed = [name for name, value in new.items() if name not in key_names and raw.get(name) != value]
    removed = [name for name in raw if name not in new and name not in key_names]
    if version_attribute:
        changed = [name for name in changed if name != version_attribute]
        removed = [name for name in removed if name != version_attribute]
    if not changed and not removed:
        return None
    params: list[Any] = []
    sets = []
    for name in changed:
        params.append(new[name])
        sets.append(f"SET {_name(name)} = ?")
    if version_attribute:
        params.append(next_version(raw, version_attribute))
        sets.append(f"SET {_name(version_attribute)} = ?")
    parts = [f"UPDATE {_name(table)}", *sets, *(f"REMOVE {_name(name)}" for name in removed)]
    where = _where(key_names, raw, params)
    where += _guards(raw, [*changed, *removed], version_attribute, params, "changed attributes")
    return {"Statement": " ".join(parts) + " WHERE " + " AND ".join(where), "Parameters": params}


def delete_statement(
    table: str, key_names: Sequence[str], raw: Mapping[str, Any], version_attribute: str = ""
) -> dict[str, Any]:
    """The DELETE of ``raw``, only while it is still as read (or its version is)."""
    params: list[Any] = []
    where = _where(key_names, raw, params)
    where += _guards(raw, [name for name in raw if name not in key_names], version_attribute, params, "attributes")
    return {"Statement": f"DELETE FROM {_name(table)} WHERE " + " AND ".join(where), "Parameters": params}


def insert_statement(table: str, new: Mapping[str, Any]) -> dict[str, Any]:
    """The INSERT of ``new``: it fails (DuplicateItem) when the key already exists."""
    fields = ", ".join("'" + name.replace("'", "''") + "': ?" for name in new)
    return {"Statement": f"INSERT INTO {_name(table)} VALUE {{{fields}}}", "Parameters": list(new.values())}


@dataclass
class Guarded:
    """One conditional write: the statement, and what it is for."""

    kind: str  # "update", "delete" or "insert"
    statement: dict[str, Any]
    raw: WireItem  # the source item as read
    target_key: tuple[str, ...]  # the written item's key, to keep duplicates out of one call
    new: WireItem | None = None  # what an update or insert writes


@dataclass
class GuardedOutcome:
    """What happened to a list of conditional writes."""

    done: list[Guarded] = field(default_factory=list)
    conflicts: list[Guarded] = field(default_factory=list)
    failures: list[tuple[Guarded, str]] = field(default_factory=list)
    stalled: list[Guarded] = field(default_factory=list)
    write_units: float = 0.0
    throttled: int = 0


def _batches(writes: Sequence[Guarded]) -> list[list[Guarded]]:
    """Chunks of at most 25 with no key twice (DynamoDB refuses duplicates in one call)."""
    batches: list[list[Guarded]] = []
    keys: list[set[tuple[str, ...]]] = []
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


def write_guarded(dynamodb: WireClient, writes: Sequence[Guarded], backoff: Backoff) -> GuardedOutcome:
    """Send ``writes`` 25 at a time; retry throttled ones until they succeed or stall.

    A write whose condition fails is a conflict (the caller reads the item again);
    one DynamoDB refuses is a failure with DynamoDB's reason; one still throttled
    after ``backoff.attempts`` calls without progress is returned as stalled.
    """
    outcome = GuardedOutcome()

    def send(pending: list[Guarded]) -> list[Guarded]:
        response = dynamodb.call(
            "BatchExecuteStatement", {"Statements": [w.statement for w in pending], "ReturnConsumedCapacity": "TOTAL"}
        )
        reported = "ConsumedCapacity" in response
        outcome.write_units += consumed_units(response) if reported else _estimated_units(pending, response)
        retry = []
        for write, answer in zip(pending, response.get("Responses", []), strict=True):
            error = answer.get("Error")
            if error is None:
                outcome.done.append(write)
            elif error.get("Code") in CONFLICT_CODES:
                outcome.conflicts.append(write)
            elif error.get("Code") in RETRY_CODES:
                retry.append(write)
            else:
                outcome.failures.append((write, f"{error.get('Code')}: {error.get('Message')}"))
        return retry

    for batch in _batches(writes):
        stalled, throttled = retry_until_stalled(batch, send, backoff)
        outcome.stalled.extend(stalled)
        outcome.throttled += throttled
    return outcome


def _estimated_units(writes: Sequence[Guarded], response: dict[str, Any]) -> float:
    """Write units by DynamoDB's sizing rules, for endpoints that report none (DynamoDB Local's PartiQL)."""
    units = 0.0
    for write, answer in zip(writes, response.get("Responses", []), strict=True):
        if "Error" not in answer or answer["Error"].get("Code") in CONFLICT_CODES:
            size = max(item_size(write.raw), item_size(write.new or {}))
            units += write_units(size)
    return units


def read_again(
    dynamodb: WireClient, table: str, key: Mapping[str, Any], backoff: Backoff | None = None
) -> WireItem | None:
    """The item as it is now (strongly consistent), or None when it is gone; throttled reads are retried."""
    payload = {"TableName": table, "Key": dict(key), "ConsistentRead": True}
    response, _ = call_patiently(lambda: dynamodb.call("GetItem", payload), backoff or Backoff())
    item: WireItem | None = response.get("Item")
    return item
