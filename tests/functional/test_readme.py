"""The README's shell blocks for the flow run as written, against a sandbox they start themselves."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import pytest

from tests.conftest import ROOT

BLOCK = re.compile(r"<!-- readme-flow: (\w+)[^>]*-->\s*```bash\n(.*?)```", re.S)


def flows() -> dict[str, str]:
    return dict(BLOCK.findall((ROOT / "README.md").read_text()))


def test_the_readme_marks_its_flows():
    assert set(flows()) == {"cli", "papermill", "capacity"}


@pytest.mark.parametrize(
    ("name", "run_dir"), [("cli", "runs/orders-1"), ("papermill", "runs/orders-2"), ("capacity", "runs/orders-3")]
)
def test_a_readme_flow_runs_as_written(name, run_dir, tmp_path):
    script = flows()[name]
    folder = ROOT / run_dir
    aside = tmp_path / "aside"
    if folder.exists():  # a developer's own run of the README: keep it
        shutil.move(folder, aside)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MOTO_"))}
    env["DDBNB_SANDBOX_DIR"] = str(tmp_path / "sandbox")  # never the developer's own sandbox
    try:
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        summary = json.loads((folder / "summary.json").read_text())
        assert (summary["status"], summary["scanned"], summary["failed"]) == ("SUCCEEDED", 3000, 0)
        assert json.loads((folder / "dry_run.json").read_text())["safe"] is True
        assert all((folder / chart).stat().st_size > 5_000 for chart in ("throughput.png", "timeline.png"))
        if name == "capacity":  # the plan paced the run to half of what the emulation says the table has
            assert "write limit 1,000 units/s: capacity_share 0.5 of 2,000 (provisioned" in done.stdout + done.stderr
        if name == "cli":
            assert "migration: SUCCEEDED: scanned 3,000" in done.stdout
            executed = {p.name.rsplit("Z-", 1)[1] for p in (folder / "attempts").iterdir()}
            assert {"02_dry_run.ipynb", "03_migrate.ipynb", "04_results.ipynb", "summary.json"} <= executed
            assert (folder / "results.html").stat().st_size > 20_000  # tables and charts rendered
        assert "stopped DynamoDB Local" in done.stderr
    finally:
        subprocess.run([str(ROOT / ".venv/bin/ddbnb"), "sandbox", "down"], env=env, capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)
        if aside.exists():
            shutil.move(aside, folder)


def test_the_cli_has_help_and_a_version():
    ddbnb = str(ROOT / ".venv/bin/ddbnb")
    version = subprocess.run([ddbnb, "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and re.fullmatch(r"ddbnb \d+\.\d+\.\d+\n", version.stdout)
    top = subprocess.run([ddbnb, "--help"], capture_output=True, text=True).stdout
    for command in ("seed", "deploy", "dry-run", "migrate", "results", "status", "sandbox", "demo", "rollback"):
        assert command in top
        helped = subprocess.run([ddbnb, command, "--help"], capture_output=True, text=True)
        assert helped.returncode == 0 and "usage: ddbnb" in helped.stdout
    migrate = subprocess.run([ddbnb, "migrate", "--help"], capture_output=True, text=True).stdout
    for option in (
        "--execute",
        "--run-dir",
        "--max-failed-share",
        "--no-require-dry-run",
        "--destination",
        "--write-mode",
        "--capacity-share",
        "--max-write-units",
        "--no-journal",
    ):
        assert option in migrate


def test_cli_errors_are_one_line_with_status_2(tmp_path):
    ddbnb = str(ROOT / ".venv/bin/ddbnb")
    missing = subprocess.run([ddbnb, "status", str(tmp_path / "nowhere")], capture_output=True, text=True)
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1 and "is not a folder" in missing.stderr
