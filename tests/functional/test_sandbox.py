"""The embedded sandbox: real servers, and each way it can fail with a clear error."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from ddbnb.emulation.servers import Sandbox, find_java, start_sandbox
from ddbnb.exceptions import DynamoDBLocalMissingError, JavaNotFoundError, PortInUseError, ServerDiedError
from ddbnb.worker.clients import client

BIN = Path(sys.executable).parent


def test_the_session_sandbox_serves_dynamodb_and_moto(sandbox: Sandbox):
    assert os.environ["AWS_ENDPOINT_URL_DYNAMODB"] == sandbox.dynamodb.url
    assert "TableNames" in client("dynamodb").list_tables()
    s3 = client("s3")
    s3.create_bucket(Bucket="sandbox-check")
    assert "sandbox-check" in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert client("stepfunctions").list_state_machines()["stateMachines"] == []


def test_missing_java_is_named(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    with pytest.raises(JavaNotFoundError, match="Java 17"):
        find_java()


def test_old_java_is_refused(monkeypatch, tmp_path):
    fake = tmp_path / "java"
    fake.write_text("#!/bin/sh\necho 'openjdk version \"11.0.2\" 2019-01-15' >&2\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    with pytest.raises(JavaNotFoundError, match="Java 11"):
        find_java()


def test_missing_jar_names_the_make_target(monkeypatch, tmp_path):
    monkeypatch.setenv("DDBNB_DYNAMODB_LOCAL_DIR", str(tmp_path))
    with pytest.raises(DynamoDBLocalMissingError, match="make setup"):
        start_sandbox()


def test_port_in_use_is_named():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(PortInUseError, match=str(port)):
            start_sandbox(dynamodb_port=port)


def test_a_server_that_dies_shows_its_log_tail(monkeypatch, tmp_path):
    (tmp_path / "DynamoDBLocal.jar").write_text("not a jar")
    monkeypatch.setenv("DDBNB_DYNAMODB_LOCAL_DIR", str(tmp_path))
    with pytest.raises(ServerDiedError) as info:
        start_sandbox()
    assert "DynamoDB Local" in str(info.value)
    assert "jarfile" in info.value.log_tail.lower()


def test_cli_up_env_down_stops_only_what_it_started(tmp_path):
    env = {**os.environ, "DDBNB_SANDBOX_DIR": str(tmp_path)}

    def ddbnb(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([BIN / "ddbnb", "sandbox", *args], env=env, capture_output=True, text=True)

    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        up = ddbnb("up")
        assert up.returncode == 0, up.stderr
        assert "export AWS_ENDPOINT_URL_DYNAMODB=http://127.0.0.1:" in up.stdout
        assert "sandbox started" in up.stderr
        assert ddbnb("env").stdout == up.stdout
        state = json.loads((tmp_path / "state.json").read_text())
        pids = [state["dynamodb"]["pid"], state["moto"]["pid"]]
        assert all(Path(f"/proc/{pid}").exists() for pid in pids)
        again = ddbnb("up")
        assert again.returncode == 0 and "already running" in again.stderr and again.stdout == up.stdout
        port = state["dynamodb"]["port"]
        elsewhere = ddbnb("up", "--dynamodb-port", str(port + 1))
        assert elsewhere.returncode == 2 and "started" not in elsewhere.stderr
        assert f"DynamoDB Local on port {port} (asked for {port + 1})" in elsewhere.stderr
        assert "ddbnb sandbox down" in elsewhere.stderr
        # Capacity emulation asked of a sandbox that runs without it: refused, never silently skipped.
        limited = ddbnb("up", "--write-units", "2000")
        assert limited.returncode == 2 and "write units 0 (asked for 2000)" in limited.stderr
        assert "`ddbnb sandbox down && ddbnb sandbox up --write-units 2000`" in limited.stderr
        stopped = ddbnb("down")
        assert stopped.returncode == 0
        assert f"stopped DynamoDB Local (port {port}, pid {pids[0]})" in stopped.stderr
        for pid in pids:
            assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()
        missing = ddbnb("env")
        assert missing.returncode == 2 and "ddbnb sandbox up" in missing.stderr
        assert bystander.poll() is None
    finally:
        bystander.kill()
        ddbnb("down")
