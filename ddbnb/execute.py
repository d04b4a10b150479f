"""Execute the notebooks headless with papermill, into a run folder; and the demo that does it.

The demo and the ``ddbnb`` command both go through :func:`run_notebook`, so every
path leaves the same audit record: the executed notebooks beside the JSON
results and charts they wrote.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from pathlib import Path
from typing import Any

from ddbnb.emulation.demo import DEMO_TABLE, DEMO_TRANSFORM, seed_demo_table
from ddbnb.emulation.servers import sandbox
from ddbnb.exceptions import DdbnbError
from ddbnb.paths import NOTEBOOKS, PROJECT_ROOT
from ddbnb.runfolder import RunFolder, utc_stamp

#: What papermill logs about its own work, not the notebook's: shown only with ``--verbose``.
_CHATTER = re.compile(
    r"^(Executing Cell|Ending Cell|Input Notebook|Output Notebook|Working directory|Executing notebook with kernel"
    r"|Black is not installed|Executing:|Passed unknown parameter)"
)
#: The plain-text form of objects a notebook shows rendered (a styled table, a chart): noise in a log.
_OBJECT_REPR = re.compile(r"^\s*<([\w.]+ (object )?at 0x[0-9a-f]+|Figure size [\d.]+x[\d.]+ with \d+ Axes)>\s*$")


class _Quiet(logging.Filter):
    """Let through what the notebook says (its prints, errors, tables), not papermill's own chatter."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (_CHATTER.match(message) or _OBJECT_REPR.match(message))


def _show_cell_output(verbose: bool) -> None:
    """Let papermill's --log-output lines (cell output, progress lines) reach stderr as they come."""
    logger = logging.getLogger("papermill")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    for each in logger.handlers:
        for old in [f for f in each.filters if isinstance(f, _Quiet)]:
            each.removeFilter(old)
        if not verbose:
            each.addFilter(_Quiet())


def execute(
    name: str, output: str | Path, parameters: dict[str, Any], *, log_output: bool = False, verbose: bool = True
) -> None:
    """Execute ``notebooks/<name>.ipynb`` into ``output``, in the notebooks folder as JupyterLab would.

    A failing cell raises papermill's PapermillExecutionError (the output is still written).
    Without ``verbose``, the kernel's start-up warnings are not printed.
    """
    import papermill

    papermill.execute_notebook(
        NOTEBOOKS / f"{name}.ipynb",
        output,
        parameters=parameters,
        kernel_name="python3",
        cwd=str(NOTEBOOKS),
        progress_bar=False,
        log_output=log_output,
        extra_arguments=[] if verbose else ["--IPKernelApp.log_level=ERROR"],
    )


def run_notebook(
    name: str,
    out_dir: str | Path,
    parameters: dict[str, Any],
    *,
    log_output: bool = False,
    verbose: bool = True,
) -> Path:
    """Execute ``notebooks/<name>.ipynb`` with ``parameters`` into ``out_dir/attempts/<stamp>-<name>.ipynb``.

    Each run keeps its own executed notebook: a preview or a refused run never
    overwrites an executed one. A failing cell raises DdbnbError with the cell's
    error and the executed notebook's path; a KeyboardInterrupt in the kernel
    (``ddbnb stop``, or Ctrl-C forwarded to it) is raised as KeyboardInterrupt.
    """
    import papermill

    output = RunFolder(out_dir).attempt_path(f"{name}.ipynb")
    if log_output:
        _show_cell_output(verbose)
    started = time.monotonic()
    try:
        execute(name, output, parameters, log_output=log_output, verbose=verbose)
    except papermill.PapermillExecutionError as exc:
        if exc.ename == "KeyboardInterrupt":
            raise KeyboardInterrupt from None
        raise DdbnbError(
            f"{exc.ename}: {exc.evalue}"
            + (f" (notebooks/{name}.ipynb, cell {exc.cell_index}; executed notebook: {output})" if verbose else ""),
            notebook=name,
            ename=exc.ename,
            evalue=exc.evalue,
            output=str(output),
        ) from None
    print(f"notebooks/{name}.ipynb done in {time.monotonic() - started:.1f} s: {output}", file=sys.stderr)
    return output


def render_html(notebook: str | Path, target: str | Path) -> Path:
    """An executed notebook as one HTML page (tables rendered, charts embedded), for reading outside Lab."""
    import nbconvert
    import nbformat

    exporter = nbconvert.HTMLExporter(exclude_input=True)  # type: ignore[no-untyped-call]
    body, _ = exporter.from_notebook_node(nbformat.read(str(notebook), as_version=4))  # type: ignore[no-untyped-call]
    path = Path(target)
    path.write_text(body)
    return path


def run_demo(items: int = 100_000, runs_dir: str | Path | None = None) -> dict[str, Any]:
    """Start the sandbox, seed the demo table, run notebooks 01 to 04, then stop the sandbox.

    01 deploys the stack to the sandbox's moto server; 03 migrates with the local engine.
    """
    stamp = utc_stamp()
    run_dir = (Path(runs_dir) if runs_dir else PROJECT_ROOT / "runs") / f"demo-{stamp}"
    run_dir.mkdir(parents=True)
    transform = str(PROJECT_ROOT / DEMO_TRANSFORM)
    with sandbox() as running:
        print(f"sandbox: DynamoDB Local at {running.dynamodb.url}, moto at {running.moto.url}")
        seed_demo_table(DEMO_TABLE, items)
        out = str(run_dir)
        steps: list[tuple[str, dict[str, Any]]] = [
            ("01_deploy", {"stack_name": "ddbnb-demo", "table_name": DEMO_TABLE, "transform": transform}),
            ("02_dry_run", {"table_name": DEMO_TABLE, "transform": transform, "sample_size": 100, "run_dir": out}),
            ("03_migrate", {"table_name": DEMO_TABLE, "transform": transform, "execute": True, "run_dir": out}),
            ("04_results", {"run_dir": out}),
        ]
        for name, parameters in steps:
            print(f"running notebooks/{name}.ipynb ...", flush=True)
            executed = run_notebook(name, run_dir, parameters)
        report = render_html(executed, run_dir / "results.html")
    summary: dict[str, Any] = json.loads((run_dir / "summary.json").read_text())
    charts = sorted(str(p) for p in run_dir.glob("*.png"))
    print(
        f"\nMigrated {summary['scanned']:,} items ({summary['written']:,} written, "
        f"{summary['unchanged']:,} unchanged, {summary['deleted']:,} deleted, {summary['failed']:,} failed) "
        f"at {summary['items_per_s']:,.0f} items/s.\nRun folder: {run_dir}\nReport: {report}\nCharts:\n  "
        + "\n  ".join(charts)
    )
    return summary
