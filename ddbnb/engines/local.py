"""The local engine: every segment in a process pool, with the state machine's cursor loop.

Each segment runs :func:`ddbnb.worker.lambda_entry.run_event` (a migration's or a
rollback's segment) repeatedly, passing the previous result back as ``totals`` while it returns a cursor, exactly as the
Step Functions child workflow loops on its Lambda. The outcomes are shaped like
Distributed Map child executions so :mod:`ddbnb.insight.results` writes the same files.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import queue
import signal
import time
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from datetime import datetime, timezone
from typing import Any

import boto3

from ddbnb.engines import checkpoints
from ddbnb.engines.main_guard import check_main_guarded
from ddbnb.engines.resultwriter import ChildOutcome
from ddbnb.exceptions import CredentialsExpiredError
from ddbnb.progress import RunView
from ddbnb.worker.capacity import fresh_values, limits_for
from ddbnb.worker.collector import settle_collector
from ddbnb.worker.hotkeys import range_events
from ddbnb.worker.lambda_entry import run_event
from ddbnb.worker.tables import TableFacts

#: The Lambda limit; the local engine hands each invocation the same budget.
INVOCATION_SECONDS = 900.0

#: Errors that every segment would meet: the first one stops the whole run.
SYSTEMIC_ERRORS = frozenset(
    {
        "TableNotFoundError",
        "TransformLoadError",
        "TransformFailingError",
        "InvalidParameterError",
        "NoCredentialsError",
        "CredentialsExpiredError",
        "WriteRefusedError",
    }
)
SYSTEMIC_CODES = ("AccessDenied", "ResourceNotFoundException", "UnrecognizedClientException", "InvalidSignature")

_progress: Any = None
_shared: dict[str, Any] = {}
#: The tables' facts, described once by each worker process of a run (a pool's processes serve one run).
_known_tables: dict[str, TableFacts] = {}


class SharedBucketState:
    """A capacity bucket's state in shared memory: one budget for every worker process of the run."""

    def __init__(self, context: Any) -> None:
        self.values = context.RawArray("d", fresh_values())
        self.lock = context.Lock()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _init_worker(progress: Any, shared: dict[str, Any], environment: dict[str, str]) -> None:
    global _progress, _shared
    _progress = progress
    _shared = shared
    _known_tables.clear()
    # A forked worker starts with the environment its fork server had when it started: give it the run's.
    os.environ.clear()
    os.environ.update(environment)
    # Ctrl-C reaches the whole process group: the engine stops the workers itself (their checkpoints stay),
    # so a worker neither dies mid-page on it nor prints a traceback of its own.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    settle_collector()  # this process only runs segments, whose pages of items hold no cycles (ADR 0025)


def systemic(outcome: ChildOutcome) -> bool:
    """Whether a failed segment failed for a reason every other segment would meet too."""
    return outcome.status == "FAILED" and (
        outcome.error in SYSTEMIC_ERRORS or any(code in outcome.cause for code in SYSTEMIC_CODES)
    )


def _report(segment: int, totals: dict[str, Any]) -> None:
    if _progress is not None:
        _progress.put((segment, totals))


def session_args(boto3_session: boto3.Session | None) -> dict[str, Any]:
    """What a worker process needs to build the same session: the profile, or the credentials.

    A session on a named profile is rebuilt from the profile (so refreshable
    credentials, such as an assumed role, refresh in the workers too). Any other
    session (keys, a role assumed in code, the environment) passes its current
    credentials, with their expiry when they have one.
    """
    if boto3_session is None:
        return {}
    args: dict[str, Any] = {"region_name": boto3_session.region_name}
    if boto3_session.profile_name not in ("default", None):
        return {**args, "profile_name": boto3_session.profile_name}
    credentials = boto3_session.get_credentials()
    if credentials is None:
        return args
    frozen = credentials.get_frozen_credentials()
    args.update(
        aws_access_key_id=frozen.access_key,
        aws_secret_access_key=frozen.secret_key,
        aws_session_token=frozen.token,
    )
    expiry = getattr(credentials, "_expiry_time", None)
    if expiry is not None:
        args["expires_at"] = expiry.timestamp()
    return args


def _session(args: dict[str, Any]) -> boto3.Session | None:
    """The worker process's session for ``args`` (None: the default one), made once and then reused."""
    expires_at = args.get("expires_at")
    if expires_at is not None and time.time() > expires_at:
        raise CredentialsExpiredError(datetime.fromtimestamp(expires_at, timezone.utc).isoformat())
    if not args:
        return None
    return _made_session(tuple(sorted((k, v) for k, v in args.items() if k != "expires_at")))


@functools.lru_cache(maxsize=4)
def _made_session(args: tuple[tuple[str, Any], ...]) -> boto3.Session:
    return boto3.Session(**dict(args))


def run_segment(
    event: dict[str, Any],
    invocation_seconds: float = INVOCATION_SECONDS,
    session_args: dict[str, Any] | None = None,
    checkpoint_dir: str | None = None,
) -> ChildOutcome:
    """Run one segment to the end with the cursor loop; never raises.

    With ``checkpoint_dir``, the segment's result so far is saved there after every page.
    """
    started = _now()
    _report(int(event["segment"]), dict(event.get("totals") or {}))  # running from now, from its carried counts
    try:
        current = dict(event)
        while True:
            result = run_event(
                current,
                deadline=time.time() + invocation_seconds,
                on_page=functools.partial(_report, int(event["segment"])),
                checkpoint=functools.partial(checkpoints.save, checkpoint_dir) if checkpoint_dir else None,
                limits=limits_for(event, _shared),
                boto3_session=_session(session_args or {}),
                known_tables=_known_tables,
            )
            if result["cursor"] is None:
                return ChildOutcome(event, "SUCCEEDED", started, _now(), output=result)
            current = {**event, "cursor": result["cursor"], "totals": result}
    except Exception as exc:  # reported as a FAILED child, like Step Functions does
        return ChildOutcome(event, "FAILED", started, _now(), error=type(exc).__name__, cause=str(exc))


def run_local(
    events: list[dict[str, Any]],
    *,
    max_concurrency: int,
    expected_items: int | None = None,
    invocation_seconds: float = INVOCATION_SECONDS,
    session_args: dict[str, Any] | None = None,
    progress: bool = True,
    checkpoint_dir: str | None = None,
    carried: Sequence[dict[str, Any]] = (),
    total_segments: int = 0,
) -> list[ChildOutcome]:
    """Run ``events`` (one per segment) in ``max_concurrency`` processes.

    A live view (a widget in JupyterLab, text lines under papermill) shows the
    counters, the rates now, the segments and the time left against
    ``expected_items`` and ``total_segments`` (default: the events), counting
    the ``carried`` totals of segments a resumed run finished before. With
    ``checkpoint_dir`` every segment saves its cursor and totals there after each
    page. On Ctrl-C the pool is stopped and KeyboardInterrupt propagates; the
    checkpoints let the next run go on from there.
    """
    context = warm_up()
    counts: Any = context.Queue()
    shared = {"read": SharedBucketState(context), "write": SharedBucketState(context)}
    outcomes: list[ChildOutcome] = []
    view = RunView(expected_items, total_segments or len(events), enabled=progress)
    for totals in carried:
        view.carry(totals)
    for event in events:  # segments that go on from a checkpoint start from what they had done
        if event.get("totals"):
            view.carry_partial(int(event["segment"]), dict(event["totals"]))
    pool = ProcessPoolExecutor(
        max_workers=max_concurrency,
        mp_context=context,
        initializer=_init_worker,
        initargs=(counts, shared, dict(os.environ)),
    )
    try:
        futures: dict[Future[ChildOutcome], dict[str, Any]] = {}
        started = {int(event["segment"]) for event in events}

        def submit(more: list[dict[str, Any]]) -> set[Future[ChildOutcome]]:
            submitted = {pool.submit(run_segment, e, invocation_seconds, session_args, checkpoint_dir): e for e in more}
            futures.update(submitted)
            return set(submitted)

        pending = submit(events)
        while pending:
            done, pending = wait(pending, timeout=0.25, return_when=FIRST_COMPLETED)
            reports = _drain(counts, view)
            for future in done:
                outcome = _outcome(future, futures[future])
                outcomes.append(outcome)
                view.done(int(outcome.event["segment"]), outcome.output, outcome.status == "SUCCEEDED")
                reports.append((int(outcome.event["segment"]), outcome.output or {}))
            stop = next((o for o in outcomes if systemic(o)), None)
            if stop is not None:
                outcomes += _stop(pool, pending, futures, stop)
                pending = set()
            else:  # a scan segment that cut a hot key: its ranges run as segments of their own, at once
                more = _new_ranges(reports, futures, started)
                view.total_segments += len(more)
                pending |= submit(more)
            view.refresh()
        _drain(counts, view)
    except KeyboardInterrupt:
        _kill(pool)
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        view.close()
    return sorted(outcomes, key=lambda o: int(o.event["segment"]))


def warm_up() -> Any:
    """Start the worker processes' fork server now (it imports ddbnb while the caller does other work);
    return the multiprocessing context the pool uses.

    Where the platform has one, each worker is a fork of a server that has
    imported ddbnb once, instead of a fresh interpreter that imports it again
    (about 0.4 s of CPU a worker), and the server stays for the next run of the
    same process (a kernel). Elsewhere (Windows) workers are spawned. Either
    way each worker imports the main script: one that starts the run from its
    top level is refused first (UnguardedMainError).
    """
    check_main_guarded()
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    from multiprocessing import forkserver

    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    forkserver.ensure_running()
    return context


def _kill(pool: ProcessPoolExecutor) -> None:
    """Cancel what has not started and end the worker processes now (their checkpoints stay)."""
    processes = list((getattr(pool, "_processes", None) or {}).values())  # gone once shut down
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.terminate()


def _stop(
    pool: ProcessPoolExecutor,
    pending: set[Future[ChildOutcome]],
    futures: dict[Future[ChildOutcome], dict[str, Any]],
    cause: ChildOutcome,
) -> list[ChildOutcome]:
    """Stop every other segment at once; each is reported FAILED with the error that stopped the run."""
    _kill(pool)
    reason = f"stopped: segment {cause.event['segment']} failed with {cause.error}: {cause.cause}"
    return [ChildOutcome(futures[f], "FAILED", _now(), _now(), error="RunStopped", cause=reason) for f in pending]


def _outcome(future: Future[ChildOutcome], event: dict[str, Any]) -> ChildOutcome:
    try:
        return future.result()
    except BrokenProcessPool as exc:
        return ChildOutcome(event, "FAILED", _now(), _now(), error="WorkerCrashed", cause=str(exc))


def _new_ranges(
    reports: list[tuple[int, dict[str, Any]]], futures: dict[Future[ChildOutcome], dict[str, Any]], started: set[int]
) -> list[dict[str, Any]]:
    """The key-range units that segments reported cutting and that have not been started (``started``
    gains their numbers)."""
    if not any(totals.get("splits") for _, totals in reports):  # the usual tick: nothing cut
        return []
    parents = {int(event["segment"]): event for event in futures.values()}
    more = []
    for segment, totals in reports:
        fresh = [split for split in totals.get("splits") or () if int(split["segment"]) not in started]
        for event in range_events(parents[segment], fresh):
            started.add(int(event["segment"]))
            more.append(event)
    return more


def _drain(counts: Any, view: RunView) -> list[tuple[int, dict[str, Any]]]:
    """Show the reports the workers sent since the last call; return them."""
    reports = []
    while True:
        try:
            segment, totals = counts.get_nowait()
        except queue.Empty:
            break
        view.page(segment, totals)
        reports.append((segment, totals))
    return reports
