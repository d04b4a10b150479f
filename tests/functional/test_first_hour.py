"""What a new user meets first: seeding only where it is safe, endpoints and regions, plans that fit the table."""

from __future__ import annotations

import time

import pytest

import ddbnb
from ddbnb.emulation.demo import DEMO_TABLE
from ddbnb.emulation.servers import _free_port
from ddbnb.exceptions import (
    EndpointUnreachableError,
    InvalidParameterError,
    NotLocalEndpointError,
    TableExistsError,
)
from ddbnb.plan import choose_segments
from tests.conftest import scan_all, simple_item, spec


def test_seeding_refuses_an_endpoint_that_is_not_local(sandbox, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", "https://dynamodb.eu-west-1.amazonaws.com")
    with pytest.raises(NotLocalEndpointError, match="ddbnb sandbox up"):
        ddbnb.seed_demo_table(DEMO_TABLE, 10, replace=True, progress=False)


def test_seeding_refuses_to_replace_a_table_unless_told(make_table, dynamodb):
    table = make_table([simple_item(i) for i in range(5)])
    before = scan_all(dynamodb, table)
    with pytest.raises(TableExistsError, match="replace=True"):
        ddbnb.seed_demo_table(table, 10, progress=False)
    assert scan_all(dynamodb, table) == before
    assert ddbnb.seed_demo_table(table, 30, replace=True, progress=False) == 30
    assert dynamodb.scan(TableName=table, Select="COUNT")["Count"] == 30


@pytest.mark.parametrize("name", ["ab", "bad name", "x" * 256, "orders/2024"])
def test_seeding_validates_the_table_name_before_any_call(monkeypatch, name):
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", "http://127.0.0.1:1")  # any call would fail differently
    with pytest.raises(InvalidParameterError, match="3 to 255 characters"):
        ddbnb.seed_demo_table(name, 10, progress=False)


def test_an_unreachable_loopback_endpoint_names_the_sandbox_quickly(sandbox, monkeypatch):
    endpoint = f"http://127.0.0.1:{_free_port()}"
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", endpoint)
    started = time.monotonic()
    with pytest.raises(EndpointUnreachableError) as info:
        ddbnb.plan_migration("orders", spec("bump"))
    assert endpoint in str(info.value) and "ddbnb sandbox up" in str(info.value)
    assert info.value._render_traceback_() == [f"EndpointUnreachableError: {info.value}"]
    assert time.monotonic() - started < 20


def test_aws_region_alone_is_honoured(make_table, monkeypatch):
    table = make_table([simple_item(1)])
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    assert ddbnb.describe_table(table).name == table


def test_the_dry_runs_aws_estimate_uses_the_aws_plan(make_table):
    table = make_table([simple_item(i) for i in range(120)])
    report = ddbnb.dry_run(table, spec("set_flag"), 20)
    assert report.plan.engine == "local"
    assert report.estimate.aws_segments == choose_segments(report.plan.table, "aws")[0] == 1
    assert "aws engine (1 segment)" in str(report.estimate)
    assert "~0.0 s (at " in str(report.estimate)  # a tiny table takes seconds, not "0.0 min"
