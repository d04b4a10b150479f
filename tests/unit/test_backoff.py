"""Backing off from throttling: jitter, caps, and telling the pacing about each throttle."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from ddbnb.worker.writes import PARTIAL, UNNAMED, Backoff, call_patiently, key_range_only, retry_until_stalled


def test_backoff_is_capped_and_jittered():
    waits: list[float] = []
    backoff = Backoff(base=0.1, cap=1.0, sleep=waits.append)
    for attempt in range(10):
        backoff.wait(attempt)
    assert all(0 <= w <= 1.0 for w in waits)
    assert max(waits[:2]) <= 0.2
    assert len(set(waits)) > 5


def _error(code: str, reasons: list[dict[str, str]] | None = None) -> ClientError:
    response: dict[str, object] = {"Error": {"Code": code, "Message": "m"}}
    if reasons:
        response["ThrottlingReasons"] = reasons
    return ClientError(response, "Scan")  # type: ignore[arg-type]


def test_a_throttled_call_is_retried_and_each_throttle_is_told_once_with_its_reasons():
    told: list[tuple[int, tuple[str, ...]]] = []
    hot = {"reason": "TableWriteKeyRangeThroughputExceeded", "resource": "arn:aws:dynamodb:r:1:table/t"}
    answers: list[object] = [_error("ProvisionedThroughputExceededException", [hot]), _error("ThrottlingException")]
    answers.append("ok")

    def send() -> object:
        answer = answers.pop(0)
        if isinstance(answer, ClientError):
            raise answer
        return answer

    backoff = Backoff(attempts=5, sleep=lambda _: None, on_throttle=lambda n, why: told.append((n, why)))
    assert call_patiently(send, backoff) == ("ok", 2)
    assert told == [(1, ("TableWriteKeyRangeThroughputExceeded",)), (1, ())]
    assert backoff.reasons == {"TableWriteKeyRangeThroughputExceeded": 1, UNNAMED: 1}
    assert key_range_only(told[0][1]) and not key_range_only(told[1][1])
    assert not key_range_only(("IndexWriteProvisionedThroughputExceeded", "TableWriteKeyRangeThroughputExceeded"))


def test_a_batch_refused_in_part_is_a_key_range_signal_and_one_refused_whole_is_not():
    told: list[tuple[str, ...]] = []
    backoff = Backoff(attempts=5, sleep=lambda _: None, on_throttle=lambda _, why: told.append(why))
    left_over = [["b", "c"], ["b", "c"], []]  # 1 of 3 went through; then none; then the rest

    def send(pending: list[str]) -> list[str]:
        return left_over.pop(0)

    stalled, throttled = retry_until_stalled(["a", "b", "c"], send, backoff)
    assert (stalled, throttled) == ([], 2)
    assert told == [(PARTIAL,), ()]
    assert key_range_only(told[0]) and backoff.reasons == {PARTIAL: 1, UNNAMED: 1}


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


def test_throttles_counted_by_many_threads_while_the_segment_takes_them_are_each_counted_once():
    import sys
    import threading

    backoff = Backoff(sleep=lambda _: None)
    threads, each = 8, 5_000
    taken: list[dict[str, int]] = []
    done = threading.Event()

    def count() -> None:
        for i in range(each):
            backoff.throttled(0, reasons=("TableWriteKeyRangeThroughputExceeded",) if i % 2 else ())

    def take() -> None:  # the segment adds the counts to its result after every page
        while not done.is_set():
            taken.append(backoff.take_reasons())
        taken.append(backoff.take_reasons())

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as the interpreter can
    try:
        taker = threading.Thread(target=take)
        taker.start()
        counters = [threading.Thread(target=count) for _ in range(threads)]
        for thread in counters:
            thread.start()
        for thread in counters:
            thread.join()
        done.set()
        taker.join()
    finally:
        sys.setswitchinterval(interval)
    totals: dict[str, int] = {}
    for counts in taken:
        for reason, n in counts.items():
            totals[reason] = totals.get(reason, 0) + n
    assert totals == {"TableWriteKeyRangeThroughputExceeded": threads * each // 2, UNNAMED: threads * each // 2}
    assert backoff.take_reasons() == {}
