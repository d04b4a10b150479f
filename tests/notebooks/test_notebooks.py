"""The notebooks, executed headless with papermill against the sandbox, as a user would."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import nbformat
import papermill
import pytest

import ddbnb
from ddbnb.execute import execute
from tests.conftest import create_table, put_items, scan_all, simple_item, spec


def run(name: str, out_dir: Path, **parameters: Any) -> nbformat.NotebookNode:
    output = out_dir / f"{name}.ipynb"
    execute(name, output, parameters)
    return nbformat.read(output, as_version=4)


def text_of(notebook: nbformat.NotebookNode) -> str:
    parts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            parts.append(output.get("text", ""))
            parts.extend(str(v) for k, v in output.get("data", {}).items() if k.startswith("text/"))
    return "\n".join(parts)


def test_dry_run_migrate_and_results_notebooks(make_table, dynamodb, tmp_path):
    kinds = ["change", "delete", "keep", "raise"]
    items = [simple_item(i, kinds[(i // 40) % 4] if i % 40 == 0 else "change") for i in range(400)]
    table = make_table(items)
    before = scan_all(dynamodb, table)

    dry = run(
        "02_dry_run",
        tmp_path,
        table_name=table,
        transform=spec("by_kind"),
        sample_size=50,
        run_dir=str(tmp_path),
        fail_on_unsafe=False,
    )
    assert scan_all(dynamodb, table) == before  # a dry run writes nothing
    report = json.loads((tmp_path / "dry_run.json").read_text())
    assert sum(report["counts"].values()) == 50
    assert (tmp_path / "diffs.csv").read_text().startswith("key,path,change,before,after")
    assert "Nothing was written" in text_of(dry)
    # 17 partition keys of about 24 items: all counted, none hot, and the chart of units saved.
    assert len(report["partition_keys"]) == 17 and "0 hot keys" in text_of(dry)
    assert (tmp_path / "segment_sizes.png").stat().st_size > 5_000

    plan_only = run("03_migrate", tmp_path, table_name=table, transform=spec("by_kind"), run_dir=str(tmp_path))
    assert "execute=False" in text_of(plan_only)
    assert scan_all(dynamodb, table) == before

    with pytest.raises(papermill.PapermillExecutionError) as info:  # one item raises: the run is incomplete
        run(
            "03_migrate",
            tmp_path,
            table_name=table,
            transform=spec("by_kind"),
            execute=True,
            total_segments=3,
            max_concurrency=2,
            run_dir=str(tmp_path),
            max_failed_share=0.2,
        )
    assert info.value.ename == "RunIncompleteError"
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert (summary["scanned"], summary["failed"]) == (400, 2)

    results = run("04_results", tmp_path, run_dir=str(tmp_path))
    for chart in ("throughput.png", "durations.png", "timeline.png", "run_throughput.png"):
        assert (tmp_path / chart).stat().st_size > 5_000
    images = [o for c in results.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) == 4  # inline too
    assert "ValueError" in text_of(results)  # the failed items table
    assert "slowest first" in text_of(results)  # the styled segments table


def test_the_rollback_notebook_previews_then_puts_the_table_back_and_lists_conflicts(make_table, dynamodb, tmp_path):
    table = make_table([simple_item(i, "delete" if i % 10 == 0 else "change") for i in range(200)])
    before = scan_all(dynamodb, table)
    plan = ddbnb.plan_migration(table, spec("by_kind"), total_segments=2)
    ddbnb.migrate(plan, execute=True, run_dir=tmp_path, require_dry_run=False, progress=False)
    key = {"pk": {"S": "p01"}, "sk": {"S": "s000001"}}
    dynamodb.put_item(TableName=table, Item={**key, "kind": {"S": "the application's"}})
    migrated = scan_all(dynamodb, table)

    preview = run("05_rollback", tmp_path, run_dir=str(tmp_path))
    assert scan_all(dynamodb, table) == migrated
    assert "would restore 179, would re-create 20" in text_of(preview) and "nothing was written" in text_of(preview)

    done = run("05_rollback", tmp_path, run_dir=str(tmp_path), execute=True)
    now = scan_all(dynamodb, table)
    assert now.pop(("p01", "s000001"))["kind"] == "the application's"
    assert now == {k: v for k, v in before.items() if k != ("p01", "s000001")}
    assert "changed since the migration wrote it" in text_of(done)  # the conflicts table
    (folder,) = [p for p in tmp_path.glob("rollback-2*") if p.is_dir()]
    assert (folder / "run_throughput.png").stat().st_size > 5_000
    with pytest.raises(papermill.PapermillExecutionError) as info:
        run("05_rollback", tmp_path)
    assert info.value.ename == "InvalidParameterError" and "run_dir" in info.value.evalue


def test_a_missing_table_fails_with_one_clear_line(sandbox, tmp_path):
    with pytest.raises(papermill.PapermillExecutionError) as info:
        run("03_migrate", tmp_path, table_name="no-such-table", transform=spec("bump"))
    assert info.value.ename == "TableNotFoundError"
    assert "no-such-table" in info.value.evalue
    assert len(info.value.traceback) == 1  # the message, not a traceback wall


def test_bad_total_segments_fails_with_one_clear_line(make_table, tmp_path):
    table = make_table([simple_item(1)])
    with pytest.raises(papermill.PapermillExecutionError) as info:
        run("03_migrate", tmp_path, table_name=table, transform=spec("bump"), total_segments=2_000_000)
    assert info.value.ename == "InvalidParameterError"
    assert "total_segments" in info.value.evalue


def test_results_notebook_without_run_dir_says_what_to_set(sandbox, tmp_path):
    with pytest.raises(papermill.PapermillExecutionError) as info:
        run("04_results", tmp_path)
    assert "run_dir" in info.value.evalue


def test_deploy_notebook_creates_the_stack_in_the_sandbox(make_table, tmp_path):
    table = make_table([simple_item(1)])
    deployed = run("01_deploy", tmp_path, stack_name="nb-deploy", table_name=table, transform=spec("bump"))
    try:
        text = text_of(deployed)
        assert "StateMachineArn" in text and "nb-deploy-migration" in text and "ResultsBucketName" in text
    finally:
        ddbnb.delete_stack("nb-deploy", progress=False)


def table_digest(dynamodb: Any, table: str) -> str:
    """A hash of every item of the table: equal before and after means nothing was written."""
    items = scan_all(dynamodb, table)
    return hashlib.sha256(repr(sorted(items.items())).encode()).hexdigest()


@pytest.mark.parametrize("value", ["False", "false", "True", 0])
def test_execute_given_as_a_string_never_writes(make_table, dynamodb, tmp_path, value):
    table = make_table([simple_item(i) for i in range(60)])
    before = table_digest(dynamodb, table)
    run("02_dry_run", tmp_path, table_name=table, transform=spec("set_flag"), run_dir=str(tmp_path))
    with pytest.raises(papermill.PapermillExecutionError) as info:
        run("03_migrate", tmp_path, table_name=table, transform=spec("set_flag"), execute=value, run_dir=str(tmp_path))
    assert info.value.ename == "InvalidParameterError"
    assert "-p execute True" in info.value.evalue
    assert table_digest(dynamodb, table) == before
    assert not (tmp_path / "summary.json").exists()


def test_an_edited_transform_is_refused_after_a_dry_run_of_the_old_code(make_table, dynamodb, tmp_path):
    table = make_table([simple_item(i) for i in range(80)])
    mine = tmp_path / "mine.py"
    mine.write_text("def fn(item):\n    item['flag'] = 'v2'\n    return item\n")
    run_dir = tmp_path / "run"
    run("02_dry_run", tmp_path, table_name=table, transform=f"{mine}:fn", run_dir=str(run_dir))
    recorded = json.loads((run_dir / "dry_run.json").read_text())
    assert recorded["table"] == table and len(recorded["transform_sha256"]) == 64
    mine.write_text("def fn(item):\n    return None\n")  # now it deletes everything
    before = table_digest(dynamodb, table)
    with pytest.raises(papermill.PapermillExecutionError) as info:
        run("03_migrate", tmp_path, table_name=table, transform=f"{mine}:fn", execute=True, run_dir=str(run_dir))
    assert info.value.ename == "DryRunRequiredError"
    assert "changed since the dry run" in info.value.evalue and "02_dry_run" in info.value.evalue
    assert table_digest(dynamodb, table) == before

    with pytest.raises(papermill.PapermillExecutionError) as info:  # a run folder without a dry run
        run("03_migrate", tmp_path, table_name=table, transform=f"{mine}:fn", execute=True, run_dir=str(tmp_path / "x"))
    assert info.value.ename == "DryRunRequiredError" and "dry_run.json is missing" in info.value.evalue
    assert not (tmp_path / "x").exists()

    run("02_dry_run", tmp_path, table_name=table, transform=f"{mine}:fn", run_dir=str(run_dir))
    run("03_migrate", tmp_path, table_name=table, transform=f"{mine}:fn", execute=True, run_dir=str(run_dir))
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["deleted"] == 80 and summary["require_dry_run"] is True
    assert (
        summary["dry_run"]["transform_sha256"] == json.loads((run_dir / "dry_run.json").read_text())["transform_sha256"]
    )


def test_require_dry_run_false_is_recorded(make_table, tmp_path):
    table = make_table([simple_item(i) for i in range(30)])
    run(
        "03_migrate",
        tmp_path,
        table_name=table,
        transform=spec("set_flag"),
        execute=True,
        run_dir=str(tmp_path / "run"),
        require_dry_run=False,
    )
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["require_dry_run"] is False and summary["dry_run"] is None and summary["written"] == 30


def test_a_partly_failing_transform_stops_before_the_first_write_and_says_how_many(make_table, dynamodb, tmp_path):
    table = make_table([simple_item(i, "raise" if i % 5 == 0 else "change") for i in range(200)])  # 20% raise
    run(
        "02_dry_run", tmp_path, table_name=table, transform=spec("by_kind"), run_dir=str(tmp_path), fail_on_unsafe=False
    )
    before = table_digest(dynamodb, table)
    with pytest.raises(papermill.PapermillExecutionError) as info:
        run("03_migrate", tmp_path, table_name=table, transform=spec("by_kind"), execute=True, run_dir=str(tmp_path))
    assert info.value.ename == "TransformRejectedError"
    failed, checked = re.search(r"on (\d+) of (\d+) sampled", info.value.evalue).groups()  # type: ignore[union-attr]
    assert int(checked) == 25 and 0 < int(failed) < 25
    assert "ValueError" in info.value.evalue and "max_failed_share=" in info.value.evalue
    assert table_digest(dynamodb, table) == before

    with pytest.raises(papermill.PapermillExecutionError) as info:  # tolerated: the run goes on, failures recorded
        run(
            "03_migrate",
            tmp_path,
            table_name=table,
            transform=spec("by_kind"),
            execute=True,
            run_dir=str(tmp_path),
            max_failed_share=0.5,
        )
    assert info.value.ename == "RunIncompleteError"
    out = text_of(nbformat.read(tmp_path / "03_migrate.ipynb", as_version=4))
    assert f"pre-flight: {failed} of 25 sampled item(s) failed" in out and "ran cleanly" not in out
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert (summary["failed"], summary["written"]) == (40, 160)
    assert summary["preflight"] == {"checked": 25, "failed": int(failed)}


def test_the_dry_run_notebook_fails_on_a_not_safe_verdict_after_saving_its_report(make_table, tmp_path):
    table = make_table([simple_item(i, "raise" if i % 2 else "change") for i in range(40)])
    with pytest.raises(papermill.PapermillExecutionError) as info:
        run("02_dry_run", tmp_path, table_name=table, transform=spec("by_kind"), run_dir=str(tmp_path))
    assert info.value.ename == "UnsafeDryRunError" and "NOT SAFE" in info.value.evalue
    assert "fail_on_unsafe=False" in info.value.evalue
    assert json.loads((tmp_path / "dry_run.json").read_text())["safe"] is False
    run("02_dry_run", tmp_path, table_name=table, transform=spec("by_kind"), fail_on_unsafe=False)


def test_a_missing_stack_is_named_at_plan_time_with_no_run_folder_left(make_table, tmp_path):
    table = make_table([simple_item(1)])
    run_dir = tmp_path / "never"
    with pytest.raises(papermill.PapermillExecutionError) as info:
        run(
            "03_migrate",
            tmp_path,
            table_name=table,
            transform=spec("bump"),
            engine="aws",
            stack_name="no-such-stack",
            run_dir=str(run_dir),
        )
    assert info.value.ename == "StackNotFoundError"
    assert "no-such-stack" in info.value.evalue and "01_deploy" in info.value.evalue
    assert len(info.value.traceback) == 1 and not run_dir.exists()


def test_progress_is_plain_lines_under_papermill(make_table, tmp_path, monkeypatch):
    monkeypatch.setenv("DDBNB_PROGRESS_INTERVAL", "0")  # the kernel inherits it: a line per update
    table = make_table([simple_item(i) for i in range(300)])
    run("02_dry_run", tmp_path, table_name=table, transform=spec("set_flag"), run_dir=str(tmp_path))
    notebook = run(
        "03_migrate",
        tmp_path,
        table_name=table,
        transform=spec("set_flag"),
        execute=True,
        run_dir=str(tmp_path),
        total_segments=3,
        max_concurrency=2,
    )
    streams = [o for c in notebook.cells for o in c.get("outputs", []) if o.get("name") == "stderr"]
    lines = "".join(o["text"] for o in streams).splitlines()
    final = "scanned 300/300, written 300, unchanged 0, deleted 0, failed 0;"
    assert any(line.startswith(final) and "segments 3 done (0 failed), 0 running, 0 left" in line for line in lines)
    assert all(re.search(r"items/s, [\d,]+ write units/s, throttled \d+; segments", line) for line in lines), lines
    widgets = [o for c in notebook.cells for o in c.get("outputs", []) if "widget" in json.dumps(o.get("data", {}))]
    assert widgets == [] and not any("\r" in line for line in lines)


def test_a_live_table_run_in_conditional_mode_through_the_notebooks(make_table, tmp_path):
    table = make_table([simple_item(i) for i in range(120)])
    dry = run(
        "02_dry_run",
        tmp_path,
        table_name=table,
        transform=spec("set_flag"),
        run_dir=str(tmp_path),
        write_mode="conditional",
    )
    assert "write mode conditional (the default, safe on a live table)" in text_of(dry)
    run(
        "03_migrate",
        tmp_path,
        table_name=table,
        transform=spec("set_flag"),
        execute=True,
        run_dir=str(tmp_path),
        write_mode="conditional",
    )
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert (summary["write_mode"], summary["written"], summary["failed"]) == ("conditional", 120, 0)


def test_the_start_page_lists_the_tables_the_kernel_sees(make_table, tmp_path):
    table = make_table([simple_item(i) for i in range(3)])
    notebook = run("00_start_here", tmp_path)
    assert table in text_of(notebook)
    links = "".join(cell.source for cell in notebook.cells if cell.cell_type == "markdown")
    for name in ("01_deploy", "02_dry_run", "03_migrate", "04_results"):
        assert (
            f"]({name}.ipynb)" in links and (Path(ddbnb.__file__).parents[1] / "notebooks" / f"{name}.ipynb").is_file()
        )


def test_the_follow_notebook_catches_up_verifies_and_charts_the_lag(dynamodb, tmp_path):
    table = create_table(dynamodb, stream="KEYS_ONLY")
    put_items(dynamodb, table, [simple_item(i) for i in range(60)])
    plan = ddbnb.plan_migration(table, spec("set_flag"), total_segments=2, follow=True)
    ddbnb.migrate(plan, execute=True, run_dir=tmp_path, require_dry_run=False, progress=False)
    put_items(dynamodb, table, [simple_item(i, "old") for i in range(40, 80)])  # after the scan: the old shape
    followed = run("06_follow", tmp_path, run_dir=str(tmp_path))
    assert "CAUGHT_UP" in text_of(followed) and "MATCHES: 80 item(s) checked" in text_of(followed)
    assert {item.get("flag") for item in scan_all(dynamodb, table).values()} == {"v2"}
    assert json.loads((tmp_path / "verify.json").read_text())["matches"] is True
    assert (tmp_path / "follow_lag.png").stat().st_size > 5_000
