"""The capacity bucket: pacing in units, debt, and the adaptive factor, on a fake clock."""

from __future__ import annotations

import pytest

from ddbnb.plan import page_size_for
from ddbnb.worker.budgets import capacity_limits, table_rate
from ddbnb.worker.capacity import COOLDOWN_S, INCREASE_PER_S, Bucket, BucketState, fresh_values, limits_for
from ddbnb.worker.tables import TableFacts


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def bucket(rate: float, clock: Clock) -> Bucket:
    state = BucketState()
    state.values = fresh_values()
    state.values[1] = clock.now
    return Bucket(rate, state, sleep=clock.sleep, clock=clock)


def test_reservations_pace_to_the_rate_in_units():
    clock = Clock()
    limit = bucket(100, clock)
    for _ in range(50):  # 50 calls of 10 units: 500 units at 100 units/s
        limit.acquire(10)
    assert clock.now == pytest.approx(5.0, rel=0.02)


def test_a_reservation_is_settled_with_what_the_call_used():
    clock = Clock()
    limit = bucket(100, clock)
    limit.acquire(10)
    limit.settle(10, 60)  # the call consumed more than estimated: the next call waits it off
    limit.acquire(0)
    assert clock.now == pytest.approx(0.6, rel=0.02)
    limit.acquire(50)
    limit.settle(50, 0)  # a call that never went (refused, or past a deadline) gives its units back
    limit.acquire(0)
    assert clock.now == pytest.approx(1.1, rel=0.02)


def test_reservations_made_at_once_queue_behind_each_other():
    clock = Clock()
    state = BucketState()
    state.values = fresh_values()
    state.values[1] = 0.0
    waits: list[float] = []
    limit = Bucket(100, state, sleep=waits.append, clock=clock)  # time does not move: all at once
    for _ in range(4):
        limit.acquire(25)
    assert waits == pytest.approx([0.25, 0.5, 0.75, 1.0])


def test_throttles_cut_the_rate_once_per_cooldown_and_calm_calls_grow_it_back():
    clock = Clock()
    limit = bucket(100, clock)
    limit.throttled()
    limit.throttled()  # throttled together with the first: one signal
    assert limit.factor == pytest.approx(0.7)
    clock.now += COOLDOWN_S
    limit.throttled()
    assert limit.factor == pytest.approx(0.49)
    limit.acquire(49)  # spends what was saved up meanwhile
    start = clock.now
    limit.acquire(49)
    assert clock.now - start == pytest.approx(1.0, rel=0.02)  # 49 units at 49 units/s
    for _ in range(10):  # ten seconds' worth of calls at the full budget give back 10 * INCREASE_PER_S
        limit.calm(100)
    assert limit.factor == pytest.approx(0.49 + 10 * INCREASE_PER_S)
    for _ in range(1_000):
        limit.calm(100)
    assert limit.factor == 1.0
    for _ in range(50):
        clock.now += COOLDOWN_S
        limit.throttled()
    assert limit.factor == 0.05  # never stops altogether


def test_no_rate_never_waits():
    clock = Clock()
    limit = bucket(0, clock)
    limit.acquire(10**6)
    limit.settle(10**6, 0)
    assert clock.now == 0


def facts(mode: str = "PROVISIONED", **extra: int) -> TableFacts:
    return TableFacts("t", 100_000, 100_000 * 2_000, mode, 300, 1_000, ("pk",), **extra)


def test_the_share_is_of_the_tables_own_capacity():
    assert table_rate(facts(), "write") == (1_000.0, "provisioned")
    assert table_rate(facts("PAY_PER_REQUEST", max_write_units=600), "write")[0] == 600
    assert table_rate(facts("PAY_PER_REQUEST", warm_write_units=8_000), "write")[0] == 8_000
    assert table_rate(facts("PAY_PER_REQUEST"), "write")[0] == 4_000
    read, write, reasons = capacity_limits(facts(), facts(), 0.3, 0, 250)
    assert (read, write) == (90, 250)  # an absolute cap wins over the share
    assert "capacity_share 0.3" in reasons[0] and "max_write_units" in reasons[1]


def test_no_share_paces_to_a_known_capacity_and_leaves_an_unknown_one_unpaced():
    read, write, reasons = capacity_limits(facts(), facts(), 0, 0, 0)
    assert (read, write) == (300, 1_000) and "no capacity_share" in reasons[1]
    capped = facts("PAY_PER_REQUEST", max_write_units=600)
    assert capacity_limits(capped, capped, 0, 0, 0)[:2] == (0, 600)  # a cap is known; warm throughput is not a cap
    on_demand = facts("PAY_PER_REQUEST", warm_write_units=8_000)
    assert capacity_limits(on_demand, on_demand, 0, 0, 0) == (0, 0, [])


def test_pages_are_sized_to_a_few_seconds_of_a_workers_budget():
    assert page_size_for(facts(), 0, 0, 4) == 0
    size = page_size_for(facts(), 0, 100, 4)  # 25 units/s per worker, 2 units per 2 KB item
    assert size == 125


def test_events_carry_the_rates_and_share_state():
    shared = {"write": BucketState()}
    limits = limits_for({"read_units_per_s": 5, "write_units_per_s": 7}, shared)
    assert (limits.read.rate, limits.write.rate) == (5, 7)
    assert limits.write.state is shared["write"] and limits.read.state is not shared["write"]
