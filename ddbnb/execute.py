"""Execute the notebooks headless with papermill, into a run folder.

The demo and the ``ddbnb`` command both go through :func:`run_notebook`, so every
path leaves the same audit record: the executed notebooks beside the JSON
results and charts they wrote.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

from ddbnb.exceptions import DdbnbError
from ddbnb.servers import project_root

NOTEBOOKS = project_root() / "notebooks"


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
