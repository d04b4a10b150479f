"""Backing off from throttling: jitter, caps, and telling the pacing about each throttle."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from ddbnb.worker.writes import Backoff, call_patiently


def test_backoff_is_capped_and_jittered():
    waits: list[float] = []
    backoff = Backoff(base=0.1, cap=1.0, sleep=waits.append)
    for attempt in range(10):
        backoff.wait(attempt)
    assert all(0 <= w <= 1.0 for w in waits)
    assert max(waits[:2]) <= 0.2
    assert len(set(waits)) > 5


def _error(code: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "m"}}, "Scan")


def test_a_throttled_call_is_retried_and_each_throttle_is_told_once():
    told: list[int] = []
    answers: list[object] = [_error("ProvisionedThroughputExceededException"), _error("ThrottlingException"), "ok"]

    def send() -> object:
        answer = answers.pop(0)
        if isinstance(answer, ClientError):
            raise answer
        return answer

    backoff = Backoff(attempts=5, sleep=lambda _: None, on_throttle=told.append)
    assert call_patiently(send, backoff) == ("ok", 2)
    assert len(told) == 2


def test_other_errors_and_endless_throttling_reach_the_caller():
    backoff = Backoff(attempts=3, sleep=lambda _: None)
    calls: list[int] = []

    def refused() -> None:
        calls.append(1)
        raise _error("ValidationException")

    with pytest.raises(ClientError, match="ValidationException"):
        call_patiently(refused, backoff)
    assert len(calls) == 1  # not retried

    def throttled() -> None:
        calls.append(1)
        raise _error("ProvisionedThroughputExceededException")

    with pytest.raises(ClientError, match="ProvisionedThroughput"):
        call_patiently(throttled, backoff)
    assert len(calls) == 1 + 3
