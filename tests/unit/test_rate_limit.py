"""The per-segment rate limiter, with a recorded clock instead of real sleeps."""

from __future__ import annotations

import pytest

from ddbnb.worker.writes import Backoff, RateLimiter


def test_a_rate_spaces_writes_out():
    waits: list[float] = []
    limiter = RateLimiter(50, sleep=waits.append)
    limiter.acquire(25)
    limiter.acquire(25)
    limiter.acquire(25)
    assert len(waits) == 2
    assert waits[0] == pytest.approx(0.5, abs=0.05) and waits[1] == pytest.approx(1.0, abs=0.05)


def test_no_rate_never_waits():
    waits: list[float] = []
    limiter = RateLimiter(0, sleep=waits.append)
    for _ in range(100):
        limiter.acquire(25)
    assert waits == []


def test_backoff_is_capped_and_jittered():
    waits: list[float] = []
    backoff = Backoff(base=0.1, cap=1.0, sleep=waits.append)
    for attempt in range(10):
        backoff.wait(attempt)
    assert all(0 <= w <= 1.0 for w in waits)
    assert max(waits[:2]) <= 0.2
    assert len(set(waits)) > 5
