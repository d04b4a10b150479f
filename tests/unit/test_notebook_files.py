"""The committed notebooks: thin, parameterized, and free of outputs."""

from __future__ import annotations

import ast
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("*.ipynb"))
CONTRACT = {
    "01_deploy": {
        "stack_name",
        "table_name",
        "transform",
        "destination_table_name",
        "lambda_memory_mb",
        "reserved_concurrency",
    },
    "02_dry_run": {
        "table_name",
        "transform",
        "sample_size",
        "run_dir",
        "seed",
        "destination_table_name",
        "write_mode",
        "version_attribute",
        "capacity_share",
        "max_read_units",
        "max_write_units",
        "engine",
        "stack_name",
        "fail_on_unsafe",
    },
    "03_migrate": {
        "table_name",
        "transform",
        "engine",
        "execute",
        "require_dry_run",
        "max_failed_share",
        "destination_table_name",
        "total_segments",
        "max_concurrency",
        "write_mode",
        "version_attribute",
        "capacity_share",
        "max_read_units",
        "max_write_units",
        "run_dir",
        "stack_name",
        "prewarm_write_units",
        "prewarm_read_units",
        "allow_stale_stack",
        "tolerated_failure_percentage",
        "tolerated_failure_count",
    },
    "04_results": {"run_dir"},
}


def test_the_notebooks_are_there():
    assert {path.stem for path in NOTEBOOKS} >= set(CONTRACT)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_outputs_are_committed(path):
    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{path.name}: strip outputs (nbstripout)"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_parameters_cell_holds_the_contract_as_plain_literals(path):
    notebook = nbformat.read(path, as_version=4)
    cells = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1
    tree = ast.parse(cells[0].source)
    names = set()
    for node in tree.body:
        assert isinstance(node, ast.AnnAssign) and isinstance(node.value, ast.Constant), ast.dump(node)
        names.add(node.target.id)  # type: ignore[attr-defined]
    assert names == CONTRACT.get(path.stem, names)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebooks_hold_calls_not_logic(path):
    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        for node in ast.walk(ast.parse(cell.source)):
            assert not isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.For, ast.While, ast.If, ast.Lambda)), (
                f"{path.name}: move logic into ddbnb"
            )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_papermill_reads_every_parameter_with_its_help(path):
    from papermill import inspect_notebook

    parameters = inspect_notebook(str(path))
    assert set(parameters) == CONTRACT[path.stem]
    assert all(p["help"] for p in parameters.values()), "each parameter line ends with '# help'"
