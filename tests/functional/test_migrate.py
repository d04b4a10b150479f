"""Planning and migrating through the public API with the local engine."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import uuid

import pytest

import ddbnb
from ddbnb.engines.local import run_local, warm_up
from ddbnb.engines.resultwriter import write_results
from ddbnb.exceptions import (
    InvalidParameterError,
    RunIncompleteError,
    RunStoppedError,
    TableNotFoundError,
    TransformLoadError,
    TransformRejectedError,
)
from ddbnb.worker.collector import YOUNG_THRESHOLD
from tests.conftest import ROOT, scan_all, simple_item, spec


def test_migrate_writes_results_and_a_rerun_changes_nothing(make_table, dynamodb, tmp_path, capsys):
    kinds = ["change", "delete", "keep"]
    table = make_table([simple_item(i, kinds[i % 3], pad=300) for i in range(900)])
    plan = ddbnb.plan_migration(table, spec("by_kind"), total_segments=5, max_concurrency=2)
    summary = ddbnb.migrate(plan, execute=True, run_dir=tmp_path / "run", progress=False, require_dry_run=False)
    assert summary is not None
    assert {k: summary[k] for k in ("scanned", "written", "deleted", "unchanged", "failed")} == {
        "scanned": 900,
        "written": 300,
        "deleted": 300,
        "unchanged": 300,
        "failed": 0,
    }
    assert summary["status"] == "SUCCEEDED"
    run = tmp_path / "run"
    assert json.loads((run / "summary.json").read_text())["written"] == 300
    manifest = json.loads((run / "manifest.json").read_text())
    assert [f["Key"].rsplit("/", 1)[-1] for f in manifest["ResultFiles"]["SUCCEEDED"]] == ["SUCCEEDED_0.json"]
    assert manifest["ResultFiles"]["FAILED"] == []
    entries = json.loads((run / "SUCCEEDED_0.json").read_text())
    assert len(entries) == 5
    assert all(isinstance(e["Input"], str) and isinstance(e["Output"], str) for e in entries)
    results = ddbnb.load_results(run)
    assert list(results["segment"]) == [0, 1, 2, 3, 4]
    assert results["scanned"].sum() == 900
    assert (results["items_per_s"] > 0).all()

    rerun = ddbnb.migrate(plan, execute=True, run_dir=tmp_path / "rerun", progress=False, require_dry_run=False)
    assert rerun is not None
    assert (rerun["scanned"], rerun["written"], rerun["unchanged"]) == (600, 0, 600)
    assert len(scan_all(dynamodb, table)) == 600


def test_workers_run_in_the_environment_of_the_run_not_of_their_fork_server(
    make_table, dynamodb, tmp_path, monkeypatch
):
    # The fork server keeps the environment it started with; a run set up after it (a kernel that loads the
    # sandbox's settings later) must still reach its workers whole.
    warm_up()
    mark = uuid.uuid4().hex
    monkeypatch.setenv("DDBNB_TEST_MARK", mark)
    table = make_table([simple_item(i) for i in range(60)])
    plan = ddbnb.plan_migration(table, spec("mark_from_environment"), total_segments=4, max_concurrency=2)
    summary = ddbnb.migrate(plan, execute=True, run_dir=tmp_path / "run", progress=False, require_dry_run=False)
    assert summary is not None and summary["written"] == 60
    assert {item["mark"] for item in scan_all(dynamodb, table).values()} == {mark}


def test_workers_collect_young_objects_rarely_and_keep_what_they_imported_out_of_the_collectors_sight(
    make_table, dynamodb, tmp_path
):
    # ADR 0025: at the default threshold, collecting pages of parsed items doubled the CPU of reading them.
    table = make_table([simple_item(i) for i in range(40)])
    plan = ddbnb.plan_migration(table, spec("mark_collector"), total_segments=4, max_concurrency=2)
    summary = ddbnb.migrate(plan, execute=True, run_dir=tmp_path / "run", progress=False, require_dry_run=False)
    assert summary is not None and summary["written"] == 40
    items = scan_all(dynamodb, table).values()
    assert {item["young_threshold"] for item in items} == {YOUNG_THRESHOLD}
    assert min(item["frozen"] for item in items) > 10_000  # ddbnb, botocore and the rest, imported by the server


def test_a_script_that_runs_from_its_top_level_is_refused_before_any_write_and_runs_once_guarded(
    make_table, dynamodb, tmp_path
):
    # Each local worker imports the main script (as with spawn): unguarded, every one would run the migration
    # again and die. The run is refused naming the line, with nothing written and no run folder left.
    table = make_table([simple_item(i) for i in range(40)])
    call = (
        f"plan = ddbnb.plan_migration({table!r}, {spec('set_flag')!r}, total_segments=2, max_concurrency=2)\n"
        f"ddbnb.migrate(plan, execute=True, run_dir={str(tmp_path / 'run')!r}, require_dry_run=False, progress=False)\n"
    )
    script = tmp_path / "job.py"
    script.write_text("import ddbnb\n" + call)
    unguarded = subprocess.run([sys.executable, str(script)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert unguarded.returncode == 1
    assert (
        unguarded.stderr.strip()
        .splitlines()[-1]
        .startswith(f"ddbnb.exceptions.UnguardedMainError: {script}, line 3, starts a local run")
    )
    assert "bootstrapping" not in unguarded.stderr  # no worker process started
    assert not (tmp_path / "run").exists()
    assert all("flag" not in item for item in scan_all(dynamodb, table).values())

    script.write_text('import ddbnb\nif __name__ == "__main__":\n' + textwrap.indent(call, "    "))
    guarded = subprocess.run([sys.executable, str(script)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert guarded.returncode == 0, guarded.stderr
    assert {item["flag"] for item in scan_all(dynamodb, table).values()} == {"v2"}


def test_execute_false_only_prints_the_plan(make_table, dynamodb, tmp_path, capsys):
    table = make_table([simple_item(i) for i in range(20)])
    before = scan_all(dynamodb, table)
    plan = ddbnb.plan_migration(table, spec("by_kind"))
    assert ddbnb.migrate(plan, run_dir=tmp_path / "run") is None
    out = capsys.readouterr().out
    assert "execute=False" in out and table in out and "segments" in out
    assert scan_all(dynamodb, table) == before
    assert not (tmp_path / "run").exists()


def test_item_failures_are_recorded_and_the_run_reported_incomplete(make_table, tmp_path):
    kinds = ["raise" if i % 50 == 0 else "change" for i in range(500)]
    table = make_table([simple_item(i, kind) for i, kind in enumerate(kinds)])
    plan = ddbnb.plan_migration(table, spec("by_kind"), total_segments=3, max_concurrency=2)
    with pytest.raises(RunIncompleteError) as info:
        ddbnb.migrate(plan, execute=True, run_dir=tmp_path, progress=False, require_dry_run=False, max_failed_share=0.3)
    assert info.value.failed_items == 10
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert (summary["written"], summary["failed"], summary["status"]) == (490, 10, "INCOMPLETE")
    failures = ddbnb.load_failures(tmp_path)
    assert len(failures) == 10
    assert failures["error"].str.contains("ValueError").all()


def test_a_transform_that_fails_everywhere_is_rejected_before_any_write(make_table, dynamodb, tmp_path):
    table = make_table([simple_item(i) for i in range(200)])
    before = scan_all(dynamodb, table)
    plan = ddbnb.plan_migration(table, spec("always_raise"))
    with pytest.raises(TransformRejectedError) as info:
        ddbnb.migrate(plan, execute=True, run_dir=tmp_path, progress=False, require_dry_run=False)
    assert "KeyError" in str(info.value) and "Nothing was written" in str(info.value)
    assert (info.value.failed, info.value.checked) == (25, 25)
    assert scan_all(dynamodb, table) == before


def test_a_transform_failing_everywhere_past_the_pre_flight_check_stops_the_run_at_once(make_table, dynamodb, tmp_path):
    table = make_table([simple_item(i) for i in range(1_600)])
    before = scan_all(dynamodb, table)
    plan = ddbnb.plan_migration(table, spec("always_raise"), total_segments=16, max_concurrency=2)
    with pytest.raises(RunStoppedError) as info:  # max_failed_share=1 lets the pre-flight check pass it
        ddbnb.migrate(plan, execute=True, run_dir=tmp_path, progress=False, require_dry_run=False, max_failed_share=1)
    assert "TransformFailingError" in str(info.value) and "KeyError" in str(info.value)
    failed = json.loads((tmp_path / "FAILED_0.json").read_text())
    assert len([e for e in failed if e["Error"] == "RunStopped"]) >= 10  # most segments never ran
    assert scan_all(dynamodb, table) == before


def test_an_in_place_key_change_is_rejected_before_any_write(make_table, dynamodb, tmp_path):
    table = make_table([simple_item(i) for i in range(50)])
    plan = ddbnb.plan_migration(table, spec("change_key"))
    with pytest.raises(TransformRejectedError, match="destination"):
        ddbnb.migrate(plan, execute=True, run_dir=tmp_path, progress=False, require_dry_run=False)


def test_copy_into_a_destination_table(make_table, dynamodb, tmp_path):
    source = make_table([simple_item(i) for i in range(300)])
    destination = make_table([], keys=("id",))
    plan = ddbnb.plan_migration(source, spec("rekey"), destination_table_name=destination, total_segments=3)
    summary = ddbnb.migrate(plan, execute=True, run_dir=tmp_path, progress=False, require_dry_run=False)
    assert summary is not None and summary["written"] == 300
    assert dynamodb.scan(TableName=destination, Select="COUNT")["Count"] == 300


def test_a_failed_segment_is_written_to_failed_results(tmp_path):
    event = {
        "table": "vanished",
        "segment": 0,
        "total_segments": 1,
        "transform": spec("bump"),
        "write_mode": "batch",
        "rate_limit": 0,
    }
    outcomes = run_local([event], max_concurrency=1, progress=False)
    assert outcomes[0].status == "FAILED" and outcomes[0].error == "TableNotFoundError"
    write_results(tmp_path, outcomes, run_name="r")
    failed = json.loads((tmp_path / "FAILED_0.json").read_text())
    assert failed[0]["Error"] == "TableNotFoundError" and "vanished" in failed[0]["Cause"]
    results = ddbnb.load_results(tmp_path)
    assert results.loc[0, "status"] == "FAILED" and "vanished" in results.loc[0, "error"]


@pytest.mark.parametrize(
    ("kwargs", "error", "word"),
    [
        ({"table_name": "nope"}, TableNotFoundError, "nope"),
        ({"transform": "missing.py:fn"}, TransformLoadError, "missing.py"),
        ({"transform": f"{spec('NOT_CALLABLE')}"}, TransformLoadError, "not callable"),
        ({"total_segments": 1_000_001}, InvalidParameterError, "total_segments"),
        ({"total_segments": -1}, InvalidParameterError, "total_segments"),
        ({"engine": "mainframe"}, InvalidParameterError, "engine"),
        ({"max_concurrency": "4"}, InvalidParameterError, "max_concurrency"),
    ],
)
def test_plan_rejects_bad_input_with_a_clear_error(make_table, kwargs, error, word):
    table = make_table([simple_item(1)])
    args = {"table_name": table, "transform": spec("bump"), **kwargs}
    with pytest.raises(error, match=word):
        ddbnb.plan_migration(args.pop("table_name"), args.pop("transform"), **args)


def test_plan_chooses_segments_and_concurrency(make_table):
    table = make_table([simple_item(i) for i in range(10)])
    plan = ddbnb.plan_migration(table, spec("bump"))
    assert 1 <= plan.max_concurrency <= plan.total_segments
    assert any("total_segments" in reason for reason in plan.reasons)
    assert len(plan.events()) == plan.total_segments
    assert str(table) in str(plan)
