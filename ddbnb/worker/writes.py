"""BatchWriteItem with retries: nothing is dropped, everything is accounted for.

Only the standard library and boto3: this module ships inside the Lambda package.

Throttled calls and ``UnprocessedItems`` are retried with capped exponential
backoff and full jitter. Requests still throttled after ``Backoff.attempts``
calls without progress come back as *stalled*, never as failed: the segment
then stops before their page, which is read again later. A batch DynamoDB
rejects as a whole (one bad item fails all 25) is retried one request at a
time, so only the bad item fails.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from botocore.exceptions import ClientError

from ddbnb.worker.wire import WireClient

BATCH_SIZE = 25
THROTTLE_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
        "InternalServerError",
        "ServiceUnavailable",
    }
)

Request = dict[str, Any]
T = TypeVar("T")


@dataclass
class Backoff:
    """Capped exponential backoff with full jitter."""

    base: float = 0.05
    cap: float = 5.0
    attempts: int = 12
    sleep: Callable[[float], None] = time.sleep

    def wait(self, attempt: int) -> None:
        """Sleep before retry number ``attempt`` (0-based)."""
        self.sleep(random.uniform(0, min(self.cap, self.base * 2**attempt)))


@dataclass
class WriteOutcome:
    """What happened to a list of write requests."""

    puts: int = 0
    deletes: int = 0
    write_units: float = 0.0
    failures: list[tuple[Request, str]] = field(default_factory=list)
    stalled: list[Request] = field(default_factory=list)
    throttled: int = 0

    def add(self, other: WriteOutcome) -> None:
        """Fold ``other`` into this outcome."""
        self.puts += other.puts
        self.deletes += other.deletes
        self.write_units += other.write_units
        self.failures.extend(other.failures)
        self.stalled.extend(other.stalled)
        self.throttled += other.throttled


class RateLimiter:
    """A token bucket in items per second; a rate of 0 never waits."""

    def __init__(self, rate: float, sleep: Callable[[float], None] = time.sleep) -> None:
        self.rate = rate
        self.sleep = sleep
        self._lock = threading.Lock()
        self._next = time.monotonic()

    def acquire(self, n: int) -> None:
        """Wait until ``n`` more items may be written."""
        if self.rate <= 0:
            return
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + n / self.rate
        if start > now:
            self.sleep(start - now)


def _count(outcome: WriteOutcome, requests: Sequence[Request]) -> None:
    for request in requests:
        if "PutRequest" in request:
            outcome.puts += 1
        else:
            outcome.deletes += 1


def consumed_units(response: dict[str, Any]) -> float:
    """The capacity units a response reports (ReturnConsumedCapacity TOTAL)."""
    consumed = response.get("ConsumedCapacity") or []
    if isinstance(consumed, dict):
        consumed = [consumed]
    return float(sum(c.get("CapacityUnits", 0) for c in consumed))


def retry_until_stalled(
    pending: Sequence[T], send: Callable[[list[T]], list[T]], backoff: Backoff
) -> tuple[list[T], int]:
    """Call ``send`` with what is pending until nothing is, or it stalls.

    ``send`` writes what it can and returns what it could not yet (unprocessed,
    throttled); a throttling ClientError counts as a call that wrote nothing.
    After ``backoff.attempts`` calls in a row without progress, what is left is
    returned as stalled; any progress resets the count. Returns what stalled
    and how many calls were throttled. Any other error propagates.
    """
    left = list(pending)
    throttled = attempt = 0  # attempt: consecutive calls without progress
    while left and attempt < backoff.attempts:
        try:
            unsent = send(left)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code", "") not in THROTTLE_CODES:
                raise
            throttled += 1
            backoff.wait(attempt)
            attempt += 1
            continue
        if unsent:
            throttled += 1
        attempt = attempt + 1 if len(unsent) == len(left) else 0
        left = unsent
        if left:
            backoff.wait(attempt)
    return left, throttled


def write_batch(dynamodb: WireClient, table: str, requests: Sequence[Request], backoff: Backoff) -> WriteOutcome:
    """Write up to 25 requests, retrying until each succeeds, fails, or stalls.

    Requests left after ``backoff.attempts`` calls in a row that made no progress
    (throttled, or nothing processed) come back in ``stalled``; any progress
    resets the count. Only what DynamoDB refuses (validation) is a failure.
    """
    outcome = WriteOutcome()

    def send(pending: list[Request]) -> list[Request]:
        try:
            response = dynamodb.call(
                "BatchWriteItem", {"RequestItems": {table: pending}, "ReturnConsumedCapacity": "TOTAL"}
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code", "") != "ValidationException":
                raise
            outcome.add(write_singly(dynamodb, table, pending, backoff))  # so only the bad item fails
            return []
        outcome.write_units += consumed_units(response)
        unprocessed: list[Request] = response.get("UnprocessedItems", {}).get(table, [])
        _count(outcome, [r for r in pending if r not in unprocessed] if unprocessed else pending)
        return unprocessed

    stalled, throttled = retry_until_stalled(requests, send, backoff)
    outcome.stalled.extend(stalled)
    outcome.throttled += throttled
    return outcome


def write_singly(dynamodb: WireClient, table: str, requests: Sequence[Request], backoff: Backoff) -> WriteOutcome:
    """Write requests one by one, so a bad item fails alone with DynamoDB's reason."""
    outcome = WriteOutcome()
    for request in requests:
        for attempt in range(backoff.attempts + 1):
            try:
                if "PutRequest" in request:
                    payload = {"TableName": table, "Item": request["PutRequest"]["Item"]}
                    response = dynamodb.call("PutItem", {**payload, "ReturnConsumedCapacity": "TOTAL"})
                else:
                    payload = {"TableName": table, "Key": request["DeleteRequest"]["Key"]}
                    response = dynamodb.call("DeleteItem", {**payload, "ReturnConsumedCapacity": "TOTAL"})
            except ClientError as exc:
                error = exc.response.get("Error", {})
                if error.get("Code") in THROTTLE_CODES:
                    outcome.throttled += 1
                    if attempt < backoff.attempts:
                        backoff.wait(attempt)
                        continue
                    outcome.stalled.append(request)
                    break
                outcome.failures.append((request, f"{error.get('Code')}: {error.get('Message')}"))
                break
            outcome.write_units += consumed_units(response)
            _count(outcome, [request])
            break
    return outcome
