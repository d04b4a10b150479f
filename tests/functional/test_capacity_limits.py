"""Capacity limits hold for the whole run (every worker process shares one budget), and a systemic
error stops the whole run at once. Against DynamoDB Local, which reports the units each call consumed."""

from __future__ import annotations

import json
import time

import pytest

import ddbnb
from ddbnb.exceptions import RunStoppedError
from tests.conftest import create_table, simple_item, spec


def test_a_write_limit_holds_for_the_whole_run_across_processes(make_table, tmp_path):
    table = make_table([simple_item(i, pad=1_500) for i in range(1_200)])  # 2 write units an item
    plan = ddbnb.plan_migration(
        table, spec("set_flag"), total_segments=8, max_concurrency=4, max_write_units=600, max_read_units=1_000
    )
    assert plan.write_units_per_s == 600 and plan.page_size > 0
    assert all(e["write_units_per_s"] == 600 for e in plan.events())  # local: one shared budget
    started = time.monotonic()
    summary = ddbnb.migrate(plan, execute=True, run_dir=tmp_path, progress=False, require_dry_run=False)
    elapsed = time.monotonic() - started
    assert summary is not None and summary["written"] == 1_200
    units = sum(json.loads(e["Output"])["write_units"] for e in json.loads((tmp_path / "SUCCEEDED_0.json").read_text()))
    assert units == 2_400
    # 4 processes with a budget each would take a quarter of the time; one shared budget takes 4 s at least.
    assert units / elapsed <= 600 * 1.25, f"{units / elapsed:.0f} write units/s"


def test_the_aws_engine_divides_the_budget_over_the_children_that_run_at_once(make_table):
    table = make_table([simple_item(i) for i in range(10)])
    plan = ddbnb.plan_migration(table, spec("set_flag"), capacity_share=0.5, total_segments=10, max_concurrency=5)
    plan.engine = "aws"  # events only: no stack needed to see how the budget is cut
    events = plan.events()
    assert events[0]["write_units_per_s"] == pytest.approx(plan.write_units_per_s / 5)
    assert plan.write_units_per_s == 2_000  # half of what a new on-demand table sustains (4,000 writes/s)


def test_a_systemic_error_stops_every_segment_at_once(make_table, dynamodb, tmp_path):
    source = make_table([simple_item(i) for i in range(400)])
    destination = create_table(dynamodb, ("id",))
    plan = ddbnb.plan_migration(
        source, spec("rekey"), destination_table_name=destination, total_segments=16, max_concurrency=2
    )
    dynamodb.delete_table(TableName=destination)  # gone after the plan: every segment would fail
    with pytest.raises(RunStoppedError) as info:
        ddbnb.migrate(plan, execute=True, run_dir=tmp_path, progress=False, require_dry_run=False)
    assert "TableNotFoundError" in str(info.value) and destination in str(info.value)
    failed = json.loads((tmp_path / "FAILED_0.json").read_text())
    stopped = [e for e in failed if e["Error"] == "RunStopped"]
    assert len(failed) == 16 and len(stopped) >= 10  # most never ran
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == "STOPPED"


def test_an_aws_invocation_paces_to_the_capacity_the_table_has_when_it_starts(dynamodb):
    """A redrive runs after pre-warm was put back: its budgets come from the capacity as it is then."""
    from ddbnb.worker.segment import SegmentWork

    table = create_table(dynamodb, throughput=100)  # provisioned: 1,000 read and 100 write units
    event = {
        "table": table,
        "segment": 0,
        "total_segments": 4,
        "transform": spec("set_flag"),
        "write_mode": "conditional",
        "rate_limit": 0,
        "read_units_per_s": 500.0,  # what the plan derived from the raised capacity
        "write_units_per_s": 50.0,
        "limits": {"share": 0.5, "max_read_units": 0, "max_write_units": 0, "divide": 2},
    }
    raised = SegmentWork(event, None)
    assert (raised.limits.read.rate, raised.limits.write.rate) == (250, 25)
    dynamodb.update_table(TableName=table, ProvisionedThroughput={"ReadCapacityUnits": 200, "WriteCapacityUnits": 20})
    restored = SegmentWork(event, None)  # the next invocation, after the restore
    assert (restored.limits.read.rate, restored.limits.write.rate) == (50, 5)
    capped = SegmentWork({**event, "limits": {**event["limits"], "max_write_units": 8}}, None)
    assert capped.limits.write.rate == 4  # an absolute cap wins, split between the two workers
