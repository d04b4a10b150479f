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

from ddbnb.exceptions import DdbnbError
from ddbnb.progress import progress_bar
from ddbnb.worker.clients import client
from ddbnb.worker.transforms import lambda_transform_spec

#: Seconds between status polls.
POLL_S = 5.0
_RUNNING = ("RUNNING", "PENDING_REDRIVE")


def execution_input(
    events: list[dict[str, Any]],
    *,
    segments_key: str,
    max_concurrency: int,
    prewarm: dict[str, int] | None = None,
    tolerated_failure_percentage: float = 0.0,
    table_poll_s: int = 10,
) -> dict[str, Any]:
    """The state machine's input for a run of ``events`` (the first carries the run settings)."""
    first = events[0]
    return {
        "table": first["table"],
        "destination": first.get("destination"),
        "total_segments": first["total_segments"],
        "transform": lambda_transform_spec(first["transform"]),
        "write_mode": first["write_mode"],
        "version_attribute": first.get("version_attribute") or "",
        "failures_to": first.get("failures_to") or "",
        "read_units_per_s": float(first.get("read_units_per_s") or 0),
        "write_units_per_s": float(first.get("write_units_per_s") or 0),
        "page_size": int(first.get("page_size") or 0),
        "rate_limit": first["rate_limit"],
        "segments_key": segments_key,
        "max_concurrency": max_concurrency,
        "tolerated_failure_percentage": float(tolerated_failure_percentage),
        "prewarm": prewarm is not None,
        "prewarm_read_units": (prewarm or {}).get("read_units", 0),
        "prewarm_write_units": (prewarm or {}).get("write_units", 0),
        "poll_seconds": table_poll_s,
    }


def start_run(
    events: list[dict[str, Any]],
    outputs: dict[str, str],
    run_name: str,
    *,
    max_concurrency: int,
    prewarm: dict[str, int] | None = None,
    tolerated_failure_percentage: float = 0.0,
    table_poll_s: int = 10,
    boto3_session: boto3.Session | None = None,
) -> str:
    """Upload the segment list and start the execution named ``run_name``; return its ARN.

    ``prewarm`` ({"read_units", "write_units"}) raises a provisioned table's capacity,
    or warms an on-demand one, before the Map; the state machine restores provisioned
    capacity on every exit path and polls the table every ``table_poll_s`` seconds.
    """
    bucket = outputs["ResultsBucketName"]
    segments_key = f"runs/{run_name}/segments.json"
    client("s3", boto3_session).put_object(
        Bucket=bucket, Key=segments_key, Body=json.dumps([{"segment": e["segment"]} for e in events]).encode()
    )
    document = execution_input(
        events,
        segments_key=segments_key,
        max_concurrency=max_concurrency,
        prewarm=prewarm,
        tolerated_failure_percentage=tolerated_failure_percentage,
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


def _map_run_arn(sfn: Any, execution_arn: str) -> str | None:
    """The ARN of the execution's Map Run, or None before the Map has started."""
    runs = sfn.list_map_runs(executionArn=execution_arn).get("mapRuns", [])
    return str(runs[0]["mapRunArn"]) if runs else None


def _map_counts(sfn: Any, execution_arn: str) -> dict[str, int]:
    map_run = _map_run_arn(sfn, execution_arn)
    if map_run is None:
        return {}
    return dict(sfn.describe_map_run(mapRunArn=map_run).get("itemCounts", {}))


def wait_run(
    execution_arn: str,
    total_segments: int,
    *,
    poll_s: float = POLL_S,
    progress: bool = True,
    boto3_session: boto3.Session | None = None,
) -> dict[str, Any]:
    """Follow the execution with a bar of finished segments; return its final description.

    On Ctrl-C, asks whether to stop the execution (it keeps running otherwise).
    """
    sfn = client("stepfunctions", boto3_session)
    with progress_bar(total_segments, unit="segment", desc="segments", enabled=progress) as bar:
        try:
            while True:
                described: dict[str, Any] = sfn.describe_execution(executionArn=execution_arn)
                counts = _map_counts(sfn, execution_arn)
                done = sum(counts.get(k, 0) for k in ("succeeded", "failed", "timedOut", "aborted"))
                bar.update(max(0, done - bar.n))
                bar.set_postfix(status=described["status"], failed=counts.get("failed", 0))
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
                print("stopped; capacity is restored only by a run that ends normally: check the table.")
            else:
                print("the execution keeps running; follow it in the Step Functions console.")
            raise


def fetch_results(
    outputs: dict[str, str], execution_arn: str, run_dir: str | Path, boto3_session: boto3.Session | None = None
) -> list[Path]:
    """Copy the execution's ResultWriter files (``results/<map run id>/``) into ``run_dir``."""
    map_run = _map_run_arn(client("stepfunctions", boto3_session), execution_arn)
    if map_run is None:
        raise DdbnbError(
            f"Execution {execution_arn} started no Map Run, so it wrote no results; "
            "see its history in the Step Functions console."
        )
    prefix = f"results/{map_run.rsplit(':', 1)[-1]}/"
    s3 = client("s3", boto3_session)
    folder = Path(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    copied = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=outputs["ResultsBucketName"], Prefix=prefix):
        for item in page.get("Contents", []):
            target = folder / PurePosixPath(item["Key"]).name
            s3.download_file(outputs["ResultsBucketName"], item["Key"], str(target))
            copied.append(target)
    if not any(path.name == "manifest.json" for path in copied):
        raise DdbnbError(
            f"No manifest.json under {prefix} in {outputs['ResultsBucketName']}; "
            "see the execution in the Step Functions console."
        )
    return copied


def fetch_failures(
    outputs: dict[str, str], run_name: str, folder: str | Path, boto3_session: boto3.Session | None = None
) -> list[Path]:
    """Gather the workers' failure logs (``runs/<run>/failures/segment-<n>/*.jsonl``) into ``folder``.

    Each segment's objects become one ``segment-<n>.jsonl``, as the local engine writes it.
    """
    s3 = client("s3", boto3_session)
    bucket, prefix = outputs["ResultsBucketName"], f"runs/{run_name}/failures/"
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
