"""The aws engine: one Step Functions execution, a Distributed Map child per segment.

The segment list goes to S3 (the Map reads it through ItemReader: execution input
is capped at 256 KiB), the execution is started by name, a bar follows the Map
Run's item counts, and the ResultWriter files are copied into the run folder so
the results notebook reads them exactly as it reads the local engine's.
"""

from __future__ import annotations

import json
import time
from pathlib import Path, PurePosixPath
from typing import Any

import boto3
from botocore.exceptions import ClientError

from ddbnb.exceptions import DdbnbError
from ddbnb.progress import RunView
from ddbnb.worker import prewarm
from ddbnb.worker.clients import client
from ddbnb.worker.hotkeys import results_prefix
from ddbnb.worker.transforms import lambda_transform_spec

#: Seconds between status polls.
POLL_S = 5.0
#: The child workflow's state that carries a segment's cursor to its next invocation.
NEXT_INVOCATION = "NextInvocation"
#: What ResultWriter leaves in a run folder (cleared before results are fetched again).
RESULT_FILES = ("manifest.json", "SUCCEEDED_*.json", "FAILED_*.json", "PENDING_*.json", "map[0-9]*-*.json")
_RUNNING = ("RUNNING", "PENDING_REDRIVE")


def execution_input(
    events: list[dict[str, Any]],
    *,
    segments_key: str,
    max_concurrency: int,
    prewarm_targets: list[dict[str, Any]] | None = None,
    tolerated_failure_percentage: float = 0.0,
    tolerated_failure_count: int = 0,
    table_poll_s: int = 10,
    capacity_record: str = "",
) -> dict[str, Any]:
    """The state machine's input for a run of ``events`` (the first carries the run settings).

    The Map fails when either failure threshold is passed, so a threshold that
    was not given (0) while the other was is set to tolerate everything. With
    ``hot_items``, the key ranges the scan segments cut run in a second pass of
    the Map, from ``ranges.json`` next to the segment list (``ranges`` is null
    until then).
    """
    first = events[0]
    percentage, count = float(tolerated_failure_percentage), int(tolerated_failure_count)
    if count and not percentage:
        percentage = 100.0
    if percentage and not count:
        count = len(events)
    return {
        "table": first["table"],
        "destination": first.get("destination"),
        # the events' largest: a rollback's event for a hot key's range counts past that range's number
        "total_segments": max(int(event["total_segments"]) for event in events),
        "transform": lambda_transform_spec(first["transform"]),
        "write_mode": first["write_mode"],
        "version_attribute": first.get("version_attribute") or "",
        "failures_to": first.get("failures_to") or "",
        "operation": first.get("operation") or "migrate",
        "journal": dict(first.get("journal") or {}),
        "read_units_per_s": float(first.get("read_units_per_s") or 0),
        "write_units_per_s": float(first.get("write_units_per_s") or 0),
        "page_size": int(first.get("page_size") or 0),
        "rate_limit": first["rate_limit"],
        "segments_key": segments_key,
        "hot_items": int(first.get("hot_items") or 0),
        "ranges_key": str(PurePosixPath(segments_key).with_name("ranges.json")),
        "ranges": None,
        "max_concurrency": max_concurrency,
        "tolerated_failure_percentage": percentage,
        "tolerated_failure_count": count,
        "prewarm": bool(prewarm_targets),
        "prewarm_targets": list(prewarm_targets or []),
        "capacity_record": capacity_record,
        "limits": dict(first.get("limits") or {}),
        "poll_seconds": table_poll_s,
    }


def start_run(
    events: list[dict[str, Any]],
    outputs: dict[str, str],
    run_name: str,
    *,
    max_concurrency: int,
    prewarm_targets: list[dict[str, Any]] | None = None,
    tolerated_failure_percentage: float = 0.0,
    tolerated_failure_count: int = 0,
    table_poll_s: int = 10,
    boto3_session: boto3.Session | None = None,
) -> str:
    """Upload the segment list and start the execution named ``run_name``; return its ARN.

    ``prewarm_targets`` (from :func:`ddbnb.worker.prewarm.targets_for`) are raised
    before the Map, polling every ``table_poll_s`` seconds until they are active;
    the state machine restores them when the run succeeds, the stack's rule
    (and :func:`restore_raised`) when it fails, is stopped or times out.
    """
    bucket = outputs["ResultsBucketName"]
    segments_key = f"runs/{run_name}/segments.json"
    client("s3", boto3_session).put_object(
        Bucket=bucket,
        Key=segments_key,
        Body=json.dumps([{"segment": e["segment"], "key_range": e.get("key_range")} for e in events]).encode(),
    )
    document = execution_input(
        events,
        capacity_record=prewarm.record_location(bucket, run_name) if prewarm_targets else "",
        segments_key=segments_key,
        max_concurrency=max_concurrency,
        prewarm_targets=prewarm_targets,
        tolerated_failure_percentage=tolerated_failure_percentage,
        tolerated_failure_count=tolerated_failure_count,
        table_poll_s=table_poll_s,
    )
    started = client("stepfunctions", boto3_session).start_execution(
        stateMachineArn=outputs["StateMachineArn"], name=run_name, input=json.dumps(document)
    )
    return str(started["executionArn"])


def describe_status(execution_arn: str, boto3_session: boto3.Session | None = None) -> str:
    """The execution's status (RUNNING, SUCCEEDED, FAILED, TIMED_OUT, ABORTED, PENDING_REDRIVE)."""
    described = client("stepfunctions", boto3_session).describe_execution(executionArn=execution_arn)
    return str(described["status"])


def map_run_arns(sfn: Any, execution_arn: str) -> list[str]:
    """The ARNs of the execution's Map Runs, oldest first: the scan segments', then (when hot keys were cut)
    their key ranges'. Empty before the Map has started."""
    runs = [
        run
        for page in sfn.get_paginator("list_map_runs").paginate(executionArn=execution_arn)
        for run in page.get("mapRuns", [])
    ]
    return [str(run["mapRunArn"]) for run in sorted(runs, key=lambda run: run["startDate"])]


def map_counts(execution_arn: str, boto3_session: boto3.Session | None = None, sfn: Any = None) -> dict[str, int]:
    """The item counts of the execution's Map Runs (one item per segment or key range), added up: total,
    succeeded, running, failed, ...; empty before the Map has started."""
    sfn = sfn or client("stepfunctions", boto3_session)
    counts: dict[str, int] = {}
    for map_run in map_run_arns(sfn, execution_arn):
        for name, value in sfn.describe_map_run(mapRunArn=map_run).get("itemCounts", {}).items():
            counts[name] = counts.get(name, 0) + int(value)
    return counts


def wait_run(
    execution_arn: str,
    total_segments: int,
    *,
    bucket: str = "",
    poll_s: float = POLL_S,
    progress: bool = True,
    boto3_session: boto3.Session | None = None,
) -> dict[str, Any]:
    """Follow the execution with a live view of its segments (done, running, left, failed, time left);
    return its final description. Item counts come with the results, when the run ends.

    On Ctrl-C, asks whether to stop the execution (it keeps running otherwise);
    stopping it puts back what pre-warm raised, from the record in ``bucket``.
    """
    sfn = client("stepfunctions", boto3_session)
    with RunView(None, total_segments, enabled=progress) as view:
        try:
            while True:
                described: dict[str, Any] = sfn.describe_execution(executionArn=execution_arn)
                counts = map_counts(execution_arn, sfn=sfn)
                view.total_segments = max(view.total_segments, counts.get("total", 0))  # and the key ranges
                done = sum(counts.get(k, 0) for k in ("succeeded", "failed", "timedOut", "aborted"))
                failed = sum(counts.get(k, 0) for k in ("failed", "timedOut", "aborted"))
                view.segments(done, counts.get("running", 0), failed)
                if described["status"] not in _RUNNING:
                    return described
                time.sleep(poll_s)
        except KeyboardInterrupt:
            try:
                answer = input(f"\nStop execution {execution_arn}? [y/N] ").strip().lower()
            except Exception:  # no stdin (headless papermill): leave the execution running
                answer = ""
            if answer == "y":
                sfn.stop_execution(executionArn=execution_arn, cause="stopped from ddbnb")
                print(f"stopped {execution_arn}")
                restore_raised(execution_arn, bucket, boto3_session)
            else:
                print("the execution keeps running; follow it in the Step Functions console.")
            raise


def restore_raised(execution_arn: str, bucket: str, boto3_session: boto3.Session | None = None) -> dict[str, Any]:
    """Put back the capacity a failed, stopped or timed-out execution raised, and say what happened.

    What to restore comes from the execution's capacity record in ``bucket``
    (written before the first raise). The stack's EventBridge rule has the
    worker do the same; restoring twice is harmless (a setting no longer at the
    raised value is left alone).
    """
    report = prewarm.restore_after_stop(
        client("dynamodb", boto3_session),
        client("stepfunctions", boto3_session),
        execution_arn,
        s3=client("s3", boto3_session),
        bucket=bucket,
    )
    for note in report["notes"]:
        print(f"capacity: {note}")
    return report


def segment_position(child_execution_arn: str, boto3_session: boto3.Session | None = None) -> dict[str, Any]:
    """Where a failed child workflow stopped: the cursor and totals its last finished invocation returned.

    Read from the child's history, newest first; a child that failed in its
    first invocation has no cursor (it starts over).
    """
    sfn = client("stepfunctions", boto3_session)
    pages = sfn.get_paginator("get_execution_history").paginate(executionArn=child_execution_arn, reverseOrder=True)
    try:
        for page in pages:
            found = last_position(page.get("events", []))
            if found is not None:
                return found
    except ClientError as error:  # the results still count; only the cursor is unknown
        return {"cursor": None, "totals": {}, "unknown": str(error)}
    return {"cursor": None, "totals": {}}


def last_position(events: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The cursor and totals of the first NextInvocation exit among ``events`` (newest first); None if none."""
    for event in events:
        details = event.get("stateExitedEventDetails")
        if details and details.get("name") == NEXT_INVOCATION:
            state = json.loads(details.get("output") or "{}")
            return {"cursor": state.get("cursor"), "totals": state.get("totals") or {}}
    return None


def fetch_results(
    outputs: dict[str, str], execution_arn: str, run_dir: str | Path, boto3_session: boto3.Session | None = None
) -> list[Path]:
    """Copy the execution's ResultWriter files (``results/<map run id>/``) into ``run_dir``.

    A run that cut hot keys has a second Map Run, for the key ranges: its files
    are copied as ``map2-<name>``, and ``manifest.json`` lists the files of both.
    """
    map_runs = map_run_arns(client("stepfunctions", boto3_session), execution_arn)
    if not map_runs:
        raise DdbnbError(
            f"Execution {execution_arn} started no Map Run, so it wrote no results; "
            "see its history in the Step Functions console."
        )
    folder = Path(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    for pattern in RESULT_FILES:  # an earlier fetch of this execution, before a redrive
        for stale in folder.glob(pattern):
            stale.unlink()
    copied: list[Path] = []
    manifests = []
    for index, map_run in enumerate(map_runs):
        renamed = "" if index == 0 else f"map{index + 1}-"
        files = _copy_map_run(outputs["ResultsBucketName"], results_prefix(map_run), folder, renamed, boto3_session)
        copied += files
        manifests.append((renamed, folder / f"{renamed}manifest.json"))
    if len(manifests) > 1:
        _merge_manifests(manifests)
    return copied


def _copy_map_run(
    bucket: str, prefix: str, folder: Path, renamed: str, boto3_session: boto3.Session | None
) -> list[Path]:
    """Copy one Map Run's ResultWriter files into ``folder``, each name prefixed with ``renamed``."""
    s3 = client("s3", boto3_session)
    copied = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            target = folder / f"{renamed}{PurePosixPath(item['Key']).name}"
            s3.download_file(bucket, item["Key"], str(target))
            copied.append(target)
    if not any(path.name == f"{renamed}manifest.json" for path in copied):
        raise DdbnbError(
            f"No manifest.json under {prefix} in {bucket}; see the execution in the Step Functions console."
        )
    return copied


def _merge_manifests(manifests: list[tuple[str, Path]]) -> None:
    """Make the first manifest list every Map Run's result files, by the names they were copied under."""
    merged = json.loads(manifests[0][1].read_text())
    listed = merged.setdefault("ResultFiles", {})
    for renamed, path in manifests[1:]:
        for status, files in json.loads(path.read_text()).get("ResultFiles", {}).items():
            for listed_file in files:
                name = f"{renamed}{PurePosixPath(listed_file['Key']).name}"
                listed.setdefault(status, []).append({**listed_file, "Key": name})
    manifests[0][1].write_text(json.dumps(merged, indent=1))


def fetch_failures(
    outputs: dict[str, str],
    run_name: str,
    folder: str | Path,
    boto3_session: boto3.Session | None = None,
    log: str = "failures",
) -> list[Path]:
    """Gather the workers' logs (``runs/<run>/<log>/segment-<n>/*.jsonl``: failures, or conflicts) into ``folder``.

    Each segment's objects become one ``segment-<n>.jsonl``, as the local engine writes it.
    """
    s3 = client("s3", boto3_session)
    bucket, prefix = outputs["ResultsBucketName"], f"runs/{run_name}/{log}/"
    by_segment: dict[str, list[bytes]] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            segment = PurePosixPath(item["Key"]).parent.name
            by_segment.setdefault(segment, []).append(s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read())
    target = Path(folder)
    written = []
    for segment, bodies in sorted(by_segment.items()):
        target.mkdir(parents=True, exist_ok=True)
        path = target / f"{segment}.jsonl"
        path.write_bytes(b"".join(bodies))
        written.append(path)
    return written


def redrive(execution_arn: str, boto3_session: boto3.Session | None = None) -> str:
    """Redrive a failed execution: only its failed and unfinished children run again."""
    client("stepfunctions", boto3_session).redrive_execution(executionArn=execution_arn)
    return execution_arn
