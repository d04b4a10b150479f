"""Shared fixtures: the real sandbox (DynamoDB Local + moto server) and table helpers."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

import ddbnb
from ddbnb.emulation.servers import Sandbox
from ddbnb.worker.clients import client
from ddbnb.worker.items import deserialize
from ddbnb.worker.wire import WireClient
from ddbnb.worker.writes import BATCH_SIZE, Backoff, write_batch

#: The repository's root: where scripts the tests start run from.
ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures"
TRANSFORMS = FIXTURES / "transforms.py"
_names = itertools.count()


def spec(name: str) -> str:
    """A transform spec for a function in tests/fixtures/transforms.py."""
    return f"{TRANSFORMS}:{name}"


@pytest.fixture(scope="session")
def sandbox() -> Iterator[Sandbox]:
    """DynamoDB Local and a moto server for the whole session; AWS env points at them."""
    with ddbnb.sandbox() as running:
        yield running


@pytest.fixture
def dynamodb(sandbox: Sandbox) -> Any:
    """A DynamoDB client for the sandbox."""
    return client("dynamodb")


def create_table(
    dynamodb: Any,
    keys: tuple[str, ...] = ("pk", "sk"),
    *,
    key_type: str = "S",
    throughput: int = 0,
    stream: str = "",
) -> str:
    """Create an empty table keyed by ``keys`` of ``key_type``; return its unique name.

    On demand, or provisioned with ``throughput`` write units (and 10x as many read units); with a
    stream of view type ``stream`` when given.
    """
    name = f"t{next(_names)}-{id(dynamodb) % 10_000}"
    roles = ("HASH", "RANGE")
    billing: dict[str, Any] = {"BillingMode": "PAY_PER_REQUEST"}
    if throughput:
        billing = {"ProvisionedThroughput": {"ReadCapacityUnits": 10 * throughput, "WriteCapacityUnits": throughput}}
    dynamodb.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": k, "KeyType": r} for k, r in zip(keys, roles[: len(keys)], strict=True)],
        AttributeDefinitions=[{"AttributeName": k, "AttributeType": key_type} for k in keys],
        **billing,
        **({"StreamSpecification": {"StreamEnabled": True, "StreamViewType": stream}} if stream else {}),
    )
    return name


def put_items(dynamodb: Any, table: str, items: list[dict[str, Any]]) -> None:
    """Write wire-format items, failing the test on any failure."""
    wire = WireClient()  # one client: making one takes longer than a batch write to DynamoDB Local
    for i in range(0, len(items), BATCH_SIZE):
        chunk = [{"PutRequest": {"Item": item}} for item in items[i : i + BATCH_SIZE]]
        assert not write_batch(wire, table, chunk, Backoff()).failures


def scan_all(dynamodb: Any, table: str) -> dict[tuple[str, str], dict[str, Any]]:
    """Every item of a (pk, sk) table by key, deserialized."""
    items = {}
    for page in dynamodb.get_paginator("scan").paginate(TableName=table):
        for raw in page["Items"]:
            item = deserialize(raw)
            items[(item["pk"], item.get("sk", ""))] = item
    return items


def simple_item(i: int, kind: str = "change", pad: int = 0) -> dict[str, Any]:
    """A wire-format item with a composite key and a ``kind``."""
    item = {"pk": {"S": f"p{i % 17:02d}"}, "sk": {"S": f"s{i:06d}"}, "kind": {"S": kind}, "n": {"N": str(i)}}
    if pad:
        item["pad"] = {"S": "x" * pad}
    return item


@pytest.fixture
def make_table(dynamodb: Any) -> Callable[..., str]:
    """Create a (pk, sk) table holding the given wire-format items."""

    def make(items: list[dict[str, Any]], keys: tuple[str, ...] = ("pk", "sk")) -> str:
        name = create_table(dynamodb, keys)
        put_items(dynamodb, name, items)
        return name

    return make


@pytest.fixture
def session(sandbox: Sandbox) -> boto3.Session:
    """A fresh boto3 session (its event hooks are the test's own)."""
    return boto3.Session()
