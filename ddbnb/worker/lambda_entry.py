"""What the Lambda handler calls: one segment's work (migration or rollback), a batch of stream records, a
capacity action, or the collection of the key ranges a Map Run's segments cut.

Only the standard library and boto3: this module ships inside the Lambda package.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from ddbnb.worker import followbatch, prewarm, rollback
from ddbnb.worker.clients import client
from ddbnb.worker.collector import settle_collector
from ddbnb.worker.hotkeys import collect_ranges
from ddbnb.worker.segment import process_segment

#: Seconds kept free before the Lambda timeout, so the worker returns its cursor in time.
SAFETY_S = 30.0
#: What EventBridge says of an execution that was stopped or timed out (see the template's rule).
STATUS_CHANGE = "Step Functions Execution Status Change"


def handle(event: Mapping[str, Any], context: Any) -> dict[str, Any]:
    """Process one segment until it ends or the invocation nears its timeout, a batch of stream records, or run a
    capacity action or the collection of key ranges."""
    settle_collector()  # once per execution environment: what the handler imported is kept out of its sight
    remaining = context.get_remaining_time_in_millis() / 1000
    deadline = time.time() + remaining - min(SAFETY_S, remaining / 4)
    if event.get("detail-type") == STATUS_CHANGE:
        execution = event["detail"]["executionArn"]
        bucket = str(event.get("results_bucket") or "")  # the stack's rule adds it
        return prewarm.restore_after_stop(
            client("dynamodb"), client("stepfunctions"), execution, s3=client("s3"), bucket=bucket
        )
    if "Records" in event:  # the follower: a batch from the stream's event source mapping
        return followbatch.handle_records(event)
    action = event.get("action")
    if action == "raise_capacity":
        return prewarm.raise_capacity(client("dynamodb"), event["targets"], event.get("record_to") or "", client("s3"))
    if action == "capacity_ready":
        return {"ready": prewarm.capacity_ready(client("dynamodb"), event["tables"])}
    if action == "restore_capacity":
        return prewarm.restore_capacity(client("dynamodb"), event["restore"], deadline=deadline)
    if action == "collect_ranges":  # the hot keys' ranges the scan segments cut: the Map's second pass
        return collect_ranges(client("s3"), event["bucket"], event["map_run"], event["write_to"])
    return run_event(event, deadline=deadline)


def run_event(event: Mapping[str, Any], **options: Any) -> dict[str, Any]:
    """One invocation of a segment: a migration's, or a rollback's (``operation: "rollback"``)."""
    if event.get("operation") == rollback.OPERATION:
        return rollback.rollback_segment(event, **options)
    return process_segment(event, **options)
