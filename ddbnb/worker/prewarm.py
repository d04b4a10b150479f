"""Pre-warm and restore: raise the capacity a run meets, then put back exactly what was raised.

A provisioned table (and each provisioned GSI, which throttles the table's
writes on its own) gets ``max(current, requested)`` units; only the settings
that go up are sent. An on-demand table gets warm throughput, which cannot be
lowered again. What was raised is kept as a restore record (plain JSON, so it
travels through Step Functions); restoring puts back the saved value of each
setting that still holds the value ddbnb set, and leaves (and reports) one
that someone changed since. A refused restore is reported, never raised.

Runs in the worker Lambda (called by the state machine, and by the EventBridge
rule when an execution is stopped or times out) and in ddbnb itself (its stop
path). Only the standard library and boto3.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from ddbnb.exceptions import CapacityRefusedError

#: Seconds between tries of a restore while the table is still being updated.
BUSY_POLL_S = 5.0
#: The state whose output holds the restore records (see cloudformation/migration.yaml).
RAISE_STATE = "RaiseCapacity"
_UNITS = ("ReadCapacityUnits", "WriteCapacityUnits")


def _units(values: list[int]) -> dict[str, int]:
    return dict(zip(_UNITS, values, strict=True))


@dataclass
class Raise:
    """What raising one table's capacity takes: the UpdateTable request, how to undo it, and notes."""

    request: dict[str, Any] | None
    restore: dict[str, Any] | None
    notes: list[str] = field(default_factory=list)


def targets_for(table: str, destination: str | None, read_units: int, write_units: int) -> list[dict[str, Any]]:
    """The tables to raise: reads on the source, writes on the table written to."""
    if not destination or destination == table:
        both = {"table": table, "read_units": read_units, "write_units": write_units}
        return [both] if read_units or write_units else []
    targets = []
    if read_units:
        targets.append({"table": table, "read_units": read_units, "write_units": 0})
    if write_units:
        targets.append({"table": destination, "read_units": 0, "write_units": write_units})
    return targets


def _provisioned(units: Mapping[str, Any]) -> list[int]:
    return [int(units.get(name, 0)) for name in _UNITS]


def raise_request(described: Mapping[str, Any], read_units: int, write_units: int) -> Raise:
    """How to raise the table DescribeTable ``described`` to ``read_units`` / ``write_units`` (0: leave)."""
    name = described["TableName"]
    request: dict[str, Any] = {"TableName": name}
    indexes = described.get("GlobalSecondaryIndexes", [])
    if described.get("BillingModeSummary", {}).get("BillingMode") == "PAY_PER_REQUEST":
        return _warm_request(described, request, indexes, read_units, write_units)
    restore: dict[str, Any] = {"table": name, "indexes": {}}
    notes = []
    current = _provisioned(described.get("ProvisionedThroughput", {}))
    wanted = [max(current[0], read_units), max(current[1], write_units)]
    if wanted != current:
        request["ProvisionedThroughput"] = _units(wanted)
        restore["units"] = {"saved": current, "raised": wanted}
        notes.append(
            f"{name}: provisioned {current[0]:,}/{current[1]:,} read/write units raised to {wanted[0]:,}/{wanted[1]:,}"
        )
    updates = []
    for index in indexes:  # the migration writes through every GSI; it reads none
        saved = _provisioned(index.get("ProvisionedThroughput", {}))
        raised = [saved[0], max(saved[1], write_units)]
        if raised != saved:
            updates.append({"Update": {"IndexName": index["IndexName"], "ProvisionedThroughput": _units(raised)}})
            restore["indexes"][index["IndexName"]] = {"saved": saved, "raised": raised}
            notes.append(f"{name}: index {index['IndexName']} write units raised from {saved[1]:,} to {raised[1]:,}")
    if updates:
        request["GlobalSecondaryIndexUpdates"] = updates
    if len(request) == 1:
        return Raise(None, None, [f"{name}: already at or above the requested capacity; nothing raised"])
    return Raise(request, restore, notes)


def _warm_request(
    described: Mapping[str, Any], request: dict[str, Any], indexes: list[Any], read_units: int, write_units: int
) -> Raise:
    """On demand: warm the table (and its GSIs' writes) up; warm throughput cannot be lowered again."""
    name = described["TableName"]
    warm = described.get("WarmThroughput", {})
    fields = {}
    if read_units > int(warm.get("ReadUnitsPerSecond", 0)):
        fields["ReadUnitsPerSecond"] = read_units
    if write_units > int(warm.get("WriteUnitsPerSecond", 0)):
        fields["WriteUnitsPerSecond"] = write_units
    if fields:
        request["WarmThroughput"] = fields
    updates = [
        {"Update": {"IndexName": index["IndexName"], "WarmThroughput": {"WriteUnitsPerSecond": write_units}}}
        for index in indexes
        if write_units > int(index.get("WarmThroughput", {}).get("WriteUnitsPerSecond", 0))
    ]
    if updates:
        request["GlobalSecondaryIndexUpdates"] = updates
    if len(request) == 1:
        return Raise(None, None, [f"{name}: warm throughput already at or above the request; nothing warmed"])
    notes = [
        f"{name}: on demand, warm throughput raised to {fields or 'its current value'}"
        + (f" and {len(updates)} index(es) to {write_units:,} writes/s" if updates else "")
        + "; it cannot be lowered again, and the raise is billed once (see DynamoDB pricing)"
    ]
    cap = int(described.get("OnDemandThroughput", {}).get("MaxWriteRequestUnits", -1))
    if 0 < cap < write_units:
        notes.append(f"{name}: its OnDemandThroughput cap of {cap:,} write units/s still limits the run")
    return Raise(request, None, notes)


def restore_request(described: Mapping[str, Any], record: Mapping[str, Any]) -> tuple[dict[str, Any] | None, list[str]]:
    """The UpdateTable request that puts back what ``record`` raised, as the table is now, and notes.

    A setting someone changed since the raise (it no longer holds the value
    ddbnb set) is left as it is, and the note says so.
    """
    name = record["table"]
    if described.get("BillingModeSummary", {}).get("BillingMode") == "PAY_PER_REQUEST":
        return None, [f"{name}: now on demand; no provisioned capacity to restore"]
    request: dict[str, Any] = {"TableName": name}
    notes: list[str] = []
    if "units" in record:
        target = _put_back(name, _provisioned(described.get("ProvisionedThroughput", {})), record["units"], notes)
        if target is not None:
            request["ProvisionedThroughput"] = _units(target)
    current = {i["IndexName"]: i for i in described.get("GlobalSecondaryIndexes", [])}
    updates = []
    for index, raised in record.get("indexes", {}).items():
        if index not in current:
            notes.append(f"{name}: index {index} is gone; nothing to restore")
            continue
        now = _provisioned(current[index].get("ProvisionedThroughput", {}))
        target = _put_back(f"{name} index {index}", now, raised, notes)
        if target is not None:
            updates.append({"Update": {"IndexName": index, "ProvisionedThroughput": _units(target)}})
    if updates:
        request["GlobalSecondaryIndexUpdates"] = updates
    return (request if len(request) > 1 else None), notes


def _put_back(what: str, current: list[int], record: Mapping[str, Any], notes: list[str]) -> list[int] | None:
    """The units to set on ``what`` (None: nothing to change): saved where it still holds the raised value."""
    saved, raised = list(record["saved"]), list(record["raised"])
    target = []
    for kind, now, before, set_to in zip(("read", "write"), current, saved, raised, strict=True):
        if now == set_to:
            target.append(before)
        else:
            target.append(now)
            if now != before:
                notes.append(f"{what}: {kind} units are {now:,}, not the {set_to:,} ddbnb set; left as they are")
    return target if target != current else None


def raise_capacity(dynamodb: Any, targets: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Raise each target's capacity; return whether anything can be restored, the restore records,
    the tables to wait on, and notes.

    When one table's raise is refused, the tables raised before it are restored
    at once and CapacityRefusedError names the table and DynamoDB's reason.
    """
    records: list[dict[str, Any]] = []
    notes: list[str] = []
    tables = []
    for target in targets:
        table = target["table"]
        try:
            described = dynamodb.describe_table(TableName=table)["Table"]
            planned = raise_request(described, int(target.get("read_units", 0)), int(target.get("write_units", 0)))
            if planned.request is not None:
                dynamodb.update_table(**planned.request)
        except (ClientError, BotoCoreError) as error:
            undone = restore_capacity(dynamodb, records)
            raise CapacityRefusedError(table, str(error), "; ".join(undone["notes"])) from None
        notes += planned.notes
        if planned.request is None:
            continue
        tables.append(table)
        if planned.restore is not None:
            records.append(planned.restore)
    return {"raised": bool(records), "restore": records, "tables": tables, "notes": notes}


def capacity_ready(dynamodb: Any, tables: Iterable[str]) -> bool:
    """True when each table, its GSIs and their warm throughput are ACTIVE again."""
    for table in tables:
        described = dynamodb.describe_table(TableName=table)["Table"]
        statuses = [described.get("TableStatus"), described.get("WarmThroughput", {}).get("Status", "ACTIVE")]
        for index in described.get("GlobalSecondaryIndexes", []):
            statuses += [index.get("IndexStatus"), index.get("WarmThroughput", {}).get("Status", "ACTIVE")]
        if any(status != "ACTIVE" for status in statuses):
            return False
    return True


def restore_capacity(
    dynamodb: Any, records: Iterable[Mapping[str, Any]], *, deadline: float | None = None
) -> dict[str, Any]:
    """Put back what ``records`` raised; never raises: what could not be restored is reported.

    A table still being updated is tried again every few seconds until
    ``deadline`` (a ``time.time()``; None: ten minutes from now).
    """
    deadline = time.time() + 600 if deadline is None else deadline
    restored, left, notes = [], [], []
    for record in records:
        table = record["table"]
        while True:
            try:
                described = dynamodb.describe_table(TableName=table)["Table"]
                request, said = restore_request(described, record)
                if request is not None:
                    dynamodb.update_table(**request)
                notes += said
                if request is not None:
                    restored.append(table)
                    notes.append(f"{table}: restored to {_describe_request(request)}")
                break
            except ClientError as error:
                code = error.response.get("Error", {}).get("Code", "")
                if code == "ResourceInUseException" and time.time() + BUSY_POLL_S < deadline:
                    time.sleep(BUSY_POLL_S)
                    continue
                left.append({"table": table, "reason": str(error), "record": dict(record)})
                notes.append(f"{table}: restore refused ({error}); set it back by hand: {json.dumps(dict(record))}")
                break
            except BotoCoreError as error:
                left.append({"table": table, "reason": str(error), "record": dict(record)})
                notes.append(f"{table}: restore failed ({error}); set it back by hand: {json.dumps(dict(record))}")
                break
    return {"restored": restored, "left": left, "notes": notes}


def _describe_request(request: Mapping[str, Any]) -> str:
    parts = []
    if "ProvisionedThroughput" in request:
        units = request["ProvisionedThroughput"]
        parts.append(f"{units['ReadCapacityUnits']:,}/{units['WriteCapacityUnits']:,} read/write units")
    for update in request.get("GlobalSecondaryIndexUpdates", []):
        units = update["Update"]["ProvisionedThroughput"]
        parts.append(f"index {update['Update']['IndexName']} {units['WriteCapacityUnits']:,} write units")
    return ", ".join(parts)


def records_from_history(events: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]] | None:
    """The restore records an execution's RaiseCapacity state left (None: these events hold no such state)."""
    for event in events:
        details = event.get("stateExitedEventDetails")
        if details and details.get("name") == RAISE_STATE:
            output = json.loads(details.get("output") or "{}")
            return list(output.get("capacity", {}).get("restore", []))
    return None


def restore_after_stop(dynamodb: Any, stepfunctions: Any, execution_arn: str) -> dict[str, Any]:
    """Restore what a stopped or timed-out execution raised, read from its history."""
    records: list[dict[str, Any]] | None = None
    try:
        for page in stepfunctions.get_paginator("get_execution_history").paginate(executionArn=execution_arn):
            records = records_from_history(page.get("events", []))
            if records is not None:
                break
    except (ClientError, BotoCoreError) as error:
        note = f"could not read {execution_arn}'s history ({error}): check the tables' capacity by hand"
        return {"execution_arn": execution_arn, "restored": [], "left": [{"reason": str(error)}], "notes": [note]}
    return {"execution_arn": execution_arn, **restore_capacity(dynamodb, records or [])}
