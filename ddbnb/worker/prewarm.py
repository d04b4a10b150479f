"""Pre-warm and restore: raise the capacity a run meets, then put back exactly what was raised.

A provisioned table (and each provisioned GSI, which throttles the table's
writes on its own) gets ``max(current, requested)`` units; only the settings
that go up are sent. An on-demand table gets warm throughput, which cannot be
lowered again. Before the first UpdateTable, each target's capacity as it is
(its *original*) is written to a record (``record_to``: in the results bucket on
AWS); a raise that is tried again, after a partial success or a timeout, reads
the originals from that record, never from the tables it already raised. What
was raised is kept as restore records (plain JSON, so they travel through Step
Functions, and can be rebuilt from the record on any exit path); restoring puts
back the original value of each setting that still holds the value ddbnb set,
and leaves (and reports) one that someone changed since. A refused restore is
reported, never raised.

Runs in the worker Lambda (called by the state machine, and by the EventBridge
rule when an execution is stopped or times out) and in ddbnb itself (its stop
path). Only the standard library and boto3.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from ddbnb.exceptions import CapacityRefusedError
from ddbnb.worker.clients import split_s3

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


def raise_request(
    described: Mapping[str, Any], read_units: int, write_units: int, original: Mapping[str, Any] | None = None
) -> Raise:
    """How to raise the table DescribeTable ``described`` to ``read_units`` / ``write_units`` (0: leave).

    ``original`` is the table as it was before this run raised anything (from
    the record; default: ``described``): the restore puts back its values, and
    a setting already at the raised value is not sent again.
    """
    original = original or described
    name = described["TableName"]
    request: dict[str, Any] = {"TableName": name}
    if described.get("BillingModeSummary", {}).get("BillingMode") == "PAY_PER_REQUEST":
        return _warm_request(described, request, described.get("GlobalSecondaryIndexes", []), read_units, write_units)
    restore: dict[str, Any] = {"table": name, "indexes": {}}
    notes = []
    saved = _provisioned(original.get("ProvisionedThroughput", {}))
    current = _provisioned(described.get("ProvisionedThroughput", {}))
    wanted = [max(saved[0], read_units), max(saved[1], write_units)]
    if wanted != saved:
        restore["units"] = {"saved": saved, "raised": wanted}
        notes.append(
            f"{name}: provisioned {saved[0]:,}/{saved[1]:,} read/write units raised to {wanted[0]:,}/{wanted[1]:,}"
        )
    if [max(c, w) for c, w in zip(current, wanted, strict=True)] != current:
        request["ProvisionedThroughput"] = _units([max(c, w) for c, w in zip(current, wanted, strict=True)])
    updates = []
    before = {i["IndexName"]: i for i in original.get("GlobalSecondaryIndexes", [])}
    for index in described.get("GlobalSecondaryIndexes", []):  # the migration writes through every GSI; reads none
        was = _provisioned(before.get(index["IndexName"], index).get("ProvisionedThroughput", {}))
        now = _provisioned(index.get("ProvisionedThroughput", {}))
        raised = [was[0], max(was[1], write_units)]
        if raised != was:
            restore["indexes"][index["IndexName"]] = {"saved": was, "raised": raised}
            notes.append(f"{name}: index {index['IndexName']} write units raised from {was[1]:,} to {raised[1]:,}")
        if max(now[1], raised[1]) != now[1]:
            target = _units([now[0], max(now[1], raised[1])])
            updates.append({"Update": {"IndexName": index["IndexName"], "ProvisionedThroughput": target}})
    if updates:
        request["GlobalSecondaryIndexUpdates"] = updates
    if "units" not in restore and not restore["indexes"]:
        return Raise(None, None, [f"{name}: already at or above the requested capacity; nothing raised"])
    return Raise(request if len(request) > 1 else None, restore, notes)


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


def original_of(described: Mapping[str, Any]) -> dict[str, Any]:
    """What a record keeps of a table before anything is raised: its billing mode and provisioned units."""
    return {
        "TableName": described["TableName"],
        "BillingModeSummary": dict(described.get("BillingModeSummary", {})),
        "ProvisionedThroughput": _units(_provisioned(described.get("ProvisionedThroughput", {}))),
        "GlobalSecondaryIndexes": [
            {
                "IndexName": i["IndexName"],
                "ProvisionedThroughput": _units(_provisioned(i.get("ProvisionedThroughput", {}))),
            }
            for i in described.get("GlobalSecondaryIndexes", [])
        ],
    }


def raise_capacity(
    dynamodb: Any, targets: Iterable[Mapping[str, Any]], record_to: str = "", s3: Any = None
) -> dict[str, Any]:
    """Raise each target's capacity; return whether anything can be restored, the restore records,
    the tables to wait on, and notes.

    With ``record_to`` (``s3://bucket/key``, or a file path), the targets' original
    capacity is written there before the first UpdateTable; a raise tried again
    finds the record and raises (and later restores) from those originals.
    When one table's raise is refused, the tables raised before it are restored
    at once and CapacityRefusedError names the table and DynamoDB's reason.
    """
    targets = list(targets)
    record = load_record(record_to, s3) if record_to else None
    if record is None:
        described = []
        for target in targets:
            try:
                described.append(original_of(dynamodb.describe_table(TableName=target["table"])["Table"]))
            except (ClientError, BotoCoreError) as error:
                raise CapacityRefusedError(target["table"], str(error)) from None
        record = {"targets": targets, "originals": described}
        if record_to:
            store_record(record_to, record, s3)  # before the first UpdateTable: every exit path restores from it
    originals = {o["TableName"]: o for o in record["originals"]}
    records: list[dict[str, Any]] = []
    notes: list[str] = []
    tables = []
    for target in targets:
        table = target["table"]
        try:
            described = dynamodb.describe_table(TableName=table)["Table"]
            planned = raise_request(
                described, int(target.get("read_units", 0)), int(target.get("write_units", 0)), originals.get(table)
            )
            if planned.request is not None:
                dynamodb.update_table(**planned.request)
        except (ClientError, BotoCoreError) as error:
            undone = restore_capacity(dynamodb, records)
            raise CapacityRefusedError(table, str(error), "; ".join(undone["notes"])) from None
        notes += planned.notes
        if planned.request is None and planned.restore is None:
            continue
        tables.append(table)
        if planned.restore is not None:
            records.append(planned.restore)
    return {"raised": bool(records), "restore": records, "tables": tables, "notes": notes}


def restore_records(record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The restore records a capacity record implies: what each target's raise set, against its original."""
    originals = {o["TableName"]: o for o in record.get("originals", [])}
    found = []
    for target in record.get("targets", []):
        original = originals.get(target["table"])
        if original is None:
            continue
        planned = raise_request(original, int(target.get("read_units", 0)), int(target.get("write_units", 0)))
        if planned.restore is not None:
            found.append(planned.restore)
    return found


def load_record(location: str, s3: Any = None) -> dict[str, Any] | None:
    """The capacity record at ``location`` (None when there is none yet)."""
    if location.startswith("s3://"):
        bucket, key = split_s3(location)
        try:
            body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
                return None
            raise
        return dict(json.loads(body))
    path = Path(location)
    return dict(json.loads(path.read_text())) if path.is_file() else None


def store_record(location: str, record: Mapping[str, Any], s3: Any = None) -> None:
    """Write the capacity record to ``location`` (an ``s3://`` URI, or a file)."""
    body = json.dumps(record, default=str).encode()
    if location.startswith("s3://"):
        bucket, key = split_s3(location)
        s3.put_object(Bucket=bucket, Key=key, Body=body)
    else:
        Path(location).parent.mkdir(parents=True, exist_ok=True)
        Path(location).write_bytes(body)


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


def record_location(bucket: str, execution_name: str) -> str:
    """Where an execution's capacity record lives in the results bucket."""
    return f"s3://{bucket}/runs/{execution_name}/capacity.json"


def restore_after_stop(
    dynamodb: Any, stepfunctions: Any, execution_arn: str, s3: Any = None, bucket: str = ""
) -> dict[str, Any]:
    """Restore what a failed, stopped or timed-out execution raised.

    The capacity record in the results bucket (written before the first raise)
    says what to restore, even when the raise itself timed out; an execution
    started by an older stack has none, and its history's RaiseCapacity output is read.
    """
    records: list[dict[str, Any]] | None = None
    if bucket and s3 is not None:
        try:
            record = load_record(record_location(bucket, execution_arn.rsplit(":", 1)[-1]), s3)
        except (ClientError, BotoCoreError) as error:
            note = f"could not read the capacity record of {execution_arn} ({error}): check the tables' capacity"
            return {"execution_arn": execution_arn, "restored": [], "left": [{"reason": str(error)}], "notes": [note]}
        if record is not None:
            records = restore_records(record)
    if records is None:
        try:
            for page in stepfunctions.get_paginator("get_execution_history").paginate(executionArn=execution_arn):
                records = records_from_history(page.get("events", []))
                if records is not None:
                    break
        except (ClientError, BotoCoreError) as error:
            note = f"could not read {execution_arn}'s history ({error}): check the tables' capacity by hand"
            return {"execution_arn": execution_arn, "restored": [], "left": [{"reason": str(error)}], "notes": [note]}
    return {"execution_arn": execution_arn, **restore_capacity(dynamodb, records or [])}
