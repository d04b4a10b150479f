"""Pre-warm and restore against DynamoDB Local, which keeps provisioned throughput as AWS does
(it refuses an UpdateTable that changes nothing, as AWS does) but has no warm throughput:
the on-demand requests are checked in tests/unit/test_prewarm.py."""

from __future__ import annotations

from typing import Any

import pytest

from ddbnb.exceptions import CapacityRefusedError
from ddbnb.worker.prewarm import load_record, raise_capacity, restore_capacity, restore_records, targets_for
from tests.conftest import create_table


def indexed_table(dynamodb: Any, read: int = 5, write: int = 5, index_units: tuple[int, int] = (3, 3)) -> str:
    """A provisioned table with one provisioned GSI."""
    name = create_table(dynamodb, ("pk",))  # only for a fresh name
    dynamodb.delete_table(TableName=name)
    dynamodb.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "g", "AttributeType": "S"},
        ],
        ProvisionedThroughput={"ReadCapacityUnits": read, "WriteCapacityUnits": write},
        GlobalSecondaryIndexes=[
            {
                "IndexName": "by-g",
                "KeySchema": [{"AttributeName": "g", "KeyType": "HASH"}],
                "Projection": {"ProjectionType": "ALL"},
                "ProvisionedThroughput": {"ReadCapacityUnits": index_units[0], "WriteCapacityUnits": index_units[1]},
            }
        ],
    )
    return name


def units(dynamodb: Any, table: str) -> dict[str, tuple[int, int]]:
    described = dynamodb.describe_table(TableName=table)["Table"]
    found = {"table": described["ProvisionedThroughput"]}
    found.update({i["IndexName"]: i["ProvisionedThroughput"] for i in described.get("GlobalSecondaryIndexes", [])})
    return {name: (t["ReadCapacityUnits"], t["WriteCapacityUnits"]) for name, t in found.items()}


def test_the_table_and_its_gsis_are_raised_to_the_request_and_put_back_exactly(dynamodb):
    table = indexed_table(dynamodb)
    raised = raise_capacity(dynamodb, targets_for(table, None, read_units=40, write_units=60))
    # The GSI's writes go up with the table's (every rewritten item goes through it); its reads do not.
    assert units(dynamodb, table) == {"table": (40, 60), "by-g": (3, 60)}
    assert raised["raised"] and raised["tables"] == [table]
    report = restore_capacity(dynamodb, raised["restore"])
    assert report["restored"] == [table] and report["left"] == []
    assert units(dynamodb, table) == {"table": (5, 5), "by-g": (3, 3)}


def test_only_settings_below_the_request_are_raised_and_nothing_is_ever_lowered(dynamodb):
    table = indexed_table(dynamodb, read=100, write=10, index_units=(3, 200))
    raised = raise_capacity(dynamodb, targets_for(table, None, read_units=40, write_units=60))
    assert units(dynamodb, table) == {"table": (100, 60), "by-g": (3, 200)}  # max(current, requested)
    assert raised["restore"] == [{"table": table, "indexes": {}, "units": {"saved": [100, 10], "raised": [100, 60]}}]
    restore_capacity(dynamodb, raised["restore"])
    assert units(dynamodb, table) == {"table": (100, 10), "by-g": (3, 200)}
    # At or above the request everywhere: no UpdateTable at all (DynamoDB refuses one that changes nothing).
    nothing = raise_capacity(dynamodb, targets_for(table, None, read_units=50, write_units=5))
    assert nothing["raised"] is False and nothing["tables"] == [] and "nothing raised" in nothing["notes"][0]


def test_a_setting_someone_changed_during_the_run_is_left_as_they_set_it(dynamodb):
    table = indexed_table(dynamodb)
    raised = raise_capacity(dynamodb, targets_for(table, None, read_units=40, write_units=60))
    # The operator raises writes further for the application while the run goes on.
    dynamodb.update_table(TableName=table, ProvisionedThroughput={"ReadCapacityUnits": 40, "WriteCapacityUnits": 90})
    report = restore_capacity(dynamodb, raised["restore"])
    assert units(dynamodb, table) == {"table": (5, 90), "by-g": (3, 3)}
    assert any("write units are 90, not the 60 ddbnb set" in note for note in report["notes"])


def test_copy_mode_raises_reads_on_the_source_and_writes_on_the_destination(dynamodb):
    source, destination = indexed_table(dynamodb), indexed_table(dynamodb)
    raised = raise_capacity(dynamodb, targets_for(source, destination, read_units=40, write_units=60))
    assert units(dynamodb, source) == {"table": (40, 5), "by-g": (3, 3)}
    assert units(dynamodb, destination) == {"table": (5, 60), "by-g": (3, 60)}
    restore_capacity(dynamodb, raised["restore"])
    assert units(dynamodb, source) == units(dynamodb, destination) == {"table": (5, 5), "by-g": (3, 3)}


def test_a_refused_raise_puts_back_what_was_raised_before_it_and_names_the_table(dynamodb):
    source = indexed_table(dynamodb)
    with pytest.raises(CapacityRefusedError) as info:
        raise_capacity(dynamodb, targets_for(source, "no-such-table", read_units=40, write_units=60))
    assert info.value.table_name == "no-such-table" and "prewarm_write_units" in str(info.value)
    assert units(dynamodb, source) == {"table": (5, 5), "by-g": (3, 3)}  # the source's raise was undone


def test_a_refused_restore_is_reported_with_what_to_set_by_hand_never_raised(dynamodb):
    table = indexed_table(dynamodb)
    raised = raise_capacity(dynamodb, targets_for(table, None, read_units=40, write_units=60))
    dynamodb.delete_table(TableName=table)
    report = restore_capacity(dynamodb, raised["restore"])
    assert report["restored"] == [] and report["left"][0]["table"] == table
    assert "set it back by hand" in report["notes"][0] and '"saved": [5, 5]' in report["notes"][0]


def test_a_raise_tried_again_after_a_partial_success_restores_the_original(dynamodb, tmp_path):
    table = indexed_table(dynamodb)
    record = str(tmp_path / "capacity.json")
    targets = targets_for(table, None, read_units=40, write_units=60)
    raise_capacity(dynamodb, targets, record)  # applied, but its answer never reached the state machine
    again = raise_capacity(dynamodb, targets, record)  # Step Functions retries the task
    assert units(dynamodb, table) == {"table": (40, 60), "by-g": (3, 60)}
    assert again["restore"] == [
        {
            "table": table,
            "units": {"saved": [5, 5], "raised": [40, 60]},
            "indexes": {"by-g": {"saved": [3, 3], "raised": [3, 60]}},
        }
    ]
    restore_capacity(dynamodb, again["restore"])
    assert units(dynamodb, table) == {"table": (5, 5), "by-g": (3, 3)}


def test_a_raise_that_timed_out_is_restored_from_the_record_written_before_it(dynamodb, tmp_path):
    table = indexed_table(dynamodb)
    record = str(tmp_path / "capacity.json")
    raise_capacity(dynamodb, targets_for(table, None, read_units=40, write_units=60), record)
    # No output ever came back (the invocation timed out): the record alone says what to put back.
    report = restore_capacity(dynamodb, restore_records(load_record(record) or {}))
    assert report["restored"] == [table] and units(dynamodb, table) == {"table": (5, 5), "by-g": (3, 3)}
