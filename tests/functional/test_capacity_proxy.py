"""The capacity emulation in front of DynamoDB Local: rates, burst, unit sizes, and DynamoDB's error."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from ddbnb.emulation import capacity_proxy
from ddbnb.emulation.capacity_proxy import BURST_S, CapacityProxy, TableBuckets
from tests.conftest import create_table, simple_item

BIN = Path(sys.executable).parent


def at(stamp: str) -> float:
    """Seconds since the epoch of a result's ISO 8601 time."""
    from datetime import datetime

    return datetime.fromisoformat(stamp).timestamp()


def through(proxy: CapacityProxy) -> Any:
    return boto3.client(
        "dynamodb", endpoint_url=proxy.url, config=Config(retries={"total_max_attempts": 1, "mode": "standard"})
    )


def test_writes_beyond_the_rate_get_dynamodbs_own_error(sandbox, dynamodb):
    proxy = CapacityProxy(sandbox.dynamodb.url, read_units=0, write_units=3).start()
    table = create_table(dynamodb)
    client = through(proxy)
    codes: list[str] = []
    started = time.monotonic()

    def writer(offset: int) -> None:  # several writers, so demand is well above 3 units/s
        i = offset
        while time.monotonic() - started < 2.0:
            try:
                client.put_item(TableName=table, Item=simple_item(i, pad=500))  # 1 unit each
                codes.append("ok")
            except ClientError as exc:
                assert exc.response["ResponseMetadata"]["HTTPStatusCode"] == 400
                codes.append(exc.response["Error"]["Code"])
            i += 1000

    with ThreadPoolExecutor(6) as pool:
        list(pool.map(writer, range(6)))
    elapsed = time.monotonic() - started
    proxy.stop()
    accepted = codes.count("ok")
    assert set(codes) == {"ok", "ProvisionedThroughputExceededException"}
    assert proxy.throttled == len(codes) - accepted
    assert accepted <= 3 * (elapsed + 1) + 1  # the rate, plus the one second a new table starts with
    assert dynamodb.scan(TableName=table, Select="COUNT")["Count"] == accepted


def test_a_write_costs_one_unit_per_started_kilobyte(sandbox, dynamodb):
    proxy = CapacityProxy(sandbox.dynamodb.url, read_units=0, write_units=4).start()
    try:
        table = create_table(dynamodb)
        client = through(proxy)
        client.put_item(TableName=table, Item=simple_item(1, pad=3_500))  # about 3.5 KB: the 4 units a new table has
        with pytest.raises(ClientError, match="ProvisionedThroughputExceeded"):
            client.put_item(TableName=table, Item=simple_item(2, pad=3_500))  # 4 more, a fraction of a second later
        for i in range(3):  # a fraction of a unit each: 1 unit per item, paced at 4 per second
            time.sleep(0.3)
            client.put_item(TableName=table, Item=simple_item(10 + i, pad=100))
    finally:
        proxy.stop()


def test_reads_are_charged_by_size_and_refused_in_debt(sandbox, dynamodb):
    # 2 read units a second: the 1 second a new table starts with lets one scan start, whatever its size
    proxy = CapacityProxy(sandbox.dynamodb.url, read_units=2, write_units=10).start()
    try:
        table = create_table(dynamodb)
        for i in range(20):
            dynamodb.put_item(TableName=table, Item=simple_item(i, pad=8_000))  # 160 KB: 20 units eventually consistent
        client = through(proxy)
        client.scan(TableName=table)  # allowed with 2 units in the bucket, charged about 20: 9 seconds in debt
        assert proxy.buckets(table).tokens["read"] < -10  # charged by size, not by call
        with pytest.raises(ClientError, match="ProvisionedThroughputExceeded"):
            client.scan(TableName=table, Limit=1)
    finally:
        proxy.stop()


def test_unused_capacity_is_saved_up_to_300_seconds():
    now = [0.0]
    buckets = TableBuckets(read_rate=0, write_rate=100, clock=lambda: now[0])
    now[0] = 10.0
    assert buckets.take_write(1_100)  # one second's worth at the start plus ten seconds saved
    assert not buckets.take_write(1)
    now[0] = 10_000.0
    assert buckets.take_write(100 * BURST_S)  # capped at 300 seconds of burst
    assert not buckets.take_write(1)


def test_the_sandbox_cli_starts_the_emulation(tmp_path):
    env = {**os.environ, "DDBNB_SANDBOX_DIR": str(tmp_path)}
    try:
        up = subprocess.run(
            [BIN / "ddbnb", "sandbox", "up", "--write-units", "5"], env=env, capture_output=True, text=True
        )
        assert up.returncode == 0, up.stderr
        assert "capacity emulation at http://127.0.0.1:" in up.stderr
        endpoint = next(line.split("=", 1)[1] for line in up.stdout.splitlines() if "AWS_ENDPOINT_URL_DYNAMODB" in line)
        client = boto3.client(
            "dynamodb", endpoint_url=endpoint, config=Config(retries={"total_max_attempts": 1, "mode": "standard"})
        )
        table = create_table(client)
        client.get_waiter("table_exists").wait(TableName=table)
        with pytest.raises(ClientError, match="ProvisionedThroughputExceeded"):
            for i in range(50):
                client.put_item(TableName=table, Item=simple_item(i))
    finally:
        down = subprocess.run([BIN / "ddbnb", "sandbox", "down"], env=env, capture_output=True, text=True)
    assert down.returncode == 0


def test_half_the_capacity_leaves_the_application_its_share(sandbox, dynamodb, tmp_path, monkeypatch):
    import json
    import threading

    import ddbnb
    from tests.conftest import put_items, spec

    capacity = 200
    table = create_table(dynamodb, throughput=capacity)
    put_items(dynamodb, table, [simple_item(i, pad=700) for i in range(1_000)])  # 1 write unit each
    proxy = CapacityProxy(sandbox.dynamodb.url, read_units=2_000, write_units=capacity).start()
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", proxy.url)  # the worker processes inherit it
    application, stop, refused = through(proxy), threading.Event(), []

    def write_at_40_percent() -> None:
        i = 0
        while not stop.is_set():
            try:
                application.put_item(TableName=table, Item=simple_item(10_000 + i, "app"))
            except ClientError as exc:
                refused.append(exc.response["Error"]["Code"])
            i += 1
            time.sleep(1 / (0.4 * capacity))

    plan = ddbnb.plan_migration(table, spec("set_flag"), total_segments=8, max_concurrency=4, capacity_share=0.5)
    assert plan.write_units_per_s == capacity / 2
    app = threading.Thread(target=write_at_40_percent)
    app.start()
    try:
        started = time.monotonic()
        summary = ddbnb.migrate(plan, execute=True, run_dir=tmp_path, progress=False, require_dry_run=False)
        elapsed = time.monotonic() - started
    finally:
        stop.set()
        app.join()
        proxy.stop()
    assert summary is not None and summary["failed"] == 0
    outputs = [json.loads(e["Output"]) for e in json.loads((tmp_path / "SUCCEEDED_0.json").read_text())]
    units = sum(o["write_units"] for o in outputs)
    # the workers' own span, from the first segment's start to the last one's end: process start-up on a
    # loaded machine is not time the run could have written in
    span = max(map(at, (o["finished_at"] for o in outputs))) - min(map(at, (o["started_at"] for o in outputs)))
    assert span <= elapsed
    assert 0.40 <= units / span / capacity <= 0.55, f"{units / span / capacity:.2f} of the capacity"
    assert refused == []  # the application's 40% was never throttled


def test_a_migration_with_no_share_uses_the_tables_capacity_with_few_throttles(
    sandbox, dynamodb, tmp_path, monkeypatch
):
    import ddbnb
    from tests.conftest import put_items, spec

    capacity = 400
    table = create_table(dynamodb)  # on demand in DynamoDB Local; the emulation makes it 400 provisioned units
    put_items(dynamodb, table, [simple_item(i, pad=700) for i in range(2_400)])  # 1 write unit each
    proxy = CapacityProxy(sandbox.dynamodb.url, read_units=0, write_units=capacity).start()
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", proxy.url)  # the worker processes inherit it
    try:
        plan = ddbnb.plan_migration(table, spec("set_flag"), total_segments=8, max_concurrency=4)
        assert plan.write_units_per_s == capacity  # paced to the table's own capacity, which DescribeTable reports
        summary = ddbnb.migrate(plan, execute=True, run_dir=tmp_path, progress=False, require_dry_run=False)
        stats, steady = proxy.stats(table), proxy.steady_write_rate(table)
    finally:
        proxy.stop()
    assert summary is not None and (summary["written"], summary["failed"]) == (2_400, 0)
    assert stats["write_units"] == 2_400
    assert steady >= 0.85 * capacity, f"{steady / capacity:.2f} of the capacity"
    assert stats["throttled_writes"] <= 0.05 * stats["write_calls"], stats


def test_a_cap_above_the_tables_capacity_adapts_to_the_throttling(sandbox, dynamodb, tmp_path, monkeypatch):
    import ddbnb
    from tests.conftest import put_items, spec

    capacity = 400
    table = create_table(dynamodb)
    put_items(dynamodb, table, [simple_item(i, pad=700) for i in range(3_000)])
    # The table saves up one second of capacity, not 300: what it saves while the run starts (longer on a
    # loaded machine) must not absorb the whole run and leave nothing to throttle.
    monkeypatch.setattr(capacity_proxy, "BURST_S", 1.0)
    proxy = CapacityProxy(sandbox.dynamodb.url, read_units=0, write_units=capacity).start()
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", proxy.url)
    try:  # the operator's cap is twice what the table has: only throttling tells the workers
        plan = ddbnb.plan_migration(
            table, spec("set_flag"), total_segments=8, max_concurrency=4, max_write_units=2 * capacity
        )
        summary = ddbnb.migrate(plan, execute=True, run_dir=tmp_path, progress=False, require_dry_run=False)
        stats = proxy.stats(table)
    finally:
        proxy.stop()
    assert summary is not None and (summary["written"], summary["failed"]) == (3_000, 0)
    assert summary["throttled"] > 0  # counted in the results
    # Without the decrease every call beyond the capacity is refused and retried; with it, few are.
    assert stats["throttled_writes"] <= 0.25 * stats["write_calls"], stats
