"""Execute the notebooks headless with papermill, into a run folder; and the demo that does it.

The demo and the ``ddbnb`` command both go through :func:`run_notebook`, so every
path leaves the same audit record: the executed notebooks beside the JSON
results and charts they wrote.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ddbnb.emulation.demo import DEMO_TABLE, DEMO_TRANSFORM, seed_demo_table
from ddbnb.emulation.servers import sandbox
from ddbnb.exceptions import DdbnbError
from ddbnb.paths import NOTEBOOKS, PROJECT_ROOT


def _show_cell_output() -> None:
    """Let papermill's --log-output lines (cell output, progress lines) reach stderr as they come."""
    logger = logging.getLogger("papermill")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


def execute(name: str, output: str | Path, parameters: dict[str, Any], *, log_output: bool = False) -> None:
    """Execute ``notebooks/<name>.ipynb`` into ``output``, in the notebooks folder as JupyterLab would.

    A failing cell raises papermill's PapermillExecutionError (the output is still written).
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
    )


def run_notebook(name: str, out_dir: str | Path, parameters: dict[str, Any], *, log_output: bool = False) -> Path:
    """Execute ``notebooks/<name>.ipynb`` with ``parameters`` into ``out_dir/<name>.ipynb``.

    A failing cell raises DdbnbError with the cell's error and the executed notebook's path.
    """
    import papermill

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    output = out / f"{name}.ipynb"
    if log_output:
        _show_cell_output()
    started = time.monotonic()
    try:
        execute(name, output, parameters, log_output=log_output)
    except papermill.PapermillExecutionError as exc:
        raise DdbnbError(
            f"notebooks/{name}.ipynb stopped in cell {exc.cell_index}: {exc.ename}: {exc.evalue} "
            f"(executed notebook: {output})",
            notebook=name,
            ename=exc.ename,
            evalue=exc.evalue,
            output=str(output),
        ) from None
    print(f"notebooks/{name}.ipynb done in {time.monotonic() - started:.1f} s: {output}", file=sys.stderr)
    return output


def run_demo(items: int = 100_000, runs_dir: str | Path | None = None) -> dict[str, Any]:
    """Start the sandbox, seed the demo table, run notebooks 01 to 04, then stop the sandbox.

    01 deploys the stack to the sandbox's moto server; 03 migrates with the local engine.
    """
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
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
            run_notebook(name, run_dir, parameters)
    summary: dict[str, Any] = json.loads((run_dir / "summary.json").read_text())
    charts = sorted(str(p) for p in run_dir.glob("*.png"))
    print(
        f"\nMigrated {summary['scanned']:,} items ({summary['written']:,} written, "
        f"{summary['unchanged']:,} unchanged, {summary['deleted']:,} deleted, {summary['failed']:,} failed) "
        f"at {summary['items_per_s']:,.0f} items/s.\nRun folder: {run_dir}\nCharts:\n  " + "\n  ".join(charts)
    )
    return summary
