"""The run folder: the operator's record of one migration, owned by this one module.

A run folder holds one plan and everything that happened under it::

    plan.json         the whole plan, recorded once before the first write
    dry_run.json      02's report (diffs.csv, diffs.json beside it)
    summary.json      the folder's latest state: the run, its retries and rollbacks
    run.lock          the live run's pid, host and start (while one runs)
    checkpoints/      each local segment's cursor and totals after every page
    failures/         every failed item: key (plain and wire format) and reason
    journal/          the before-images (local engine; on AWS in the results bucket)
    stream.json       the source stream's position, taken before the run's first read (when it has one)
    follow/           the follower's position per shard (state.json), summary.json and failures/
    verify.json       the last verify: missing, extra and different keys
    manifest.json, SUCCEEDED_0.json, FAILED_0.json   the ResultWriter layout
    attempts/         each attempt's executed notebook and summary, never overwritten
    retry-<stamp>/, rollback-<stamp>/   later operations, each in the same layout

Locations are stored relative to the folder (or as ``s3://`` URIs), so a
moved folder still finds its journal. One run at a time: :meth:`RunFolder.lock`
refuses a second run, resume, retry or rollback while one is live.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ddbnb.exceptions import DdbnbError, JournalMissingError, RunFolderBusyError, RunIncompleteError
from ddbnb.worker import journal

PLAN = "plan.json"
DRY_RUN = "dry_run.json"
SUMMARY = "summary.json"
LOCK = "run.lock"
CHECKPOINTS = "checkpoints"
FAILURES = "failures"
MISSING = "missing"
CONFLICTS = "conflicts"
JOURNAL = journal.FOLDER
ATTEMPTS = "attempts"
STREAM = "stream.json"
FOLLOW = "follow"
VERIFY = "verify.json"
#: What a verify counts (and lists the keys of): each kind of difference between the target and its source.
VERIFY_KINDS = ("missing", "extra", "different", "not_migrated", "failing")
#: What summary.json keeps across attempts: the folder's history.
HISTORY = ("attempts", "retries", "rollbacks", "follows", "verifies")
#: Statuses of a local run that did not finish: running it again goes on from its checkpoints.
UNFINISHED = ("RUNNING", "INTERRUPTED", "STOPPED")
#: What the recorded plan must match for a run to go on in the folder: what is written, and how fast.
COMPARED = (
    "table",
    "destination",
    "transform",
    "transform_sha256",
    "write_mode",
    "version_attribute",
    "engine",
    "total_segments",
    "max_concurrency",
    "rate_limit",
    "capacity_share",
    "max_read_units",
    "max_write_units",
    "prewarm_read_units",
    "prewarm_write_units",
    "stack_name",
    "journal",
    "split_hot_keys",
)


def utc_stamp() -> str:
    """The time now as run folders name things: ``20261130T091500Z``."""
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def utc_now() -> str:
    """The time now as run folders record it (UTC, ISO 8601, seconds)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _read_json(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text())) if path.is_file() else {}


def _write_json(path: Path, value: Mapping[str, Any]) -> None:
    """Write ``value`` to ``path`` whole or not at all (temporary file, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(value, indent=1, default=str))
    os.replace(temporary, path)


class RunFolder:
    """One run folder (see the module docstring for its layout)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __str__(self) -> str:
        return str(self.path)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    # -- the recorded plan ----------------------------------------------------------------------------------
    def plan(self) -> dict[str, Any]:
        """What plan.json records (empty when no run was recorded here)."""
        return _read_json(self.path / PLAN)

    def record_plan(self, recorded: Mapping[str, Any]) -> None:
        """Record the run's whole plan (before its first write)."""
        _write_json(self.path / PLAN, {**recorded, "recorded_at": self.plan().get("recorded_at") or utc_now()})

    def update_plan(self, **settings: Any) -> None:
        """Add ``settings`` to the recorded plan."""
        _write_json(self.path / PLAN, {**self.plan(), **settings})

    def differences(self, proposed: Mapping[str, Any]) -> list[str]:
        """How ``proposed`` differs from the recorded plan, one line per setting (empty: none, or none recorded)."""
        recorded = self.plan()
        if not recorded:
            return []
        lines = []
        for name in COMPARED:
            if name not in recorded:  # a folder recorded by an older ddbnb: what it did not record is not compared
                continue
            then, now = recorded.get(name), proposed.get(name)
            if _same(then, now):
                continue
            lines.append(f"{name}: {then!r} when the run started, {now!r} now")
        return lines

    def stream_position(self) -> dict[str, Any]:
        """The source stream's position recorded before the run's first read (empty: the table had no stream)."""
        return _read_json(self.path / STREAM)

    def record_stream_position(self, position: Mapping[str, Any]) -> None:
        """Record where the source stream was before the run's first read."""
        _write_json(self.path / STREAM, position)

    def follow_state(self) -> dict[str, Any]:
        """The follower's position per shard (empty before the first follow)."""
        return _read_json(self.path / FOLLOW / "state.json")

    def save_follow_state(self, state: Mapping[str, Any]) -> None:
        """Record the follower's position (whole or not at all), after each applied batch."""
        _write_json(self.path / FOLLOW / "state.json", state)

    def save_follow_summary(self, summary: Mapping[str, Any]) -> None:
        """Record how the last follow ended."""
        _write_json(self.path / FOLLOW / SUMMARY, summary)

    def follow_summary(self) -> dict[str, Any]:
        """How the last follow ended (empty before the first)."""
        return _read_json(self.path / FOLLOW / SUMMARY)

    def record_verify(self, report: Mapping[str, Any]) -> None:
        """Record the last verify's report."""
        _write_json(self.path / VERIFY, report)

    def dry_run(self) -> dict[str, Any]:
        """What dry_run.json (02's report) says (empty when there is none)."""
        return _read_json(self.path / DRY_RUN)

    def checkpoints(self) -> dict[int, dict[str, Any]]:
        """Each local segment's last checkpoint (its totals, and its cursor: None once done), by segment."""
        found: dict[int, dict[str, Any]] = {}
        for path in sorted((self.path / CHECKPOINTS).glob("segment-*.json")):
            saved = _read_json(path)
            found[int(saved["segment"])] = saved
        return found

    # -- where things are -----------------------------------------------------------------------------------
    def journal_location(self) -> str:
        """The journal of the run recorded here, resolved from where the folder is now ("" when it has none).

        A local journal is recorded relative to the folder. Folders recorded by an
        older ddbnb hold the path as it was written; when that path no longer
        exists, the folder's own ``journal/`` is used (a moved folder).
        """
        recorded = str(self.plan().get("journal_to") or "")
        if not recorded or recorded.startswith("s3://"):
            return recorded
        path = Path(recorded)
        if not path.is_absolute():
            inside = self.path / path
            if inside.exists() or not path.exists():
                return str(inside.resolve())
        if path.exists():
            return str(path.resolve())
        return str((self.path / JOURNAL).resolve())

    def journal_for_rollback(self, boto3_session: Any = None) -> str:
        """The journal to undo; JournalMissingError when the run wrote items but its journal cannot be found."""
        location = self.journal_location()
        if not location:
            raise DdbnbError(
                f"{self.path} holds no journal: its run had journal=False. Only point-in-time recovery (into a new "
                "table) can undo it.",
                run_dir=str(self.path),
            )
        summary = self.summary()
        wrote = int(summary.get("written", 0)) + int(summary.get("deleted", 0)) if "scanned" in summary else None
        if wrote != 0 and not journal.totals(location, boto3_session)["objects"]:
            raise JournalMissingError(str(self.path), location, wrote)
        return location

    def attempt_path(self, name: str) -> Path:
        """Where an attempt keeps ``name`` (an executed notebook, a summary): ``attempts/<stamp>-<name>``,
        claimed (created empty) so that no other attempt can take the same name."""
        folder = self.path / ATTEMPTS
        folder.mkdir(parents=True, exist_ok=True)
        stamp = utc_stamp()
        for count in range(1, 10_000):
            path = folder / (f"{stamp}-{name}" if count == 1 else f"{stamp}-{count}-{name}")
            try:
                os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
            except FileExistsError:
                continue  # two in one second
            return path
        raise DdbnbError(f"Cannot name an attempt in {folder}: too many in one second.")

    # -- the summary ----------------------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """What summary.json says (empty when nothing ran here)."""
        return _read_json(self.path / SUMMARY)

    def write_summary(self, summary: Mapping[str, Any]) -> None:
        """Replace summary.json (whole or not at all)."""
        _write_json(self.path / SUMMARY, summary)

    def mark(self, status: str, **fields: Any) -> None:
        """Say in summary.json that the local run is RUNNING, INTERRUPTED or STOPPED, keeping its history."""
        kept = {k: v for k, v in self.summary().items() if k in HISTORY}
        self.write_summary({**kept, "status": status, **fields})

    def set_status(self, status: str) -> None:
        """Change only the status summary.json says."""
        self.write_summary({**self.summary(), "status": status})

    def conclude(self, summary: dict[str, Any], said: str) -> dict[str, Any]:
        """Write ``summary`` (and its copy in attempts/), say ``said``; RunIncompleteError unless it succeeded."""
        before = self.summary()
        kept = {k: v for k, v in before.items() if k in HISTORY}
        whole = {**kept, **summary, "attempts": [*before.get("attempts", []), _attempt_line(summary)]}
        self.write_summary(whole)
        _write_json(self.attempt_path(SUMMARY), summary)
        print(said)
        if summary["status"] != "SUCCEEDED":
            raise RunIncompleteError(str(self.path), summary["failed"], summary["failed_segments"])
        return whole

    def add_history(self, kind: str, entry: Mapping[str, Any], status: str | None = None) -> None:
        """Add an operation's outcome to summary.json (``kind``: "retries", "rollbacks", "follows" or "verifies")."""
        summary = self.summary()
        summary[kind] = [*summary.get(kind, []), dict(entry)]
        if status is not None:
            summary["status"] = status
        self.write_summary(summary)

    # -- one run at a time ----------------------------------------------------------------------------------
    def holder(self) -> dict[str, Any] | None:
        """Who holds the folder's lock now (None: nobody, or a holder that is gone)."""
        held = _read_json(self.path / LOCK) if (self.path / LOCK).is_file() else None
        if held is None or _gone(held):
            return None
        return held

    @contextmanager
    def lock(self, operation: str) -> Iterator[None]:
        """Hold the folder for ``operation`` ("migrate", "resume", "retry", "rollback"); refuse if it is held.

        The lock records the pid, host and start time; a lock whose process is
        gone (same host) is stale and taken over. A folder the lock had to
        create, and that is still empty when it is released (a refused start),
        is removed: a refusal leaves nothing behind.
        """
        created = not self.path.exists()
        self.path.mkdir(parents=True, exist_ok=True)
        path = self.path / LOCK
        mine = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started_at": utc_now(),
            "operation": operation,
            "process_start": _process_start(os.getpid()),
        }
        for _ in range(2):
            try:
                descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                held = self.holder()
                if held is not None:
                    raise RunFolderBusyError(str(self.path), held) from None
                path.unlink(missing_ok=True)  # stale: its process is gone
                continue
            with os.fdopen(descriptor, "w") as out:
                json.dump(mine, out)
            break
        else:
            raise RunFolderBusyError(str(self.path), _read_json(path))
        try:
            yield
        finally:
            if _read_json(path).get("pid") == mine["pid"]:
                path.unlink(missing_ok=True)
            if created and not any(self.path.iterdir()):
                self.path.rmdir()


def _attempt_line(summary: Mapping[str, Any]) -> dict[str, Any]:
    keys = ("started_at", "status", "scanned", "written", "unchanged", "deleted", "failed", "failed_segments")
    return {key: summary.get(key) for key in keys if key in summary}


def _same(then: Any, now: Any) -> bool:
    if isinstance(then, (int, float)) and isinstance(now, (int, float)) and not isinstance(then, bool):
        return float(then) == float(now)
    return bool((then or None) == (now or None)) if not isinstance(then, bool) else then == now


def _process_start(pid: int) -> str:
    """When process ``pid`` started, in clock ticks since boot ("" where /proc cannot say): guards against pid reuse."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return ""
    return fields[19] if len(fields) > 19 else ""


def _gone(held: Mapping[str, Any]) -> bool:
    """Whether the process that took a lock has ended (only knowable on the same host)."""
    if held.get("host") != socket.gethostname():
        return False
    pid = int(held.get("pid") or 0)
    if pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    started = str(held.get("process_start") or "")
    return bool(started) and _process_start(pid) not in ("", started)


def stop_local(folder: RunFolder, wait_s: float = 30.0) -> dict[str, Any]:
    """Interrupt the local run that holds ``folder`` (SIGINT: it stops as Ctrl-C stops it, resumable).

    Returns the lock it found; DdbnbError when no live run holds the folder.
    """
    import signal

    held = folder.holder()
    if held is None:
        raise DdbnbError(f"No run is live in {folder.path}: nothing holds {LOCK}.", run_dir=str(folder.path))
    if held.get("host") != socket.gethostname():
        raise DdbnbError(
            f"The run in {folder.path} runs on {held.get('host')} (pid {held.get('pid')}); stop it there.",
            run_dir=str(folder.path),
        )
    os.kill(int(held["pid"]), signal.SIGINT)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline and folder.holder() is not None:
        time.sleep(0.2)
    return held
