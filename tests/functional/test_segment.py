"""The segment worker against DynamoDB Local: pages, outcomes, cursors, bad input."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from ddbnb import process_segment
from ddbnb.exceptions import InvalidParameterError, TableNotFoundError, TransformFailingError, TransformLoadError
from tests.conftest import scan_all, simple_item, spec

COUNTS = ("scanned", "written", "unchanged", "deleted", "failed", "conflicts")


def event(table: str, transform: str, **extra: Any) -> dict[str, Any]:
    return {
        "table": table,
        "segment": 0,
        "total_segments": 1,
        "transform": transform,
        "write_mode": "batch",
        "rate_limit": 0,
        **extra,
    }


def run_to_end(base: dict[str, Any], deadline_s: float | None = None, **kwargs: Any) -> dict[str, Any]:
    """The state machine's loop: call again with the cursor and totals until done."""
    current = dict(base)
    while True:
        deadline = None if deadline_s is None else time.time() + deadline_s
        result = process_segment(current, deadline=deadline, **kwargs)
        if result["cursor"] is None:
            return result
        current = {**base, "cursor": result["cursor"], "totals": result}


def test_segment_spanning_many_pages_processes_every_item_exactly_once(make_table, dynamodb):
    table = make_table([simple_item(i, pad=2000) for i in range(600)])
    result = process_segment(event(table, spec("bump"), page_size=25))
    assert result["cursor"] is None
    assert result["pages"] >= 24
    assert (result["scanned"], result["written"], result["failed"]) == (600, 600, 0)
    items = scan_all(dynamodb, table)
    assert len(items) == 600
    assert {item["visits"] for item in items.values()} == {1}


def test_one_mb_pages_continue_with_exclusive_start_key(make_table, dynamodb):
    # 3,000 items of ~3 KB is ~9 MB: several 1 MB scan pages with no Limit at all.
    table = make_table([simple_item(i, pad=3000) for i in range(3000)])
    result = process_segment(event(table, spec("bump")))
    assert result["pages"] >= 8
    assert result["scanned"] == 3000
    assert {item["visits"] for item in scan_all(dynamodb, table).values()} == {1}


def test_transform_outcomes_change_delete_keep_and_raise(make_table, dynamodb):
    kinds = ["change"] * 40 + ["delete"] * 10 + ["keep"] * 30 + ["raise"] * 5
    table = make_table([simple_item(i, kind) for i, kind in enumerate(kinds)])
    result = process_segment(event(table, spec("by_kind"), page_size=7))
    assert {name: result[name] for name in COUNTS} == {
        "scanned": 85,
        "written": 40,
        "unchanged": 30,
        "deleted": 10,
        "failed": 5,
        "conflicts": 0,
    }
    failed_keys = {(f["key"]["pk"], f["key"]["sk"]) for f in result["failures"]}
    assert failed_keys == {(f"p{i % 17:02d}", f"s{i:06d}") for i in range(80, 85)}
    assert all("ValueError: cannot handle" in f["error"] for f in result["failures"])
    items = scan_all(dynamodb, table)
    assert len(items) == 75
    changed = [item for item in items.values() if item["kind"] == "change"]
    assert all(item["migrated"] is True and item["nested"]["tags"] == {"a", "b"} for item in changed)
    assert not any("migrated" in item for item in items.values() if item["kind"] != "change")


def test_failure_list_is_bounded_but_count_is_exact(make_table):
    table = make_table([simple_item(i, "raise" if i else "change") for i in range(131)])
    result = process_segment(event(table, spec("by_kind")))
    assert result["failed"] == 130
    assert len(result["failures"]) == 100


def test_a_transform_failing_on_every_item_stops_the_segment_at_once(make_table, dynamodb):
    table = make_table([simple_item(i, "raise") for i in range(400)])
    before = scan_all(dynamodb, table)
    with pytest.raises(TransformFailingError) as info:
        process_segment(event(table, spec("by_kind"), page_size=60))
    assert info.value.items == 120  # two pages: the first 100 items or more, all failed
    assert "ValueError" in info.value.first_error and "02_dry_run" in str(info.value)
    assert scan_all(dynamodb, table) == before


@pytest.mark.parametrize("deadline_s", [0.0, 0.05])
def test_tiny_deadline_continuation_matches_an_uninterrupted_run(make_table, dynamodb, deadline_s):
    kinds = ["change", "delete", "keep", "raise", "change"]
    items = [simple_item(i, kinds[i % 5], pad=500) for i in range(400)]
    whole_table, split_table = make_table(items), make_table(items)
    whole = run_to_end(event(whole_table, spec("by_kind"), page_size=20))
    split = run_to_end(event(split_table, spec("by_kind"), page_size=20), deadline_s=deadline_s)
    assert whole["invocations"] == 1
    assert split["invocations"] >= (20 if deadline_s == 0 else 3)
    for name in (*COUNTS, "pages"):
        assert split[name] == whole[name], name
    assert split["failures"] == whole["failures"]
    assert scan_all(dynamodb, split_table) == scan_all(dynamodb, whole_table)


def test_the_deadline_is_checked_while_a_page_is_written(make_table, dynamodb):
    table = make_table([simple_item(i) for i in range(300)])  # 1 write unit each
    base = event(table, spec("set_flag"), page_size=100, write_units_per_s=100)  # a page takes about a second
    first = process_segment(base, deadline=time.time() + 1.3)
    # The first page always finishes; the second stops writing at the deadline, and is no stall.
    assert first["pages"] == 1 and first["stalls"] == 0 and first["cursor"]
    assert first["scanned"] == 100 and 100 <= first["written"] < 200
    rest = run_to_end({**base, "cursor": first["cursor"], "totals": first})
    assert (rest["scanned"], rest["failed"]) == (300, 0)
    assert rest["written"] + rest["unchanged"] == 300 + (first["written"] - 100)  # written ones come back unchanged
    assert {item["flag"] for item in scan_all(dynamodb, table).values()} == {"v2"}


def test_segments_partition_the_table(make_table, dynamodb):
    table = make_table([simple_item(i) for i in range(500)])
    results = [process_segment({**event(table, spec("bump")), "segment": s, "total_segments": 4}) for s in range(4)]
    assert sum(r["scanned"] for r in results) == 500
    assert {item["visits"] for item in scan_all(dynamodb, table).values()} == {1}


def test_segments_of_one_run_describe_each_table_once_when_they_share_known_tables(make_table, dynamodb, session):
    # DynamoDB Local counts a table's items for every DescribeTable: a run's worker asks once, not per segment.
    source = make_table([simple_item(i) for i in range(300)])
    destination = make_table([])
    described: list[str] = []
    hook = "before-parameter-build.dynamodb.DescribeTable"
    session.events.register(hook, lambda params, **_: described.append(params["TableName"]))
    known: dict[str, Any] = {}
    copies = [
        process_segment(
            {**event(source, spec("bump"), destination=destination), "segment": s, "total_segments": 3},
            boto3_session=session,
            known_tables=known,
        )
        for s in range(3)
    ]
    assert sum(result["written"] for result in copies) == 300
    assert sorted(described) == sorted([source, destination]) and set(known) == {source, destination}
    assert len(scan_all(dynamodb, destination)) == 300
    # Without them (the aws engine), each invocation describes the tables as they are then.
    described.clear()
    for s in range(2):
        process_segment({**event(source, spec("bump")), "segment": s, "total_segments": 2}, boto3_session=session)
    assert described == [source, source]


def test_in_place_key_change_is_refused_and_the_item_kept(make_table, dynamodb):
    table = make_table([simple_item(i) for i in range(10)])
    before = scan_all(dynamodb, table)
    result = process_segment(event(table, spec("change_key")))
    assert result["failed"] == 10 and result["written"] == 0
    assert "key_changed" in result["failures"][0]["error"] and "pk" in result["failures"][0]["error"]
    assert scan_all(dynamodb, table) == before


def test_invalid_types_are_reported_per_item(make_table, dynamodb):
    table = make_table([simple_item(i) for i in range(5)])
    result = process_segment(event(table, spec("use_float")))
    assert result["failed"] == 5
    assert "ratio" in result["failures"][0]["error"] and "Decimal" in result["failures"][0]["error"]


def test_copy_into_rekeyed_destination_reports_the_item_dynamodb_rejects(make_table, dynamodb):
    kinds = ["change"] * 49 + ["raise"]  # rekey leaves the 'raise' item without its new key
    source = make_table([simple_item(i, kind) for i, kind in enumerate(kinds)])
    destination = make_table([], keys=("id",))
    result = process_segment(event(source, spec("rekey"), destination=destination))
    assert (result["written"], result["failed"]) == (49, 1)
    assert result["failures"][0]["key"] == {"pk": "p15", "sk": "s000049"}
    assert "ValidationException" in result["failures"][0]["error"]
    copied = dynamodb.scan(TableName=destination, Select="COUNT")["Count"]
    assert copied == 49
    assert len(scan_all(dynamodb, source)) == 50  # the source is untouched


@pytest.mark.parametrize(
    ("changes", "error", "words"),
    [
        ({"table": "no-such-table"}, TableNotFoundError, ["no-such-table", "table_name"]),
        ({"transform": "/nowhere/t.py:fn"}, TransformLoadError, ["/nowhere/t.py", "does not exist"]),
        ({"transform": "tests.fixtures.transforms:NOT_CALLABLE"}, TransformLoadError, ["not callable"]),
        ({"transform": "tests.fixtures.transforms:missing"}, TransformLoadError, ["no attribute 'missing'"]),
        ({"transform": "no_such_module:fn"}, TransformLoadError, ["no_such_module"]),
        ({"transform": "nocolon"}, TransformLoadError, ["':function'"]),
        ({"total_segments": 0}, InvalidParameterError, ["total_segments", "1 to 1,000,000"]),
        ({"total_segments": 1_000_001}, InvalidParameterError, ["total_segments"]),
        ({"segment": 3}, InvalidParameterError, ["segment"]),
        ({"write_mode": "yolo"}, InvalidParameterError, ["write_mode", "'batch'"]),
    ],
)
def test_bad_input_raises_a_clear_error(make_table, changes, error, words):
    table = make_table([simple_item(1)])
    with pytest.raises(error) as info:
        process_segment({**event(table, spec("bump")), **changes})
    for word in words:
        assert word in str(info.value)


def test_an_item_over_400_kb_fails_alone_with_its_key(make_table, dynamodb):
    kinds = ["change"] * 30 + ["huge"] + ["change"] * 9
    table = make_table([simple_item(i, kind) for i, kind in enumerate(kinds)])
    result = process_segment(event(table, spec("grow")))
    assert (result["written"], result["failed"]) == (39, 1)
    assert result["failures"][0]["key"] == {"pk": "p13", "sk": "s000030"}
    assert "size" in result["failures"][0]["error"].lower()
    items = scan_all(dynamodb, table)
    assert sum(1 for item in items.values() if item.get("blob") == "x" * 10) == 39


def test_failures_stay_small_enough_for_a_step_functions_state(make_table):
    long_keys = [{**simple_item(i, "raise"), "sk": {"S": f"{i:04d}" + "k" * 1000}} for i in range(120)]
    table = make_table([*long_keys, simple_item(999, "change")])  # one item works: the run goes on
    result = process_segment(event(table, spec("by_kind")))
    assert result["failed"] == 120
    assert 0 < len(result["failures"]) < 100
    assert len(json.dumps(result)) < 80 * 1024
