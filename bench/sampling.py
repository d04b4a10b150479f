"""The sampling case: items read to sample 1,000 items from a 200,000-item table (target: at most 3x)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ddbnb.emulation.demo import create_demo_table
from ddbnb.insight.sample import sample_items
from ddbnb.worker.clients import client
from ddbnb.worker.wire import WireClient
from ddbnb.worker.writes import BATCH_SIZE, Backoff, write_batch

TABLE = "bench-sampling"
TABLE_ITEMS = 200_000
SAMPLE = 1_000


def _item(i: int) -> dict[str, Any]:
    return {"pk": {"S": f"CUSTOMER#{i:07d}"}, "sk": {"S": "PROFILE"}, "n": {"N": str(i)}}


def seed_table(items: int = TABLE_ITEMS) -> None:
    """A table of small items, one partition each: what is read matters here, not item size."""
    create_demo_table(TABLE, replace=True)
    wire, backoff = WireClient(), Backoff()

    def write(start: int) -> None:
        chunk = [{"PutRequest": {"Item": _item(i)}} for i in range(start, min(start + BATCH_SIZE, items))]
        assert not write_batch(wire, TABLE, chunk, backoff).failures

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(write, range(0, items, BATCH_SIZE)))


def measure(items: int = TABLE_ITEMS, sample: int = SAMPLE) -> dict[str, Any]:
    """Sample ``sample`` items the way the dry run does and count what DynamoDB read."""
    stats: dict[str, int] = {}
    started = time.perf_counter()
    found = sample_items(
        client("dynamodb"), TABLE, sample, item_count=items, key_names=("pk", "sk"), seed=1, stats=stats
    )
    return {
        "table_items": items,
        "sample": len(found),
        "items_read": stats["items_read"],
        "read_ratio": stats["items_read"] / max(len(found), 1),
        "seconds": time.perf_counter() - started,
    }


if __name__ == "__main__":  # on its own: python -m bench.sampling (make bench runs it too)
    import json
    from datetime import datetime, timezone
    from pathlib import Path

    from ddbnb.emulation.servers import sandbox

    with sandbox():
        seed_table()
        result = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), **measure()}
    print(json.dumps(result))
    (Path(__file__).parent / "results" / "sampling-latest.json").write_text(json.dumps(result, indent=1))
