"""JupyterLab on the notebooks, with its kernels pointed at the sandbox (``make lab``)."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from ddbnb.emulation import servers
from ddbnb.emulation.demo import DEMO_TABLE, seed_demo_table
from ddbnb.exceptions import DdbnbError, TableExistsError
from ddbnb.paths import PROJECT_ROOT
from ddbnb.worker import params

#: The demo table ``make lab`` seeds: big enough for the charts, small enough to be ready in seconds.
LAB_DEMO_ITEMS = 20_000
#: JupyterLab's port unless told (``make lab``: LAB_PORT).
LAB_PORT = 8888
#: Seconds JupyterLab may take to answer before ``lab`` gives up.
START_TIMEOUT_S = 120.0


def lab_command(port: int, token: str, notebooks: Path, *, open_browser: bool = False) -> list[str]:
    """The ``jupyter lab`` command line: this Python's JupyterLab on ``notebooks``, on 127.0.0.1:``port``."""
    command = [
        sys.executable,
        "-m",
        "jupyterlab",
        f"--ServerApp.root_dir={notebooks}",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.open_browser={open_browser}",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # containers and CI run as root; JupyterLab refuses it unasked
        command.append("--allow-root")
    return command


def wait_until_serving(url: str, process: subprocess.Popen[bytes], timeout: float = START_TIMEOUT_S) -> None:
    """Return once ``url`` answers; raise DdbnbError when the server died or took too long."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            port = url.split(":")[2].split("/")[0]
            raise DdbnbError(
                f"JupyterLab exited with status {process.returncode} before it served port {port}; its log is "
                f"above (a port in use? pick another: LAB_PORT=... make lab, or ddbnb lab --port ...)."
            )
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise DdbnbError(f"JupyterLab did not answer at {url} within {timeout:.0f} s.")


def run_lab(
    port: int = LAB_PORT, *, open_browser: bool = False, seed_items: int = LAB_DEMO_ITEMS, notebooks: Path | None = None
) -> int:
    """Serve ``notebooks/`` in JupyterLab against the sandbox until Ctrl-C; return JupyterLab's exit status.

    Starts the sandbox unless one is running (and then stops only what it
    started), seeds the demo table unless it exists, and gives JupyterLab's
    kernels the standard ``AWS_*`` variables that point at the sandbox: the
    notebooks themselves do not change. Prints the URL with its token. Ctrl-C
    or SIGTERM stops JupyterLab, then the sandbox if this call started it.
    """
    params.check_int("port", port, 1, 65_535)
    params.check_int("seed_items", seed_items, 0, 10_000_000)
    params.check_bool("open_browser", open_browser)
    # A TERM (a closed terminal, a service manager) cleans up like Ctrl-C: the finally blocks below run.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    running, started = servers.up()
    try:
        os.environ.update(running.env)  # for the seeding below, and inherited by JupyterLab and its kernels
        try:
            seed_demo_table(DEMO_TABLE, seed_items, progress=False)
            print(f"seeded {DEMO_TABLE} with {seed_items:,} items", flush=True)
        except TableExistsError:
            print(f"{DEMO_TABLE} is already there", flush=True)
        token = secrets.token_hex(24)
        folder = notebooks or PROJECT_ROOT / "notebooks"
        process = subprocess.Popen(lab_command(port, token, folder, open_browser=open_browser), env=os.environ.copy())
        url = f"http://127.0.0.1:{port}/lab?token={token}"
        try:
            wait_until_serving(f"http://127.0.0.1:{port}/api/status?token={token}", process)
            print(
                f"\nJupyterLab: {url}\nkernels use the sandbox (DynamoDB Local at {running.dynamodb.url}, "
                f"moto at {running.moto.url}); Ctrl-C stops JupyterLab"
                + (" and the sandbox." if started else " (the sandbox was running before, and keeps running)."),
                flush=True,
            )
            return process.wait()
        except KeyboardInterrupt:
            return 0
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGINT)  # JupyterLab asks to confirm one SIGINT; two stop it
                time.sleep(0.2)
                process.send_signal(signal.SIGINT)
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
    finally:
        if started:
            servers.down()
            print("sandbox stopped", flush=True)
