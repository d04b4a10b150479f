"""Faults DynamoDB Local never produces (UnprocessedItems, throttling), injected through botocore hooks.

The hooks sit on ``before-call.dynamodb.BatchWriteItem`` of the session the worker
uses: they answer instead of DynamoDB Local for some calls. Where DynamoDB would
process part of a batch, the hook really writes that part through a separate client.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse

from ddbnb import process_segment
from ddbnb.worker.clients import client
from ddbnb.worker.wire import WireClient
from ddbnb.worker.writes import Backoff, write_batch
from tests.conftest import scan_all, simple_item, spec


def _response(status: int, body: dict[str, Any]) -> tuple[AWSResponse, dict[str, Any]]:
    return AWSResponse("http://fault", status, {}, None), {**body, "ResponseMetadata": {"HTTPStatusCode": status}}


class PartialWrites:
    """For the first ``times`` calls, process only a share of each batch (rounded up)."""

    def __init__(self, times: int, share: float = 0.5) -> None:
        self.times = times
        self.share = share
        self.calls = 0
        self.real = client("dynamodb")

    def __call__(self, params: dict[str, Any], **_: Any) -> Any:
        self.calls += 1
        if self.calls > self.times:
            return None
        request_items = json.loads(params["body"])["RequestItems"]
        ((table, requests),) = request_items.items()
        done = math.ceil(len(requests) * self.share)
        if done:
            self.real.batch_write_item(RequestItems={table: requests[:done]})
        return _response(200, {"UnprocessedItems": {table: requests[done:]}})


class Throttle:
    """Answer ``code`` for the first ``times`` calls."""

    def __init__(self, times: int, code: str = "ProvisionedThroughputExceededException") -> None:
        self.times = times
        self.code = code
        self.calls = 0

    def __call__(self, **_: Any) -> Any:
        self.calls += 1
        if self.calls > self.times:
            return None
        return _response(400, {"Error": {"Code": self.code, "Message": "Rate of requests exceeds the allowed"}})


def base_event(table: str) -> dict[str, Any]:
    return {
        "table": table,
        "segment": 0,
        "total_segments": 1,
        "transform": spec("bump"),
        "write_mode": "batch",
        "rate_limit": 0,
        "page_size": 100,
    }


def test_unprocessed_items_are_retried_until_written(make_table, dynamodb, session):
    table = make_table([simple_item(i) for i in range(300)])
    fault = PartialWrites(times=40)
    session.events.register("before-call.dynamodb.BatchWriteItem", fault)
    result = process_segment(base_event(table), boto3_session=session)
    assert fault.calls > 40  # every faulty answer was followed by retries
    assert (result["written"], result["failed"]) == (300, 0)
    assert {item["visits"] for item in scan_all(dynamodb, table).values()} == {1}


@pytest.mark.parametrize("code", ["ProvisionedThroughputExceededException", "ThrottlingException"])
def test_throttled_batches_are_retried_until_written(make_table, dynamodb, session, code):
    table = make_table([simple_item(i) for i in range(120)])
    fault = Throttle(times=6, code=code)
    session.events.register("before-call.dynamodb.BatchWriteItem", fault)
    result = process_segment(base_event(table), boto3_session=session)
    assert fault.calls > 6
    assert (result["written"], result["failed"]) == (120, 0)
    assert {item["visits"] for item in scan_all(dynamodb, table).values()} == {1}


def test_writes_still_throttled_after_every_retry_are_reported_not_dropped(make_table, session):
    table = make_table([])
    session.events.register("before-call.dynamodb.BatchWriteItem", Throttle(times=10**6))
    dynamodb = WireClient(session)
    requests = [{"PutRequest": {"Item": simple_item(i)}} for i in range(25)]
    outcome = write_batch(dynamodb, table, requests, Backoff(attempts=3, sleep=lambda _: None))
    assert outcome.puts == 0
    assert [request for request, _ in outcome.failures] == requests
    assert "after 3 attempts" in outcome.failures[0][1]


def test_unprocessed_forever_are_reported_with_their_keys(make_table, session):
    table = make_table([])
    session.events.register("before-call.dynamodb.BatchWriteItem", PartialWrites(times=10**6, share=0))
    dynamodb = WireClient(session)
    requests = [{"PutRequest": {"Item": simple_item(i, "x")}} for i in range(20)]
    outcome = write_batch(dynamodb, table, requests, Backoff(attempts=4, sleep=lambda _: None))
    assert outcome.puts == 0
    assert [request for request, _ in outcome.failures] == requests
    assert "after 4 attempts without progress" in outcome.failures[0][1]


def test_slow_progress_is_not_cut_short(make_table, dynamodb, session):
    table = make_table([])
    fault = PartialWrites(times=10**6, share=0.2)  # a fifth of what is left, every time
    session.events.register("before-call.dynamodb.BatchWriteItem", fault)
    requests = [{"PutRequest": {"Item": simple_item(i, "x")}} for i in range(25)]
    outcome = write_batch(WireClient(session), table, requests, Backoff(attempts=2, sleep=lambda _: None))
    assert (outcome.puts, outcome.failures) == (25, [])
    assert fault.calls > 2
    assert dynamodb.scan(TableName=table, Select="COUNT")["Count"] == 25
