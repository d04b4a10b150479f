"""Read items by key as they are now: BatchGetItem, strongly consistent, paced, retried.

Only the standard library and boto3: this module ships inside the Lambda package.
The rollback reads each journaled item this way, and a batch copy with a journal
reads the destination's items before it overwrites them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ddbnb.worker.capacity import Bucket
from ddbnb.worker.journal import value_digest
from ddbnb.worker.wire import WireClient
from ddbnb.worker.writes import Backoff, consumed_units, retry_until_stalled

#: Keys per BatchGetItem call (DynamoDB's limit).
READ_BATCH = 100

WireItem = dict[str, Any]


#: What stands for a key attribute an item lacks (no key attribute can be NULL, so no real key reads so).
_ABSENT = {"NULL": True}


def key_text(item: Mapping[str, Any], names: Sequence[str]) -> str:
    """One key as text, the same however DynamoDB spells its numbers (also for an item that lacks a key
    attribute: DynamoDB refuses its write, item by item)."""
    return value_digest({"L": [item.get(name, _ABSENT) for name in names]})


@dataclass
class Read:
    """What a read found (by :func:`key_text`), what it cost, and whether it stalled under throttling."""

    found: dict[str, WireItem] = field(default_factory=dict)
    read_units: float = 0.0
    throttled: int = 0
    stalled: bool = False


def read_items(
    dynamodb: WireClient,
    table: str,
    keys: Sequence[Mapping[str, Any]],
    key_names: Sequence[str],
    bucket: Bucket,
    backoff: Backoff,
) -> Read:
    """The items with ``keys`` in ``table`` as they are now; each call paced by ``bucket`` (read units)."""
    read = Read()

    def send(pending: list[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
        reserved = float(len(pending))  # a strongly consistent read of an item up to 4 KB
        bucket.acquire(reserved)
        payload = {"RequestItems": {table: {"Keys": pending, "ConsistentRead": True}}}
        try:
            response = dynamodb.call("BatchGetItem", {**payload, "ReturnConsumedCapacity": "TOTAL"})
        except Exception:
            bucket.settle(reserved, 0)
            raise
        units = consumed_units(response)
        bucket.settle(reserved, units)
        read.read_units += units
        for item in response.get("Responses", {}).get(table, []):
            read.found[key_text(item, key_names)] = item
        left: list[Mapping[str, Any]] = response.get("UnprocessedKeys", {}).get(table, {}).get("Keys", [])
        return left

    unique = list({key_text(key, key_names): key for key in keys}.values())  # BatchGetItem refuses repeats
    for start in range(0, len(unique), READ_BATCH):
        stalled, throttled = retry_until_stalled(unique[start : start + READ_BATCH], send, backoff)
        read.throttled += throttled
        if stalled:
            read.stalled = True
            break
    return read
