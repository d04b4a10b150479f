"""The aws engine's follower, seen from the operator's machine: its settings, its switch, its reports.

The stack's follower is a Lambda on the worker code with an event source mapping
on the source table's stream, created disabled. :func:`publish_settings` writes
what it applies (``follow/settings.json`` in the results bucket, which the
function reads per batch); :func:`switch` enables or disables the mapping; each
batch leaves a report (``runs/<run>/follow/batches/``), which
:func:`new_reports` lists in the order written; batches the mapping gave up on
after its retries land on the stack's failure queue, which :func:`drain_skipped`
empties into the run folder's record.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import boto3

from ddbnb.exceptions import StackNotFollowingError
from ddbnb.worker.clients import client

#: Where the follower's settings live in the results bucket (the stack names it in the function's environment).
SETTINGS_KEY = "follow/settings.json"
#: Reports read per listing.
REPORTS_PER_LISTING = 1000


def reports_prefix(run_name: str) -> str:
    """The results bucket's prefix of a run's follower reports."""
    return f"runs/{run_name}/follow/batches"


def mapping(outputs: Mapping[str, str], stack_name: str, boto3_session: boto3.Session | None = None) -> dict[str, Any]:
    """The stack's event source mapping (GetEventSourceMapping); StackNotFollowingError when it has none."""
    if not outputs.get("FollowerMappingId"):
        raise StackNotFollowingError(stack_name, str(outputs.get("SourceTableName") or ""))
    found: dict[str, Any] = client("lambda", boto3_session).get_event_source_mapping(UUID=outputs["FollowerMappingId"])
    return found


def publish_settings(
    outputs: Mapping[str, str], settings: Mapping[str, Any], boto3_session: boto3.Session | None = None
) -> None:
    """Write the follower's settings where its function reads them, before the mapping is enabled."""
    client("s3", boto3_session).put_object(
        Bucket=outputs["ResultsBucketName"], Key=SETTINGS_KEY, Body=json.dumps(settings).encode()
    )


def switch(outputs: Mapping[str, str], enabled: bool, boto3_session: boto3.Session | None = None) -> str:
    """Enable or disable the stack's mapping; its state as Lambda answers."""
    answer = client("lambda", boto3_session).update_event_source_mapping(
        UUID=outputs["FollowerMappingId"], Enabled=enabled
    )
    return str(answer.get("State") or ("Enabled" if enabled else "Disabled"))


def new_reports(
    outputs: Mapping[str, str], run_name: str, after: str, boto3_session: boto3.Session | None = None
) -> tuple[list[dict[str, Any]], str]:
    """The follower's batch reports written after key ``after`` (names sort by time), and the last key read."""
    s3 = client("s3", boto3_session)
    bucket, prefix = outputs["ResultsBucketName"], reports_prefix(run_name) + "/"
    kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": REPORTS_PER_LISTING}
    if after:
        kwargs["StartAfter"] = after
    listed = s3.list_objects_v2(**kwargs).get("Contents", [])
    reports = [json.loads(s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()) for item in listed]
    return reports, (listed[-1]["Key"] if listed else after)


def drain_skipped(outputs: Mapping[str, str], boto3_session: boto3.Session | None = None) -> list[dict[str, Any]]:
    """The failure records on the stack's queue (each a batch the mapping gave up on), taken off it."""
    url = outputs.get("FollowerFailureQueueUrl")
    if not url:
        return []
    sqs = client("sqs", boto3_session)
    taken: list[dict[str, Any]] = []
    while True:
        messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages", [])
        if not messages:
            return taken
        for message in messages:
            taken.append(json.loads(message["Body"]))
        sqs.delete_message_batch(
            QueueUrl=url,
            Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)],
        )
