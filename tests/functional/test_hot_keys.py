"""Hot partition keys: a segment that meets one cuts it into sort-key ranges that run as segments of their own."""

from __future__ import annotations

import base64
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

import ddbnb
from ddbnb.engines.checkpoints import load_all
from ddbnb.insight.results import result_entries
from ddbnb.status import run_status
from tests.conftest import create_table, put_items, scan_all, spec
from tests.functional.test_resume import slow_run

HOT, REST, SEGMENTS = 4_000, 4_000, 32


def hot_items(hot: int = HOT, rest: int = REST, pad: int = 0) -> list[dict[str, Any]]:
    """One tenant holding ``hot`` items under one partition key, and ``rest`` items of a key each."""
    items = [{"pk": {"S": "tenant#hot"}, "sk": {"S": f"order#{i:06d}"}, "n": {"N": str(i)}} for i in range(hot)]
    items += [{"pk": {"S": f"user#{i:05d}"}, "sk": {"S": "profile"}, "n": {"N": str(i)}} for i in range(rest)]
    if pad:
        for item in items:
            item["pad"] = {"S": "x" * pad}
    return items


def wire(data: bytes) -> str:
    """Binary as the wire format carries it."""
    return base64.b64encode(data).decode()


def units(run_dir: Path) -> list[dict[str, Any]]:
    """Each unit's result (scan segments and key ranges)."""
    return [json.loads(entry["Output"]) for entry in result_entries(run_dir)]


def test_a_key_holding_half_the_table_is_cut_so_no_unit_holds_more_than_two_segments_worth(dynamodb, tmp_path):
    table = create_table(dynamodb)
    put_items(dynamodb, table, hot_items())
    plan = ddbnb.plan_migration(table, spec("set_flag"), total_segments=SEGMENTS, max_concurrency=4)
    assert plan.hot_items == (HOT + REST) // SEGMENTS // 2
    assert any("hot keys split" in reason for reason in plan.reasons)
    summary = ddbnb.migrate(plan, execute=True, run_dir=tmp_path, require_dry_run=False, progress=False)
    assert summary is not None and summary["status"] == "SUCCEEDED", summary
    assert (summary["scanned"], summary["written"], summary["failed"]) == (HOT + REST, HOT + REST, 0)
    results = units(tmp_path)
    largest = max(result["scanned"] for result in results)
    assert largest <= 2 * (HOT + REST) / SEGMENTS, sorted(r["scanned"] for r in results)[-5:]
    ranges = [r for r in results if r.get("key_range")]
    assert summary["key_range_units"] == len(ranges) >= HOT // (2 * plan.hot_items)
    assert summary["segments"] == SEGMENTS + len(ranges) and summary["failed_segments"] == 0
    assert {r["key_range"]["key"]["pk"]["S"] for r in ranges} == {"tenant#hot"}
    assert sum(r["scanned"] for r in ranges) + plan.hot_items == HOT  # the scan handled the key's first part
    cutter = next(r for r in results if r.get("splits"))
    assert cutter["passed"] >= 1 and cutter["cut_read_units"] > 0
    final = scan_all(dynamodb, table)
    assert len(final) == HOT + REST and {item["flag"] for item in final.values()} == {"v2"}
    # 04's charts: the ranges after the scan segments, marked as such.
    frame = ddbnb.load_results(tmp_path)
    assert int(frame["key_range"].sum()) == len(ranges) and not frame.head(SEGMENTS)["key_range"].any()
    figure = ddbnb.plot_durations(frame, tmp_path)
    assert "hot keys' ranges" in figure.axes[0].get_xlabel() and (tmp_path / "durations.png").stat().st_size > 5_000


def test_a_table_without_a_sort_key_or_a_plan_that_says_no_splits_nothing(make_table, tmp_path):
    table = make_table(hot_items(hot=600, rest=200))
    plan = ddbnb.plan_migration(table, spec("set_flag"), total_segments=8, max_concurrency=2, split_hot_keys=False)
    assert plan.hot_items == 0 and "hot_items" not in plan.events()[0]
    summary = ddbnb.migrate(plan, execute=True, run_dir=tmp_path, require_dry_run=False, progress=False)
    assert summary is not None and summary["key_range_units"] == 0 and summary["scanned"] == 800
    assert max(r["scanned"] for r in units(tmp_path)) >= 600  # the whole key in one segment
    with pytest.raises(ddbnb.exceptions.InvalidParameterError, match="split_hot_keys"):
        ddbnb.plan_migration(table, spec("set_flag"), split_hot_keys="yes")  # type: ignore[arg-type]
    flat = make_table([{"pk": {"S": f"k{i}"}} for i in range(50)], keys=("pk",))
    assert ddbnb.plan_migration(flat, spec("set_flag"), total_segments=8).hot_items == 0


def test_numbers_and_binary_sort_keys_cut_at_their_own_order(dynamodb, tmp_path):
    numbers = [{"pk": {"N": "-1"}, "sk": {"N": str(i * 7 - 300)}, "n": {"N": str(i)}} for i in range(1_200)]
    numbers += [{"pk": {"N": str(i)}, "sk": {"N": "0.5"}, "n": {"N": str(i)}} for i in range(400)]
    blobs = [{"pk": {"B": wire(b"\x00hot")}, "sk": {"B": wire(bytes([i % 256, i // 256]))}} for i in range(1_200)]
    blobs += [{"pk": {"B": wire(f"k{i}".encode())}, "sk": {"B": wire(b"\x00")}} for i in range(400)]
    for items, key_type in ((numbers, "N"), (blobs, "B")):
        table = create_table(dynamodb, key_type=key_type)
        put_items(dynamodb, table, items)
        plan = ddbnb.plan_migration(table, spec("set_flag"), total_segments=8, max_concurrency=4)
        summary = ddbnb.migrate(plan, execute=True, run_dir=tmp_path / key_type, require_dry_run=False, progress=False)
        assert summary is not None and summary["status"] == "SUCCEEDED" and summary["scanned"] == 1_600, key_type
        assert summary["key_range_units"] >= 2, key_type
        final = dynamodb.scan(TableName=table, Select="COUNT", FilterExpression="attribute_exists(flag)")
        assert final["Count"] == 1_600, key_type


def test_a_sigkilled_split_run_goes_on_exactly_and_rolls_back_exactly(make_table, dynamodb, tmp_path):
    original = hot_items(hot=1_000, rest=500, pad=100)
    table = make_table(original)
    before = scan_all(dynamodb, table)
    run_dir = tmp_path / "run"
    with slow_run(table, run_dir, tmp_path) as child:  # 4 segments, 2 at a time, 250 items/s
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(c.get("key_range") for c in _checkpoints(run_dir)):
            time.sleep(0.05)
        assert child.poll() is None, "the run ended before it could be stopped"
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()
    assert any(c.get("splits") for c in _checkpoints(run_dir))
    # `ddbnb status` on the killed run: the ranges are counted with the scan segments, and it says how to go on.
    ranges = len({s["segment"] for c in _checkpoints(run_dir) for s in c.get("splits") or ()})
    killed = run_status(run_dir)
    assert f"not started (of {4 + ranges:,}: 4 scan segments and {ranges:,} hot-key ranges)" in killed, killed
    assert "not live: nothing holds the folder" in killed and "resume" in killed
    plan = ddbnb.plan_migration(table, spec("set_flag"), total_segments=4, max_concurrency=2, rate_limit=250)
    summary = ddbnb.migrate(plan, execute=True, run_dir=run_dir, require_dry_run=False, progress=False)
    assert summary is not None and summary["status"] == "SUCCEEDED", summary
    assert summary["scanned"] == 1_500 and summary["failed"] == 0 and summary["key_range_units"] >= 2
    final = scan_all(dynamodb, table)
    assert len(final) == 1_500 and {item["flag"] for item in final.values()} == {"v2"}
    done = f"0 failed segment(s) of {summary['segments']} ({summary['key_range_units']:,} hot-key ranges)"
    assert done in run_status(run_dir)

    undone = ddbnb.rollback(run_dir, execute=True, progress=False)
    assert undone["failed"] == 0, undone
    assert scan_all(dynamodb, table) == before


def _checkpoints(run_dir: Path) -> list[dict[str, Any]]:
    try:
        return list(load_all(run_dir).values())
    except (OSError, ValueError):
        return []
