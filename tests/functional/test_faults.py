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
from ddbnb.exceptions import ThrottledError
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


def test_writes_still_throttled_after_every_retry_stall_and_are_never_failed(make_table, session):
    table = make_table([])
    session.events.register("before-call.dynamodb.BatchWriteItem", Throttle(times=10**6))
    dynamodb = WireClient(session)
    requests = [{"PutRequest": {"Item": simple_item(i)}} for i in range(25)]
    outcome = write_batch(dynamodb, table, requests, Backoff(attempts=3, sleep=lambda _: None))
    assert (outcome.puts, outcome.failures) == (0, [])
    assert outcome.stalled == requests and outcome.throttled == 3


def test_unprocessed_forever_stall_with_every_request_kept(make_table, session):
    table = make_table([])
    session.events.register("before-call.dynamodb.BatchWriteItem", PartialWrites(times=10**6, share=0))
    dynamodb = WireClient(session)
    requests = [{"PutRequest": {"Item": simple_item(i, "x")}} for i in range(20)]
    outcome = write_batch(dynamodb, table, requests, Backoff(attempts=4, sleep=lambda _: None))
    assert (outcome.puts, outcome.failures) == (0, [])
    assert outcome.stalled == requests


def test_slow_progress_is_not_cut_short(make_table, dynamodb, session):
    table = make_table([])
    fault = PartialWrites(times=10**6, share=0.2)  # a fifth of what is left, every time
    session.events.register("before-call.dynamodb.BatchWriteItem", fault)
    requests = [{"PutRequest": {"Item": simple_item(i, "x")}} for i in range(25)]
    outcome = write_batch(WireClient(session), table, requests, Backoff(attempts=2, sleep=lambda _: None))
    assert (outcome.puts, outcome.failures) == (25, [])
    assert fault.calls > 2
    assert dynamodb.scan(TableName=table, Select="COUNT")["Count"] == 25


class ThrottleFrom:
    """Let the first ``free`` calls through, then answer ``code`` for the next ``times`` calls."""

    def __init__(self, free: int, times: int, code: str = "ProvisionedThroughputExceededException") -> None:
        self.free, self.times, self.code, self.calls = free, times, code, 0

    def __call__(self, **_: Any) -> Any:
        self.calls += 1
        if self.free < self.calls <= self.free + self.times:
            return _response(400, {"Error": {"Code": self.code, "Message": "Rate of requests exceeds the allowed"}})
        return None


@pytest.mark.parametrize(("mode", "operation"), [("batch", "BatchWriteItem"), ("conditional", "BatchExecuteStatement")])
def test_throttling_longer_than_the_retries_skips_nothing(make_table, dynamodb, session, monkeypatch, mode, operation):
    monkeypatch.setattr("ddbnb.worker.segment.Backoff", lambda **kw: Backoff(base=0.001, cap=0.002, attempts=3, **kw))
    table = make_table([simple_item(i) for i in range(200)])
    # Pages of 50 take 2 write calls each: pages 1 and 2 go through, then every write is throttled
    # for longer than the retry budget (3 calls without progress).
    fault = ThrottleFrom(free=4, times=10)
    session.events.register(f"before-call.dynamodb.{operation}", fault)
    event = {**base_event(table), "transform": spec("set_flag"), "write_mode": mode, "page_size": 50}
    first = process_segment(event, boto3_session=session)
    assert first["failed"] == 0 and first["failures"] == []
    assert first["scanned"] == 100 and first["pages"] == 2 and first["throttled"] >= 3
    page_two_end = dynamodb.scan(TableName=table, Segment=0, TotalSegments=1, Limit=100)["LastEvaluatedKey"]
    assert first["cursor"] == page_two_end  # before the page that could not be written
    assert first["stalls"] == 1
    rest = process_segment({**event, "cursor": first["cursor"], "totals": first}, boto3_session=session)
    while rest["cursor"] is not None:
        rest = process_segment({**event, "cursor": rest["cursor"], "totals": rest}, boto3_session=session)
    assert (rest["scanned"], rest["failed"], rest["stalls"]) == (200, 0, 0)
    final = scan_all(dynamodb, table)
    assert len(final) == 200 and {item["flag"] for item in final.values()} == {"v2"}


def test_a_segment_throttled_call_after_call_fails_with_its_cursor(make_table, session, monkeypatch):
    monkeypatch.setattr("ddbnb.worker.segment.Backoff", lambda **kw: Backoff(base=0.001, cap=0.002, attempts=2, **kw))
    monkeypatch.setattr("ddbnb.worker.segment.MAX_STALLS", 3)
    table = make_table([simple_item(i) for i in range(30)])
    session.events.register("before-call.dynamodb.BatchWriteItem", Throttle(times=10**6))
    event = {**base_event(table), "transform": spec("set_flag")}
    result = process_segment(event, boto3_session=session)
    assert result["cursor"] == {} and result["stalls"] == 1 and result["scanned"] == 0  # the first page, again
    result = process_segment({**event, "cursor": result["cursor"], "totals": result}, boto3_session=session)
    with pytest.raises(ThrottledError) as info:
        process_segment({**event, "cursor": result["cursor"], "totals": result}, boto3_session=session)
    assert info.value.stalls == 3 and "Nothing was skipped" in str(info.value)
