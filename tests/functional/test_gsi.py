"""Global secondary indexes in the plan, the estimate and the pacing: a provisioned GSI gets the same share."""

from __future__ import annotations

import json
from typing import Any

import pytest
from botocore.exceptions import ClientError

import ddbnb
from ddbnb.emulation.capacity_proxy import CapacityProxy, index_name
from ddbnb.insight.results import result_entries
from ddbnb.plan import after_prewarm
from ddbnb.worker.tables import IndexFacts, TableFacts
from ddbnb.worker.writes import key_range_only, throttle_reasons
from tests.conftest import put_items, spec
from tests.functional.test_capacity_proxy import through

_names = iter(range(10_000))


def gsi_table(dynamodb: Any, write_units: int, index_write_units: int, projection: dict[str, Any]) -> str:
    """A provisioned (pk, sk) table with one provisioned GSI on ``g``."""
    name = f"gsi{next(_names)}-{id(dynamodb) % 10_000}"
    dynamodb.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=[{"AttributeName": n, "AttributeType": "S"} for n in ("pk", "sk", "g")],
        ProvisionedThroughput={"ReadCapacityUnits": 10 * write_units, "WriteCapacityUnits": write_units},
        GlobalSecondaryIndexes=[
            {
                "IndexName": "by-g",
                "KeySchema": [{"AttributeName": "g", "KeyType": "HASH"}],
                "Projection": projection,
                "ProvisionedThroughput": {"ReadCapacityUnits": 10, "WriteCapacityUnits": index_write_units},
            }
        ],
    )
    return name


def rows(count: int) -> list[dict[str, Any]]:
    return [
        {"pk": {"S": f"user#{i:05d}"}, "sk": {"S": "p"}, "g": {"S": f"g{i % 7}"}, "pad": {"S": "x" * 300}}
        for i in range(count)
    ]


def test_a_provisioned_gsi_bounds_the_write_pace_with_the_same_share(sandbox, dynamodb, tmp_path, monkeypatch):
    table_units, index_units = 2_000, 200  # the GSI has a tenth of the table's write units
    table = gsi_table(dynamodb, table_units, index_units, {"ProjectionType": "ALL"})
    put_items(dynamodb, table, rows(1_200))
    proxy = CapacityProxy(sandbox.dynamodb.url, read_units=20_000, write_units=table_units).start()
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", proxy.url)  # the worker processes inherit it
    try:
        plan = ddbnb.plan_migration(table, spec("set_flag"), total_segments=4, max_concurrency=4, capacity_share=0.5)
        assert plan.table.indexes[0] == IndexFacts("by-g", ("g",), "ALL", (), index_units)
        assert plan.write_units_per_s == index_units * 0.5  # not the table's 1,000
        assert any("GSI 'by-g'" in reason for reason in plan.reasons), plan.reasons
        # The estimate prices the index's writes: set_flag changes an attribute an ALL projection holds.
        report = ddbnb.dry_run(table, spec("set_flag"), 100, capacity_share=0.5)
        assert report.estimate.index_write_units == report.estimate.write_units > 0
        assert "on GSIs" in str(report.estimate)
        summary = ddbnb.migrate(plan, execute=True, run_dir=tmp_path, require_dry_run=False, progress=False)
    finally:
        proxy.stop()
    assert summary is not None and summary["written"] == 1_200 and summary["failed"] == 0
    held = proxy.steady_write_rate(table) / index_units  # one write unit per item, on the table and the GSI alike
    print(f"the run held {held:.2f} of the GSI's write units")
    assert 0.45 <= held <= 0.55


def test_which_writes_an_index_pays_for():
    keys_only = IndexFacts("k", ("g",), "KEYS_ONLY")
    include = IndexFacts("i", ("g",), "INCLUDE", ("status",))
    everything = IndexFacts("a", ("g",), "ALL")
    assert [index.writes_for({"flag"}) for index in (keys_only, include, everything)] == [0, 0, 1]
    assert [index.writes_for({"status"}) for index in (keys_only, include, everything)] == [0, 1, 1]
    assert [index.writes_for({"g"}) for index in (keys_only, include, everything)] == [2, 2, 2]  # a delete and a put
    assert everything.writes_for(set()) == 0
    # Pre-warm raises a provisioned GSI's writes with the table's (an on-demand one has none to raise).
    facts = TableFacts("t", 0, 0, "PROVISIONED", 10, 10, ("pk",), indexes=(IndexFacts("a", ("g",), write_capacity=5),))
    assert after_prewarm(facts, 0, 500).indexes[0].write_capacity == 500
    on_demand = TableFacts("t", 0, 0, "PROVISIONED", 10, 10, ("pk",), indexes=(IndexFacts("a", ("g",)),))
    assert after_prewarm(on_demand, 0, 500).indexes[0].write_capacity == 0


def test_an_index_that_holds_no_changed_attribute_costs_nothing_and_an_absolute_cap_wins(dynamodb):
    table = gsi_table(dynamodb, 100, 5, {"ProjectionType": "KEYS_ONLY"})
    put_items(dynamodb, table, rows(50))
    report = ddbnb.dry_run(table, spec("set_flag"), 50)
    assert report.estimate.index_write_units == 0  # flag is neither the index's key nor projected
    assert ddbnb.plan_migration(table, spec("set_flag"), max_write_units=50).write_units_per_s == 50
    assert ddbnb.plan_migration(table, spec("set_flag")).write_units_per_s == 5  # all of the GSI, as of the table


def test_the_emulation_throttles_a_gsi_by_its_own_units_and_names_it(sandbox, dynamodb):
    table = gsi_table(dynamodb, 1_000, 10, {"ProjectionType": "ALL"})
    proxy = CapacityProxy(sandbox.dynamodb.url, read_units=0, write_units=1_000, index_write_units=5).start()
    try:
        client = through(proxy)
        described = client.describe_table(TableName=table)["Table"]
        assert described["GlobalSecondaryIndexes"][0]["ProvisionedThroughput"]["WriteCapacityUnits"] == 5
        # A new index holds one second's worth: 5 units, so the sixth put in a row is refused by the GSI.
        with pytest.raises(ClientError) as refused:
            for item in rows(20):
                client.put_item(TableName=table, Item=item)
        assert throttle_reasons(refused.value) == ("IndexWriteProvisionedThroughputExceeded",)
        assert not key_range_only(throttle_reasons(refused.value))  # an index-wide reason: the run's shared rate
        assert refused.value.response["ThrottlingReasons"][0]["resource"].endswith(f":table/{table}/index/by-g")
    finally:
        proxy.stop()
    # The refused put was not written, and the table was not charged for it.
    assert dynamodb.scan(TableName=table, Select="COUNT")["Count"] == 5
    table_stats, index_stats = proxy.stats(table), proxy.stats(index_name(table, "by-g"))
    assert table_stats["write_units"] == index_stats["write_units"] == 5
    assert table_stats["throttled_writes"] == index_stats["throttled_writes"] == 1


def test_a_gsi_throttling_a_run_cuts_the_shared_rate_and_loses_nothing(sandbox, dynamodb, tmp_path, monkeypatch):
    index_units = 100
    table = gsi_table(dynamodb, 2_000, index_units, {"ProjectionType": "ALL"})
    put_items(dynamodb, table, rows(1_500))
    proxy = CapacityProxy(
        sandbox.dynamodb.url, read_units=20_000, write_units=2_000, index_write_units=index_units
    ).start()
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", proxy.url)  # the worker processes inherit it
    try:
        # An absolute cap wins over the GSI's bound (as for a transform the index does not see): the run
        # starts at four times what the index takes, and only the index's throttles can slow it.
        plan = ddbnb.plan_migration(
            table, spec("set_flag"), total_segments=4, max_concurrency=4, max_write_units=4 * index_units
        )
        assert plan.write_units_per_s == 4 * index_units
        summary = ddbnb.migrate(plan, execute=True, run_dir=tmp_path, require_dry_run=False, progress=False)
    finally:
        proxy.stop()
    assert summary is not None and summary["status"] == "SUCCEEDED"
    assert (summary["written"], summary["failed"]) == (1_500, 0)
    reasons: dict[str, int] = {}
    for entry in result_entries(tmp_path):
        for reason, count in json.loads(entry["Output"]).get("throttle_reasons", {}).items():
            reasons[reason] = reasons.get(reason, 0) + count
    assert reasons.get("IndexWriteProvisionedThroughputExceeded", 0) > 0, reasons
    index = proxy.stats(index_name(table, "by-g"))
    held = proxy.steady_write_rate(index_name(table, "by-g")) / index_units
    print(f"the GSI took {held:.2f} of its write units; {index['throttled_writes']:.0f} of {index['write_calls']:.0f}")
    # The run backed off to what the index takes (AIMD under a hard limit keeps about half of it here), instead
    # of sending at its cap: without the cut, three calls in four would be refused.
    assert held >= 0.35, f"{held:.2f} of the index's units"
    assert index["throttled_writes"] <= 0.3 * index["write_calls"]
