"""The committed notebooks: thin, parameterized, and free of outputs."""

from __future__ import annotations

import ast
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("*.ipynb"))
CONTRACT: dict[str, set[str]] = {
    "00_start_here": set(),  # an empty parameters cell: it explains, and lists the tables the kernel sees
    "01_deploy": {
        "stack_name",
        "table_name",
        "transform",
        "destination_table_name",
        "lambda_memory_mb",
        "reserved_concurrency",
        "lambda_timeout_s",
        "replace_failed",
        "stack_parameters",
        "follow",
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
        "rate_limit",
        "prewarm_write_units",
        "prewarm_read_units",
        "allow_non_idempotent",
        "fail_on_unsafe",
        "follow",
        "split_hot_keys",
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
        "rate_limit",
        "run_dir",
        "stack_name",
        "prewarm_write_units",
        "prewarm_read_units",
        "allow_stale_stack",
        "tolerated_failure_percentage",
        "tolerated_failure_count",
        "journal",
        "follow",
        "split_hot_keys",
    },
    "04_results": {"run_dir"},
    "05_rollback": {
        "run_dir",
        "execute",
        "engine",
        "write_mode",
        "max_concurrency",
        "capacity_share",
        "max_read_units",
        "max_write_units",
        "rate_limit",
        "stack_name",
    },
    "06_follow": {"run_dir", "until", "for_s", "caught_up_s", "engine", "execute", "sample"},
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
    assert len(cells) == 1  # papermill injects parameters after it, even in a notebook that takes none
    tree = ast.parse(cells[0].source)
    names = set()
    for node in tree.body:
        assert isinstance(node, ast.AnnAssign), ast.dump(node)
        assert isinstance(node.value, ast.Constant) or ast.literal_eval(node.value) == {}, ast.dump(node)
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


#: Parameters of the API that notebooks leave out on purpose, with the reason.
NOT_IN_NOTEBOOKS = {
    "boto3_session": "a session is built from the kernel's profile and environment",
    "progress": "notebooks always show progress",
    "invocation_seconds": "a test knob: how long a local invocation runs before it checkpoints",
    "template": "the kit's own CloudFormation template; another one is for Python use",
    "rows": "how many segments the styled table shows; the whole DataFrame is `results`",
    "count": "how many of the slowest segments are listed",
    "rollback_dir": "where a rollback's results go; the notebook keeps the default, run_dir/rollback-<UTC timestamp>",
}


def _calls(notebook: nbformat.NotebookNode) -> list[ast.Call]:
    """Every ``ddbnb.<function>(...)`` call in the notebook's code cells."""
    calls = []
    for cell in notebook.cells:
        if cell.cell_type == "code":
            for node in ast.walk(ast.parse(cell.source)):
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                    if isinstance(node.func.value, ast.Name) and node.func.value.id == "ddbnb":
                        calls.append(node)
    return calls


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_each_call_passes_every_parameter_its_function_takes_and_each_notebook_parameter_is_used(path):
    import inspect

    import ddbnb

    notebook = nbformat.read(path, as_version=4)
    parameters = set(CONTRACT[path.stem])
    used: set[str] = set()
    for call in _calls(notebook):
        function = getattr(ddbnb, call.func.attr)  # type: ignore[attr-defined]
        names = list(inspect.signature(function).parameters)
        passed = dict(zip(names, call.args, strict=False))  # positional arguments, in order
        passed.update({k.arg: k.value for k in call.keywords if k.arg})
        missing = set(names) - set(passed) - set(NOT_IN_NOTEBOOKS)
        assert not missing, f"{path.name}: ddbnb.{call.func.attr} takes {sorted(missing)}: add them as parameters"  # type: ignore[attr-defined]
        for name, value in passed.items():
            if isinstance(value, ast.Name) and value.id in parameters:
                assert value.id == name, f"{path.name}: {value.id} is passed as {name}"
    for cell in notebook.cells:  # every parameter reaches a call (ddbnb's, or a method of what it returned)
        if cell.cell_type == "code" and "parameters" not in cell.metadata.get("tags", []):
            for node in ast.walk(ast.parse(cell.source)):
                if isinstance(node, ast.Call):
                    arguments = [*node.args, *(k.value for k in node.keywords)]
                    used |= {a.id for a in arguments if isinstance(a, ast.Name) and a.id in parameters}
    assert used == parameters, f"{path.name}: parameters no call uses: {sorted(parameters - used)}"
