"""`make lab` in a real browser: Debian's chromium, driven by Playwright.

The test runs `ddbnb lab` (what `make lab` runs) with a sandbox of its own,
opens the notebooks from the Lab UI, runs them, and stops Lab with Ctrl-C.
Without Chromium it skips and says how to install it, unless
DDBNB_REQUIRE_BROWSER=1 (set by .ci/run), which makes it fail instead.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest

from ddbnb.emulation.demo import DEMO_TABLE
from ddbnb.paths import PROJECT_ROOT

CHROMIUM = next(
    (p for p in ("/usr/lib/chromium/chromium", shutil.which("chromium") or "", shutil.which("chromium-browser") or "")
     if p and Path(p).is_file()),
    None,
)  # fmt: skip
DDBNB = PROJECT_ROOT / ".venv" / "bin" / "ddbnb"
TIMEOUT_MS = 180_000
#: Every cell in the DOM (no windowing), and no news pop-up over the page.
SETTINGS = {
    "notebook-extension/tracker": {"windowingMode": "none"},
    "apputils-extension/notification": {"fetchNews": "false"},
}
#: True once every code cell shows an execution count.
ALL_RAN = """() => {
    const prompts = [...document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputArea-prompt')];
    return prompts.length > 0 && prompts.every(p => /\\[\\d+\\]/.test(p.textContent));
}"""


def _browser_or_skip() -> str:
    if CHROMIUM:
        return CHROMIUM
    message = "Chromium is not installed: `sudo apt-get install chromium` (Debian/Ubuntu) runs this test"
    if os.environ.get("DDBNB_REQUIRE_BROWSER") == "1":
        pytest.fail(message + " (DDBNB_REQUIRE_BROWSER=1 requires it)")
    pytest.skip(message)


def _set_parameters(path: Path, **values: Any) -> None:
    """Give parameters of the notebook at ``path`` new values, as a user edits its parameters cell."""
    notebook = nbformat.read(path, as_version=4)
    cell = next(c for c in notebook.cells if "parameters" in c.metadata.get("tags", []))
    lines = cell.source.splitlines()
    for name, value in values.items():
        lines = [
            f"{name}: {type(value).__name__} = {value!r}" if line.startswith(f"{name}:") else line for line in lines
        ]
    cell.source = "\n".join(lines)
    nbformat.write(notebook, path)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """`ddbnb lab --no-browser` with a sandbox of its own (its state in tmp_path); stopped with Ctrl-C."""
    settings = tmp_path / "settings"
    for name, value in SETTINGS.items():
        path = settings / "@jupyterlab" / f"{name}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(value))
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") and k != "MOTO_PORT"}
    env.update(
        DDBNB_SANDBOX_DIR=str(tmp_path / "sandbox"),
        JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"),
        JUPYTER_CONFIG_DIR=str(tmp_path / "config"),
        JUPYTERLAB_SETTINGS_DIR=str(settings),
    )
    # The kit's notebooks, with 03 set to run (a user would edit its parameters cell the same way).
    folder = tmp_path / "notebooks"
    shutil.copytree(PROJECT_ROOT / "notebooks", folder)
    transform = f"{PROJECT_ROOT / 'lambda' / 'transforms' / 'demo.py'}:upgrade_order"
    _set_parameters(folder / "02_dry_run.ipynb", transform=transform, run_dir=str(tmp_path / "run"))
    _set_parameters(folder / "03_migrate.ipynb", transform=transform, run_dir=str(tmp_path / "run"), execute=True)
    port = _free_port()
    log = tmp_path / "lab.log"
    command = [DDBNB, "lab", "--no-browser", "--port", str(port), "--items", "3000", "--notebooks", str(folder)]
    with log.open("w") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 120
        while not re.search(r"JupyterLab: (\S+)", log.read_text()) and time.monotonic() < deadline:
            assert process.poll() is None, log.read_text()
            time.sleep(0.5)
        found = re.search(r"JupyterLab: (\S+)", log.read_text())
        assert found, log.read_text()
        state = json.loads((tmp_path / "sandbox" / "state.json").read_text())
        yield {
            "url": found.group(1),
            "base": f"http://127.0.0.1:{port}",
            "process": process,
            "log": log,
            "state": state,
        }
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)  # Ctrl-C
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()


def _run_all(page: Any, base: str, notebook: str, token: str, shot: Path) -> str:
    """Open ``notebook`` in Lab, run all its cells from the Run menu, wait for the kernel; return the page text."""
    page.goto(f"{base}/lab/tree/{notebook}?token={token}&reset")  # reset: no tab of an earlier visit comes back
    try:
        page.locator(".lm-TabBar-tab.lm-mod-current", has_text=notebook).wait_for()
        page.locator(".jp-Notebook .jp-CodeCell").first.wait_for()
        page.get_by_text("Python 3 (ipykernel) | Idle").wait_for()  # the kernel is up
        page.get_by_role("menuitem", name="Run", exact=True).click()
        page.get_by_text("Run All Cells", exact=True).click()
        page.wait_for_function(ALL_RAN, timeout=TIMEOUT_MS)  # a cell that fails leaves the next ones unrun
        page.get_by_text("Python 3 (ipykernel) | Idle").wait_for()
    finally:
        page.locator(".jp-Notebook .jp-Cell").last.scroll_into_view_if_needed()
        page.wait_for_timeout(300)
        page.screenshot(path=str(shot))  # the end of the notebook: its last outputs
    return str(page.locator(".jp-NotebookPanel:visible .jp-Notebook").inner_text())


@pytest.mark.timeout(420)
def test_make_lab_serves_the_notebooks_and_runs_the_dry_run_from_the_ui(lab, tmp_path):
    from playwright.sync_api import sync_playwright

    executable = _browser_or_skip()
    token = lab["url"].split("token=")[1]
    names = ("00_start_here", "02_dry_run", "02_dry_run_top", "03_migrate")
    shots = {name: tmp_path / f"{name}_in_lab.png" for name in names}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(TIMEOUT_MS)
        # The start page's kernel sees the sandbox `ddbnb lab` started and seeded.
        text = _run_all(page, lab["base"], "00_start_here.ipynb", token, shots["00_start_here"])
        assert f"'{DEMO_TABLE}'" in text and "Dry run first" in text
        # 02 on the demo table, with the notebook's own defaults, from the Run menu.
        text = _run_all(page, lab["base"], "02_dry_run.ipynb", token, shots["02_dry_run"])
        assert "verdict" in text.lower() and DEMO_TABLE in text  # the report
        assert page.locator(".jp-OutputArea-output table.dataframe").count() >= 1  # the findings table
        assert not re.search(r"^\w+Error: ", text, re.MULTILINE) and "Traceback" not in text  # no cell shows an error
        page.evaluate("document.querySelectorAll('.jp-WindowedPanel-outer').forEach(e => e.scrollTop = 0)")
        page.wait_for_timeout(500)
        page.screenshot(path=str(shots["02_dry_run_top"]))  # the plan, the estimate and the report
        # 03 with execute=True: the live view is one widget, redrawn in place, with the run's final numbers.
        text = _run_all(page, lab["base"], "03_migrate.ipynb", token, shots["03_migrate"])
        view = page.locator(".jp-OutputArea-output .widget-html-content")
        assert view.count() == 1, text
        view.scroll_into_view_if_needed()
        page.wait_for_timeout(300)
        page.screenshot(path=str(shots["03_migrate"]))
        shown = view.inner_text()
        assert "scanned\t3,000 of 3,000 (100%)" in shown and "0 running, 0 left" in shown, shown
        assert "SUCCEEDED: scanned 3,000" in text
        browser.close()
    # Ctrl-C stops JupyterLab and the sandbox it started.
    lab["process"].send_signal(signal.SIGINT)
    assert lab["process"].wait(timeout=60) == 0
    assert "sandbox stopped" in lab["log"].read_text()
    for server in ("dynamodb", "moto"):
        pid = lab["state"][server]["pid"]
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()
    kept = PROJECT_ROOT / "runs" / "browser"  # beside the run folders (not committed), for a person to look at
    kept.mkdir(parents=True, exist_ok=True)
    for shot in shots.values():
        shutil.copy(shot, kept / shot.name)
    print(f"screenshots: {', '.join(str(kept / s.name) for s in shots.values())}")
