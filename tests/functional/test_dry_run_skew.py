"""The dry run counts the partition keys it meets and names each that would make its segment run long."""

from __future__ import annotations

import json
from typing import Any

import ddbnb
from ddbnb.insight import skew
from tests.conftest import create_table, put_items, spec

TENANTS = {"tenant#big": 4_000, **{f"tenant#{i:02d}": 400 for i in range(10)}}  # one key: half the table


def tenant_items(tenants: dict[str, int], pk: str = "pk", sk: str = "sk") -> list[dict[str, Any]]:
    """A single-table design: each tenant's items under one partition key."""
    return [
        {pk: {"S": tenant}, sk: {"S": f"order#{i:06d}"}, "n": {"N": str(i)}}
        for tenant, count in tenants.items()
        for i in range(count)
    ]


def test_a_tenant_holding_half_the_table_is_a_hot_key_finding_with_its_count_time_and_ranges(dynamodb, tmp_path):
    # Names an expression cannot carry bare: a reserved word and a dash.
    table = create_table(dynamodb, ("order", "created-at"))
    put_items(dynamodb, table, tenant_items(TENANTS, "order", "created-at"))
    before = scan_all_keys(dynamodb, table)
    report = ddbnb.dry_run(table, spec("set_flag"), 100, run_dir=tmp_path)
    assert scan_all_keys(dynamodb, table) == before  # nothing written
    counted = {k["key"]["order"]["S"]: k for k in report.keys}
    # Eleven keys: the census walks them all, and counts each exactly.
    assert {t: counted[t]["items"] for t in TENANTS} == TENANTS and len(counted) == len(TENANTS)
    assert not any(k["at_least"] for k in report.keys)
    hot = [f for f in report.findings if f["rule"] == "hot_key"]
    assert [f["key"] for f in hot] == [{"order": "tenant#big"}]
    # An ordinary segment: the items outside the hot key over the segments (at least 100).
    share = max(100, -(-(sum(TENANTS.values()) - 4_000) // report.plan.total_segments))
    message = hot[0]["message"]
    assert (
        f"4,000 items under this partition key, {4_000 / share:,.1f} times an ordinary segment's ~{share:,}" in message
    )
    assert "alone, at one worker's pace, it takes ~" in message
    ranges = -(-(4_000 - report.plan.hot_items) // (2 * report.plan.hot_items))
    assert f"the run cuts it into {ranges:,} sort-key ranges of {2 * report.plan.hot_items:,} items" in message
    assert report.safe  # a warning: the run handles it
    assert "Partition keys counted: 11 (11 first in the table's order, 0 met by the sample)" in str(report)
    assert "1 hot key" in str(report) and "keys only, to count partition keys" in str(report)
    assert report.key_items_read >= sum(TENANTS.values())
    saved = json.loads((tmp_path / "dry_run.json").read_text())
    assert len(saved["partition_keys"]) == 11 and saved["key_items_read"] == report.key_items_read
    # The estimate per unit: the key in one segment is the largest by far; as planned no unit is over two shares.
    sizes = report.segment_sizes()
    scan = sizes[sizes["kind"] == "scan segment"]
    assert len(scan) == report.plan.total_segments
    assert scan["unsplit_items"].max() > 2 * scan["unsplit_items"].median()
    assert sizes["items"].max() <= 2 * max(share, report.plan.hot_items)
    assert (sizes["kind"] == "hot key range").sum() == ranges
    assert round(sizes["items"].sum()) == sum(TENANTS.values()) == round(scan["unsplit_items"].sum())
    figure = ddbnb.plot_segment_sizes(sizes, tmp_path)
    assert [ax.get_title().split(":")[0] for ax in figure.axes] == ["each partition key in one segment", "as planned"]
    assert (tmp_path / "segment_sizes.png").stat().st_size > 5_000
    # Without the split, the finding says the run lasts that long, and how to cut it.
    unsplit = ddbnb.dry_run(table, spec("set_flag"), 100, split_hot_keys=False)
    message = next(f["message"] for f in unsplit.findings if f["rule"] == "hot_key")
    assert "the run lasts at least that long: pass split_hot_keys=True" in message
    assert (unsplit.segment_sizes()["kind"] == "scan segment").all()


def test_a_key_past_the_cap_is_counted_as_at_least_and_the_census_goes_on_past_it(dynamodb, monkeypatch):
    monkeypatch.setattr(skew, "MIN_CAP", 1_000)
    monkeypatch.setattr(skew, "CAP_SHARES", 1)
    table = create_table(dynamodb, ("pk", "sk"), key_type="N")
    items = [{"pk": {"N": "1" * 38}, "sk": {"N": str(i)}} for i in range(3_000)]  # a 38-digit key
    items += [{"pk": {"N": str(k)}, "sk": {"N": str(i)}} for k in range(5) for i in range(150)]
    put_items(dynamodb, table, items)
    report = ddbnb.dry_run(table, spec("set_flag"), 50)
    counted = {k["key"]["pk"]["N"]: k for k in report.keys}
    assert set(counted) == {"1" * 38, *map(str, range(5))}  # the census jumped past the capped key
    big = counted["1" * 38]
    assert big["at_least"] and 1_000 <= big["items"] < 3_000
    assert all(counted[str(k)]["items"] == 150 and not counted[str(k)]["at_least"] for k in range(5))
    message = next(f["message"] for f in report.findings if f["rule"] == "hot_key")
    assert message.startswith(f"at least {big['items']:,} items") and "at least ~" in message
    assert report.key_items_read < len(items)  # the capped key's rest was not read


def test_a_uniform_table_has_no_hot_key_and_a_table_without_a_sort_key_counts_nothing(dynamodb):
    table = create_table(dynamodb)
    put_items(dynamodb, table, tenant_items({f"user#{i:03d}": 8 for i in range(300)}))
    report = ddbnb.dry_run(table, spec("set_flag"), 100)
    assert not [f for f in report.findings if f["rule"] == "hot_key"]
    assert len([k for k in report.keys if k["found_by"] == "census"]) == skew.CENSUS_KEYS
    assert 0 < len([k for k in report.keys if k["found_by"] == "sample"]) <= skew.SAMPLED_KEYS
    assert {k["items"] for k in report.keys} == {8}
    sizes = report.segment_sizes()
    assert sizes["items"].max() == sizes["items"].min()  # nothing stands out
    flat = create_table(dynamodb, ("pk",))
    put_items(dynamodb, flat, [{"pk": {"S": f"k{i}"}} for i in range(50)])
    plain = ddbnb.dry_run(flat, spec("set_flag"), 20)
    assert plain.keys == [] and plain.key_items_read == 0 and "Partition keys counted" not in str(plain)


def scan_all_keys(dynamodb: Any, table: str) -> list[dict[str, Any]]:
    """Every item of ``table``, as stored."""
    return [item for page in dynamodb.get_paginator("scan").paginate(TableName=table) for item in page["Items"]]
