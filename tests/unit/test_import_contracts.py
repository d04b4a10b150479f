"""The import contracts in pyproject.toml hold, and each one breaks when a forbidden import is added."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

LINT = str(Path(sys.executable).parent / "lint-imports")
WORKER = "The worker ships in the Lambda"
LAYERS = "Layers: entry points over the parts"


def lint(folder: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([LINT, "--no-cache"], cwd=folder, capture_output=True, text=True, timeout=120)


def test_the_tree_keeps_every_contract():
    done = lint(ROOT)
    assert done.returncode == 0, done.stdout
    assert "Contracts: 2 kept, 0 broken." in done.stdout


@pytest.mark.parametrize(
    ("module", "line", "broken"),
    [
        ("worker/items.py", "import pandas", WORKER),
        ("worker/segment.py", "import tqdm", WORKER),
        ("worker/segment.py", "import ddbnb.insight.diff", WORKER),
        ("exceptions.py", "import papermill", WORKER),
        ("insight/results.py", "import ddbnb.engines.local", LAYERS),
        ("engines/local.py", "import ddbnb.plan", LAYERS),
        ("control/deploy.py", "import ddbnb.emulation.servers", LAYERS),
        ("newpart.py", "import ddbnb.worker.items", LAYERS),
    ],
)
def test_each_contract_breaks_on_a_forbidden_import(tmp_path, module, line, broken):
    shutil.copytree(ROOT / "ddbnb", tmp_path / "ddbnb", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    target = tmp_path / "ddbnb" / module
    target.write_text((target.read_text() if target.exists() else "") + f"\n{line}  # forbidden\n")
    done = lint(tmp_path)
    assert done.returncode != 0, done.stdout
    flat = " ".join(done.stdout.split())
    assert f"{' '.join(broken.split())}" in flat.split("Broken contracts", 1)[1], flat
