"""Facts about a table, from DescribeTable."""

from __future__ import annotations

from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.exceptions import ClientError

from ddbnb.exceptions import TableNotFoundError
from ddbnb.worker import params
from ddbnb.worker.clients import QUICK_CONFIG, clear_errors, client, describe_where
from ddbnb.worker.streams import stream_of


@dataclass(frozen=True)
class IndexFacts:
    """What DescribeTable says about one global secondary index."""

    name: str
    keys: tuple[str, ...]
    projection: str = "ALL"  # ALL, KEYS_ONLY or INCLUDE
    attributes: tuple[str, ...] = ()  # INCLUDE's non-key attributes
    write_capacity: int = 0  # provisioned write units (0: on demand)

    def writes_for(self, changed: set[str]) -> int:
        """The index writes one item write costs when it changes the attributes ``changed``: 0 when the index
        holds none of them, 2 when one is the index's key (a delete and a put), else 1."""
        if changed & set(self.keys):
            return 2
        if self.projection == "ALL" and changed:
            return 1
        return 1 if changed & set(self.attributes) else 0


@dataclass(frozen=True)
class TableFacts:
    """What DescribeTable says about a table."""

    name: str
    item_count: int
    size_bytes: int
    billing_mode: str
    read_capacity: int
    write_capacity: int
    key_names: tuple[str, ...]
    key_types: tuple[str, ...] = ()  # "S", "N" or "B" for each key attribute
    max_read_units: int = 0  # on demand: OnDemandThroughput's cap (0: none)
    max_write_units: int = 0
    warm_read_units: int = 0  # on demand: WarmThroughput (0: not reported)
    warm_write_units: int = 0
    stream_arn: str = ""  # the table's stream, when it has one on
    stream_view_type: str = ""  # what its records carry: KEYS_ONLY, NEW_IMAGE, OLD_IMAGE or NEW_AND_OLD_IMAGES
    indexes: tuple[IndexFacts, ...] = ()  # its global secondary indexes

    @property
    def key_schema(self) -> dict[str, str]:
        """Each key attribute's name and type ("S", "N" or "B")."""
        return dict(zip(self.key_names, self.key_types or ("S",) * len(self.key_names), strict=True))

    @property
    def average_item_bytes(self) -> float:
        """Mean item size, 0 for an empty table."""
        return self.size_bytes / self.item_count if self.item_count else 0.0


@clear_errors
def describe_table(
    table_name: str, boto3_session: boto3.Session | None = None, *, parameter: str = "table_name"
) -> TableFacts:
    """Describe ``table_name``, raising TableNotFoundError when it does not exist.

    ``parameter`` is the name the caller gave the table under (so the error names
    what to fix). An endpoint that does not answer is reported at once
    (EndpointUnreachableError).
    """
    params.check_table_name(parameter, table_name)
    dynamodb = client("dynamodb", boto3_session, config=QUICK_CONFIG)
    return table_facts(dynamodb, table_name, parameter)


@clear_errors
def list_tables(boto3_session: boto3.Session | None = None) -> list[str]:
    """The names of the tables at the endpoint and region in use (under ``make lab``: the sandbox's)."""
    dynamodb = client("dynamodb", boto3_session, config=QUICK_CONFIG)
    names: list[str] = []
    for page in dynamodb.get_paginator("list_tables").paginate():
        names += page.get("TableNames", [])
    return names


def point_in_time_recovery(table_name: str, boto3_session: boto3.Session | None = None) -> bool | None:
    """Whether point-in-time recovery is on for ``table_name``; None when the endpoint cannot say.

    DynamoDB Local has no backups (it answers UnknownOperationException), and a
    role without ``dynamodb:DescribeContinuousBackups`` gets AccessDenied: both
    give None, not an error.
    """
    dynamodb = client("dynamodb", boto3_session, config=QUICK_CONFIG)
    try:
        described = dynamodb.describe_continuous_backups(TableName=table_name)["ContinuousBackupsDescription"]
    except ClientError:
        return None
    status = described.get("PointInTimeRecoveryDescription", {}).get("PointInTimeRecoveryStatus")
    return None if status is None else status == "ENABLED"


def table_facts(dynamodb: Any, table_name: str, parameter: str = "table_name") -> TableFacts:
    """Describe ``table_name`` with an existing DynamoDB client."""
    try:
        table = dynamodb.describe_table(TableName=table_name)["Table"]
    except dynamodb.exceptions.ResourceNotFoundException:
        raise TableNotFoundError(table_name, describe_where(dynamodb), parameter) from None
    throughput = table.get("ProvisionedThroughput", {})
    types = {a["AttributeName"]: a["AttributeType"] for a in table.get("AttributeDefinitions", [])}
    cap, warm = table.get("OnDemandThroughput", {}), table.get("WarmThroughput", {})
    stream = stream_of(table)
    return TableFacts(
        name=table_name,
        item_count=int(table.get("ItemCount", 0)),
        size_bytes=int(table.get("TableSizeBytes", 0)),
        billing_mode=table.get("BillingModeSummary", {}).get("BillingMode", "PROVISIONED"),
        read_capacity=int(throughput.get("ReadCapacityUnits", 0)),
        write_capacity=int(throughput.get("WriteCapacityUnits", 0)),
        key_names=tuple(k["AttributeName"] for k in table["KeySchema"]),
        key_types=tuple(types.get(k["AttributeName"], "S") for k in table["KeySchema"]),
        max_read_units=max(0, int(cap.get("MaxReadRequestUnits", 0))),
        max_write_units=max(0, int(cap.get("MaxWriteRequestUnits", 0))),
        warm_read_units=int(warm.get("ReadUnitsPerSecond", 0)),
        warm_write_units=int(warm.get("WriteUnitsPerSecond", 0)),
        stream_arn=stream.arn,
        stream_view_type=stream.view_type,
        indexes=tuple(_index_facts(index) for index in table.get("GlobalSecondaryIndexes", [])),
    )


def worker_facts(
    wire: Any, table_name: str, parameter: str = "table_name", known: MutableMapping[str, TableFacts] | None = None
) -> TableFacts:
    """A worker's facts about ``table_name`` through ``wire`` (a :class:`~ddbnb.worker.wire.WireClient`), its
    connection retried; from ``known`` when it holds them, and kept there.

    The local engine hands its workers one ``known`` per run: the key schema does
    not change during a run, and it paces from shared budgets, not from the
    capacity each invocation sees. DynamoDB Local counts a table's items for
    every DescribeTable (0.1 s of its CPU at 100,000 items), so a describe per
    segment cost 3.4 s of its CPU a run. The aws engine passes none: each
    invocation paces to the capacity as it is then.
    """
    if known is not None and table_name in known:
        return known[table_name]
    facts: TableFacts = wire.retrying(lambda: table_facts(wire.client, table_name, parameter))
    if known is not None:
        known[table_name] = facts
    return facts


def _index_facts(index: dict[str, Any]) -> IndexFacts:
    projection = index.get("Projection", {})
    return IndexFacts(
        name=index["IndexName"],
        keys=tuple(k["AttributeName"] for k in index.get("KeySchema", [])),
        projection=projection.get("ProjectionType", "ALL"),
        attributes=tuple(projection.get("NonKeyAttributes", [])),
        write_capacity=int(index.get("ProvisionedThroughput", {}).get("WriteCapacityUnits", 0)),
    )
