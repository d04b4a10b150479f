"""The notebooks, executed headless with papermill against the sandbox, as a user would."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nbformat
import papermill
import pytest

import ddbnb
from tests.conftest import scan_all, simple_item, spec

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


def run(name: str, out_dir: Path, **parameters: Any) -> nbformat.NotebookNode:
    output = out_dir / f"{name}.ipynb"
    papermill.execute_notebook(
        NOTEBOOKS / f"{name}.ipynb",
        output,
        parameters=parameters,
        kernel_name="python3",
        cwd=str(NOTEBOOKS),
        progress_bar=False,
    )
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
        "02_dry_run", tmp_path, table_name=table, transform=spec("by_kind"), sample_size=50, run_dir=str(tmp_path)
    )
    assert scan_all(dynamodb, table) == before  # a dry run writes nothing
    report = json.loads((tmp_path / "dry_run.json").read_text())
    assert sum(report["counts"].values()) == 50
    assert (tmp_path / "diffs.csv").read_text().startswith("key,path,change,before,after")
    assert "Nothing was written" in text_of(dry)

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
        )
    assert info.value.ename == "RunIncompleteError"
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert (summary["scanned"], summary["failed"]) == (400, 2)

    results = run("04_results", tmp_path, run_dir=str(tmp_path))
    for chart in ("throughput.png", "durations.png", "timeline.png"):
        assert (tmp_path / chart).stat().st_size > 5_000
    images = [o for c in results.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) == 3
    assert "ValueError" in text_of(results)  # the failed items table


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
