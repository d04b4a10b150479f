"""Pre-warm requests for what DynamoDB Local cannot hold (on-demand warm throughput), and the
history an execution leaves, on DescribeTable and GetExecutionHistory shapes as AWS documents them."""

from __future__ import annotations

import json

from ddbnb.engines.aws import last_position
from ddbnb.worker.prewarm import raise_request, records_from_history, restore_request

ON_DEMAND = {
    "TableName": "orders",
    "TableStatus": "ACTIVE",
    "BillingModeSummary": {"BillingMode": "PAY_PER_REQUEST"},
    "ProvisionedThroughput": {"NumberOfDecreasesToday": 0, "ReadCapacityUnits": 0, "WriteCapacityUnits": 0},
    "WarmThroughput": {"ReadUnitsPerSecond": 12000, "WriteUnitsPerSecond": 4000, "Status": "ACTIVE"},
    "GlobalSecondaryIndexes": [
        {
            "IndexName": "by-customer",
            "IndexStatus": "ACTIVE",
            "WarmThroughput": {"ReadUnitsPerSecond": 12000, "WriteUnitsPerSecond": 4000, "Status": "ACTIVE"},
        },
        {
            "IndexName": "by-day",
            "IndexStatus": "ACTIVE",
            "WarmThroughput": {"ReadUnitsPerSecond": 12000, "WriteUnitsPerSecond": 20000, "Status": "ACTIVE"},
        },
    ],
}


def test_an_on_demand_table_is_warmed_only_where_it_is_below_the_request_and_nothing_is_restored():
    planned = raise_request(ON_DEMAND, 0, 10000)
    assert planned.request == {
        "TableName": "orders",
        "WarmThroughput": {"WriteUnitsPerSecond": 10000},  # reads are left out, not sent as 0
        "GlobalSecondaryIndexUpdates": [
            {"Update": {"IndexName": "by-customer", "WarmThroughput": {"WriteUnitsPerSecond": 10000}}}
        ],  # by-day is already warmer
    }
    assert planned.restore is None  # warm throughput cannot be lowered
    assert "cannot be lowered again" in planned.notes[0] and "billed once" in planned.notes[0]


def test_an_on_demand_table_already_warm_enough_gets_no_request():
    planned = raise_request(ON_DEMAND, 12000, 4000)
    assert planned.request is None and planned.restore is None


def test_an_on_demand_cap_below_the_request_is_said():
    capped = {**ON_DEMAND, "OnDemandThroughput": {"MaxReadRequestUnits": -1, "MaxWriteRequestUnits": 5000}}
    notes = raise_request(capped, 0, 10000).notes
    assert any("cap of 5,000 write units/s still limits the run" in note for note in notes)


def test_a_table_switched_to_on_demand_during_the_run_has_nothing_to_restore():
    record = {"table": "orders", "indexes": {}, "units": {"saved": [5, 5], "raised": [5, 60]}}
    request, notes = restore_request(ON_DEMAND, record)
    assert request is None and "now on demand" in notes[0]


def exited(event_id: int, kind: str, state: str, output: dict[str, object]) -> dict[str, object]:
    """A state's exit event in GetExecutionHistory, as AWS documents it (the output is a JSON string)."""
    details = {"name": state, "output": json.dumps(output)}
    return {"id": event_id, "type": f"{kind}StateExited", "stateExitedEventDetails": details}


def test_the_restore_records_and_a_failed_segments_cursor_are_read_from_history():
    raised = {"table": "orders", "indexes": {}, "units": {"saved": [5, 5], "raised": [5, 60]}}
    parent = [
        {"id": 1, "type": "ExecutionStarted", "executionStartedEventDetails": {"input": "{}"}},
        exited(6, "Task", "RaiseCapacity", {"table": "orders", "capacity": {"raised": True, "restore": [raised]}}),
    ]
    assert records_from_history(parent) == [raised]
    assert records_from_history(parent[:1]) is None  # failed before anything was raised
    cursor = {"pk": {"S": "a#17"}, "sk": {"S": "s000017"}}
    child_newest_first = [
        {"id": 40, "type": "TaskFailed", "taskFailedEventDetails": {"error": "Lambda.Unknown"}},
        exited(31, "Pass", "NextInvocation", {"segment": 3, "cursor": cursor, "totals": {"scanned": 1200}}),
    ]
    assert last_position(child_newest_first) == {"cursor": cursor, "totals": {"scanned": 1200}}
    assert last_position(child_newest_first[:1]) is None
