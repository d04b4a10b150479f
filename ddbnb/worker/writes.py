"""BatchWriteItem with retries: nothing is dropped, everything is accounted for.

Only the standard library and boto3: this module ships inside the Lambda package.

This is the one retry layer for throttling (the wire client hands every
throttled call over at once). Throttled calls and ``UnprocessedItems`` are
retried with capped exponential backoff and full jitter, and each one cuts the
worker's pace (``Backoff.on_throttle``). Requests still throttled after ``Backoff.attempts``
calls without progress come back as *stalled*, never as failed: the segment
then stops before their page, which is read again later. A batch DynamoDB
rejects as a whole (one bad item fails all 25) is retried one request at a
time, so only the bad item fails.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
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

#: The limit type of a throttle that names one hot partition (a key range), not a whole table or index.
KEY_RANGE = "KeyRangeThroughputExceeded"
#: How a whole call throttled without ``ThrottlingReasons`` is counted (DynamoDB Local, older endpoints).
UNNAMED = "unnamed"
#: How a call that went through in part is counted: some of its requests came back unprocessed, or as
#: statement errors, which carry no reasons. The table took the rest, so the refusal was not table-wide.
PARTIAL = "partial"

Request = dict[str, Any]
T = TypeVar("T")


@dataclass
class Backoff:
    """How a worker meets throttling: it tells ``on_throttle`` how many requests were refused, then backs off.

    ``on_throttle`` is the worker's pacing: it slows down and waits for the
    capacity the retry will use, so retries are paced like first attempts. The
    backoff is capped exponential with full jitter.
    """

    base: float = 0.05
    cap: float = 5.0
    attempts: int = 12
    sleep: Callable[[float], None] = time.sleep
    on_throttle: Callable[[int, tuple[str, ...]], None] = lambda refused, reasons: None
    reasons: dict[str, int] = field(default_factory=dict)  # throttles by DynamoDB's reason (or UNNAMED)
    _counting: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def wait(self, attempt: int) -> None:
        """Sleep before retry number ``attempt`` (0-based)."""
        self.sleep(random.uniform(0, min(self.cap, self.base * 2**attempt)))

    def throttled(self, attempt: int, refused: int = 1, reasons: tuple[str, ...] = ()) -> None:
        """A call was throttled (for ``reasons``, when DynamoDB named them), or ``refused`` requests of it were
        left unprocessed: count it, tell the pacing, back off."""
        with self._counting:  # a page's write threads share one backoff
            for reason in reasons or (UNNAMED,):
                self.reasons[reason] = self.reasons.get(reason, 0) + 1
        self.on_throttle(refused, reasons)
        self.wait(attempt)

    def take_reasons(self) -> dict[str, int]:
        """The throttles counted since the last call, by reason; counting starts again from zero."""
        with self._counting:
            taken, self.reasons = self.reasons, {}
        return taken


def is_throttle(exc: ClientError) -> bool:
    """Whether DynamoDB answered ``exc`` to say: not now, try again later."""
    return exc.response.get("Error", {}).get("Code", "") in THROTTLE_CODES


def throttle_reasons(exc: ClientError) -> tuple[str, ...]:
    """Why DynamoDB throttled ``exc``: each ``ThrottlingReasons`` entry's ``reason``
    (``<Table|Index><Read|Write><LimitType>``); empty when it named none."""
    listed = exc.response.get("ThrottlingReasons") or exc.response.get("throttlingReasons") or []
    return tuple(str(entry.get("reason")) for entry in listed if isinstance(entry, dict) and entry.get("reason"))


def key_range_only(reasons: tuple[str, ...]) -> bool:
    """Whether a throttle was for hot partitions alone (DynamoDB said so, or took the rest of the call):
    the caller's own key range should slow down, not the run's shared rate."""
    return bool(reasons) and all(reason.endswith(KEY_RANGE) or reason == PARTIAL for reason in reasons)


def merge_counts(into: dict[str, int], more: Mapping[str, int]) -> dict[str, int]:
    """Add the counts of ``more`` to ``into``; return ``into``."""
    for name, count in more.items():
        into[name] = into.get(name, 0) + int(count)
    return into


def call_patiently(send: Callable[[], T], backoff: Backoff) -> tuple[T, int]:
    """Call ``send`` until it is not throttled, up to ``backoff.attempts`` times; return its answer and the throttles.

    Still throttled after that, the last ClientError propagates.
    """
    for attempt in range(backoff.attempts):
        try:
            return send(), attempt
        except ClientError as exc:
            if not is_throttle(exc) or attempt + 1 == backoff.attempts:
                raise
            backoff.throttled(attempt, reasons=throttle_reasons(exc))
    raise AssertionError("backoff.attempts must be at least 1")


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
            if not is_throttle(exc):
                raise
            throttled += 1
            backoff.throttled(attempt, len(left), throttle_reasons(exc))
            attempt += 1
            continue
        if unsent:
            throttled += 1
        progressed = len(unsent) < len(left)
        attempt = 0 if progressed else attempt + 1
        left = unsent
        if left:
            backoff.throttled(attempt, len(left), (PARTIAL,) if progressed else ())
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
                        backoff.throttled(attempt, reasons=throttle_reasons(exc))
                        continue
                    outcome.stalled.append(request)
                    break
                outcome.failures.append((request, f"{error.get('Code')}: {error.get('Message')}"))
                break
            outcome.write_units += consumed_units(response)
            _count(outcome, [request])
            break
    return outcome
