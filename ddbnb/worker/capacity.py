"""Capacity limits in units per second, shared by the workers of a run, that back off on throttling.

Only the standard library: this module ships inside the Lambda package.

A :class:`Bucket` holds capacity units. A call waits until the bucket is not in
debt, then spends the units DynamoDB reports it consumed (known only after the
call, so the bucket may go into debt; the next calls then wait it off). It
refills at ``rate`` units per second times an adaptive factor: each throttled
call cuts the factor to 0.7 of itself (multiplicative decrease, down to 0.05)
and each call that is not throttled adds 0.02 back, up to 1 (additive
increase), so a worker that meets throttling slows down and grows back slowly
to its budget.

The state (tokens, time of the last refill, factor) lives in a
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

#: At most this many seconds of unused capacity are saved up as burst.
BURST_S = 1.0
#: The adaptive factor: cut to DECREASE of itself on a throttle, INCREASE added back per calm call.
DECREASE, INCREASE, FLOOR = 0.7, 0.02, 0.05


class BucketState:
    """Tokens, the last refill's time and the adaptive factor, behind a lock (one process)."""

    def __init__(self) -> None:
        self.values = [0.0, time.monotonic(), 1.0]
        self.lock: Any = threading.Lock()


@dataclass
class Bucket:
    """A token bucket of capacity units per second; a rate of 0 never waits."""

    rate: float
    state: Any = field(default_factory=BucketState)  # .values[3] and .lock, maybe in shared memory
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic

    def _refill(self, values: Any, now: float) -> None:
        tokens, stamp, factor = values[0], values[1], values[2]
        values[0] = min(self.rate * factor * BURST_S, tokens + (now - stamp) * self.rate * factor)
        values[1] = now

    def wait(self) -> None:
        """Block until the bucket is out of debt."""
        if self.rate <= 0:
            return
        while True:
            with self.state.lock:
                values = self.state.values
                self._refill(values, self.clock())
                missing = -values[0]
                pace = self.rate * values[2]
            if missing <= 1e-6:  # out of debt (up to float rounding)
                return
            self.sleep(min(max(missing / pace, 0.001), 1.0))

    def spend(self, units: float) -> None:
        """Take ``units`` the last call consumed."""
        if self.rate <= 0 or units <= 0:
            return
        with self.state.lock:
            self.state.values[0] -= units

    def throttled(self, calls: int = 1) -> None:
        """DynamoDB throttled ``calls`` calls: slow down (multiplicative decrease)."""
        if self.rate <= 0 or calls <= 0:
            return
        with self.state.lock:
            self.state.values[2] = max(FLOOR, self.state.values[2] * DECREASE**calls)

    def calm(self) -> None:
        """A call went through unthrottled: grow back towards the budget (additive increase)."""
        if self.rate <= 0:
            return
        with self.state.lock:
            self.state.values[2] = min(1.0, self.state.values[2] + INCREASE)

    @property
    def factor(self) -> float:
        """The share of its rate the bucket allows now."""
        return float(self.state.values[2])


@dataclass
class Limits:
    """The read and the write bucket of one worker."""

    read: Bucket
    write: Bucket


def limits_for(event: Mapping[str, Any], shared: Mapping[str, Any] | None = None) -> Limits:
    """Buckets at the event's rates, on ``shared`` state when the engine hands one over."""
    states = shared or {}
    read = Bucket(float(event.get("read_units_per_s") or 0))
    write = Bucket(float(event.get("write_units_per_s") or 0))
    if states.get("read") is not None:
        read.state = states["read"]
    if states.get("write") is not None:
        write.state = states["write"]
    return Limits(read, write)
