"""Capacity limits in units per second, shared by the workers of a run, that back off on throttling.

Only the standard library: this module ships inside the Lambda package.

A :class:`Bucket` holds capacity units. Before a call, a worker reserves the
units it expects the call to consume (:meth:`Bucket.acquire`): the bucket goes
into debt by that much and the worker sleeps the debt off, so reservations made
at once by many threads and processes queue behind each other and the rate
holds even for the first calls. After the call the worker settles the
reservation with the units DynamoDB reported (:meth:`Bucket.settle`). The bucket
refills at ``rate`` units per second times an adaptive factor. Throttling cuts
the factor to 0.7 of itself (multiplicative decrease, down to 0.05), at most
once per :data:`COOLDOWN_S`: the calls throttled together are one signal, not
one each. Calls that go through grow it back by :data:`INCREASE_PER_S` of the
budget per second of budget they used, up to 1 (additive increase), so the
rate climbs back slowly, at the same pace for any budget.

The state (tokens, time of the last refill, factor, time of the last cut) lives in a
:class:`BucketState`: a plain one for one process (a Lambda), or one in shared
memory that the local engine creates once and hands to every worker process,
so the limit is global to the run.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

#: At most this many seconds of unused capacity are saved up as burst. Small: a cap holds over any one-second
#: window to within this share of it (a burst of 1 s let the first second of a run use twice its cap).
BURST_S = 0.1
#: The adaptive factor: cut to DECREASE of itself on throttling, down to FLOOR.
DECREASE, FLOOR = 0.7, 0.05
#: Throttles within this many seconds of a cut are part of the same signal.
COOLDOWN_S = 0.2
#: The factor grows back by this much per second of calls at the full budget.
INCREASE_PER_S = 0.05
#: What one partition serves per second: where a key range's own bucket starts once DynamoDB says the
#: range (not the table) is hot (``KeyRangeThroughputExceeded``).
PARTITION_READ_UNITS, PARTITION_WRITE_UNITS = 3_000.0, 1_000.0


#: The refill time of a bucket no call has used yet: it saves nothing up until its first reservation.
UNUSED = -1.0


def fresh_values() -> list[float]:
    """A new bucket's state: no tokens, not used yet, factor 1, never cut."""
    return [0.0, UNUSED, 1.0, -COOLDOWN_S]


class BucketState:
    """Tokens, the last refill's time, the adaptive factor and the last cut's time, behind a lock (one process)."""

    def __init__(self) -> None:
        self.values = fresh_values()
        self.lock: Any = threading.Lock()


@dataclass
class Bucket:
    """A token bucket of capacity units per second; a rate of 0 never waits."""

    rate: float
    state: Any = field(default_factory=BucketState)  # .values[4] and .lock, maybe in shared memory
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic

    def _refill(self, values: Any, now: float) -> None:
        tokens, stamp, factor = values[0], values[1], values[2]
        if stamp != UNUSED:  # the time before the first call (worker processes starting) saves up no burst
            values[0] = min(self.rate * factor * BURST_S, tokens + (now - stamp) * self.rate * factor)
        values[1] = now

    def acquire(self, units: float) -> None:
        """Reserve ``units`` for the next call, and wait until the reservations before it are paid off."""
        if self.rate <= 0:
            return
        with self.state.lock:
            values = self.state.values
            self._refill(values, self.clock())
            values[0] -= units
            missing = -values[0]
            pace = self.rate * values[2]
        if missing > 1e-6:  # in debt (beyond float rounding): wait the debt off
            self.sleep(missing / pace)

    def settle(self, reserved: float, used: float) -> None:
        """Correct a reservation of ``reserved`` units once the call reported it ``used`` that many."""
        if self.rate <= 0 or reserved == used:
            return
        with self.state.lock:
            self.state.values[0] += reserved - used

    def throttled(self) -> None:
        """DynamoDB throttled a call: slow down (multiplicative decrease), once per cooldown."""
        if self.rate <= 0:
            return
        now = self.clock()
        with self.state.lock:
            values = self.state.values
            if now - values[3] >= COOLDOWN_S:
                self._refill(values, now)
                values[2] = max(FLOOR, values[2] * DECREASE)
                values[3] = now

    def narrow(self, start_rate: float) -> None:
        """A throttle named this bucket's key range alone: switch it on at ``start_rate`` (one partition's
        units per second) if it was off, then slow it down like any throttle."""
        if self.rate <= 0:
            self.rate = start_rate
        self.throttled()

    def calm(self, units: float) -> None:
        """A call that used ``units`` went through unthrottled: grow back towards the budget (additive increase)."""
        if self.rate <= 0:
            return
        with self.state.lock:
            values = self.state.values
            values[2] = min(1.0, values[2] + INCREASE_PER_S * units / self.rate)

    @property
    def factor(self) -> float:
        """The share of its rate the bucket allows now."""
        return float(self.state.values[2])


def slow_down(shared: Bucket, own: Bucket, own_range_only: bool, partition_units: float) -> Bucket:
    """A throttle: slow the worker's ``own`` key-range bucket (on from one partition's ``partition_units``)
    when DynamoDB said its key range alone is hot, else the run's ``shared`` one; return the bucket slowed,
    which the retry waits on like a first attempt."""
    if own_range_only:
        own.narrow(partition_units)
        return own
    shared.throttled()
    return shared


@dataclass
class Limits:
    """The read and the write bucket of one worker (shared by the run), and the worker's own pair for its
    key range: off until DynamoDB throttles that range alone, then AIMD from one partition's rate."""

    read: Bucket
    write: Bucket
    range_read: Bucket = field(default_factory=lambda: Bucket(0))
    range_write: Bucket = field(default_factory=lambda: Bucket(0))


def limits_for(
    event: Mapping[str, Any],
    shared: Mapping[str, Any] | None = None,
    budgets: tuple[float, float] | None = None,
) -> Limits:
    """Buckets at the event's rates (or at ``budgets``: read and write units per second), on ``shared``
    state when the engine hands one over."""
    states = shared or {}
    rates = budgets or (float(event.get("read_units_per_s") or 0), float(event.get("write_units_per_s") or 0))
    read, write = Bucket(rates[0]), Bucket(rates[1])
    if states.get("read") is not None:
        read.state = states["read"]
    if states.get("write") is not None:
        write.state = states["write"]
    return Limits(read, write)
