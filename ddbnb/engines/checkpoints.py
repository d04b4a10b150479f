"""Checkpoints of a local run: each segment's cursor and totals after every page, written atomically.

``run_dir/checkpoints/segment-<n>.json`` holds the segment's result so far (its
``cursor`` is where to go on; None once the segment is done). Each write goes
to a temporary file, is fsynced, and replaces the old one, so a crash at any
moment leaves either the previous checkpoint or the new one, never half of
one. A killed run therefore loses at most the pages in flight, and running it
again with the same ``run_dir`` goes on from there.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ddbnb.runfolder import CHECKPOINTS, RunFolder

FOLDER = CHECKPOINTS


def checkpoint_path(run_dir: str | Path, segment: int) -> Path:
    """Where segment ``segment`` of the run in ``run_dir`` keeps its checkpoint."""
    return Path(run_dir) / FOLDER / f"segment-{segment}.json"


def save(run_dir: str | Path, result: dict[str, Any]) -> None:
    """Write a segment's result so far (write, fsync, rename)."""
    path = checkpoint_path(run_dir, int(result["segment"]))
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(f".{os.getpid()}.tmp")
    with open(temporary, "w") as out:
        json.dump(result, out)
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, path)


def load_all(run_dir: str | Path) -> dict[int, dict[str, Any]]:
    """Every checkpoint of the run in ``run_dir``, by segment (empty when there are none)."""
    return RunFolder(run_dir).checkpoints()


def clear(run_dir: str | Path) -> None:
    """Remove the checkpoints of an earlier, finished run in ``run_dir``."""
    folder = Path(run_dir) / FOLDER
    for path in folder.glob("segment-*"):
        path.unlink()
