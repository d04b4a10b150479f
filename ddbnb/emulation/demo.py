"""The demo: a realistic orders table in the sandbox, migrated through the notebooks."""

from __future__ import annotations

import base64
import random
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from typing import Any

import boto3

from ddbnb.exceptions import DdbnbError, NotLocalEndpointError, TableExistsError
from ddbnb.progress import progress_bar
from ddbnb.worker import params
from ddbnb.worker.clients import QUICK_CONFIG, clear_errors, client, is_loopback
from ddbnb.worker.wire import WireClient
from ddbnb.worker.writes import BATCH_SIZE, Backoff, write_batch

DEMO_TABLE = "demo-orders"
DEMO_TRANSFORM = "lambda/transforms/demo.py:upgrade_order"
STATUSES = ["pending", "SHIPPED", "shipped", "delivered", "DELIVERED", "returned", "purged"]
STATUS_WEIGHTS = [20, 15, 15, 25, 15, 8, 2]
TAGS = ["gift", "express", "fragile", "bulk", "promo", "b2b", "eco", "priority", "intl"]
CITIES = ["Lisbon", "Porto", "Berlin", "Lyon", "Austin", "Osaka", "Nairobi", "Quito", "Oslo"]
WORDS = "order note customer asked for delivery before noon leave parcel with neighbour call on arrival".split()


def _s(value: str) -> dict[str, str]:
    return {"S": value}


def _n(value: Any) -> dict[str, str]:
    return {"N": str(value)}


def demo_item(index: int, rng: random.Random) -> dict[str, Any]:
    """One wire-format order: composite key, nested maps and lists, sets, numbers, varied size."""
    day = datetime(2024, 1, 1, tzinfo=timezone.utc) + timedelta(minutes=7 * index)
    lines = [
        {
            "M": {
                "sku": _s(f"SKU-{rng.randrange(10_000):05d}"),
                "qty": _n(rng.randint(1, 5)),
                "price": _n(f"{rng.randint(100, 20_000) / 100:.2f}"),
            }
        }
        for _ in range(rng.randint(1, 8))
    ]
    note_words = int(rng.lognormvariate(4.3, 0.6))
    item: dict[str, Any] = {
        "pk": _s(f"CUSTOMER#{rng.randrange(20_000):06d}"),
        "sk": _s(f"ORDER#{day:%Y-%m-%dT%H:%M}#{index:07d}"),
        "status": _s(rng.choices(STATUSES, STATUS_WEIGHTS)[0]),
        "schema_version": _n(2 if rng.random() < 0.05 else 1),
        "total": _n(f"{rng.randint(500, 500_000) / 100:.2f}"),
        "currency": _s(rng.choice(["EUR", "USD", "JPY"])),
        "tags": {"SS": sorted(rng.sample(TAGS, rng.randint(1, 4)))},
        "ratings": {"NS": sorted({str(rng.randint(1, 5)) for _ in range(rng.randint(1, 3))})},
        "address": {
            "M": {
                "street": _s(f"{rng.randint(1, 999)} {rng.choice(WORDS).title()} Street"),
                "city": _s(rng.choice(CITIES)),
                "geo": {"M": {"lat": _n(f"{rng.uniform(-60, 60):.5f}"), "lon": _n(f"{rng.uniform(-170, 170):.5f}")}},
            }
        },
        "lines": {"L": lines},
        "notes": _s(" ".join(rng.choice(WORDS) for _ in range(note_words))),
    }
    if rng.random() < 0.02:  # a few large items, so segments span several pages
        item["attachment"] = {"B": base64.b64encode(rng.randbytes(rng.randint(10_000, 40_000))).decode()}
    return item


def create_demo_table(table_name: str, *, replace: bool = False, boto3_session: boto3.Session | None = None) -> None:
    """Create an on-demand table keyed (pk, sk) on a local endpoint; an existing one only with ``replace``."""
    dynamodb = client("dynamodb", boto3_session, config=QUICK_CONFIG)
    if not is_loopback(dynamodb.meta.endpoint_url):
        raise NotLocalEndpointError("Seeding a demo table", dynamodb.meta.endpoint_url)
    try:
        dynamodb.describe_table(TableName=table_name)
    except dynamodb.exceptions.ResourceNotFoundException:
        pass
    else:
        if not replace:
            raise TableExistsError(table_name)
        dynamodb.delete_table(TableName=table_name)
        dynamodb.get_waiter("table_not_exists").wait(TableName=table_name, WaiterConfig={"Delay": 1})
    dynamodb.create_table(
        TableName=table_name,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    dynamodb.get_waiter("table_exists").wait(TableName=table_name, WaiterConfig={"Delay": 1})


@clear_errors
def seed_demo_table(
    table_name: str = DEMO_TABLE,
    items: int = 100_000,
    *,
    replace: bool = False,
    seed: int = 7,
    threads: int = 8,
    progress: bool = True,
    boto3_session: boto3.Session | None = None,
) -> int:
    """Create ``table_name`` and fill it with ``items`` deterministic demo orders.

    Only on a local endpoint (the sandbox, or a DynamoDB Local on a loopback
    address): anything else raises NotLocalEndpointError. An existing table is
    deleted and re-created only with ``replace=True``; otherwise TableExistsError.
    """
    params.check_table_name("table_name", table_name)
    params.check_int("items", items, 0, 10_000_000)
    params.check_bool("replace", replace)
    params.check_bool("progress", progress)
    params.check_int("seed", seed, 0)
    params.check_int("threads", threads, 1, 64)
    create_demo_table(table_name, replace=replace, boto3_session=boto3_session)
    dynamodb = WireClient(boto3_session)
    backoff = Backoff()

    def write(start: int) -> int:
        rng = random.Random(seed * 1_000_003 + start)
        chunk = [{"PutRequest": {"Item": demo_item(i, rng)}} for i in range(start, min(start + BATCH_SIZE, items))]
        outcome = write_batch(dynamodb, table_name, chunk, backoff)
        if outcome.failures:
            raise DdbnbError(f"Seeding {table_name} failed: {outcome.failures[0][1]}")
        return len(chunk)

    with (
        ThreadPoolExecutor(threads) as pool,
        progress_bar(items, unit="item", desc="seeding", enabled=progress) as bar,
    ):
        for written in pool.map(write, range(0, items, BATCH_SIZE)):
            bar.update(written)
    return items
