"""Segment choices that follow the table's size, durations as people say them, and progress lines."""

from __future__ import annotations

import io

import pytest

from ddbnb.insight.estimate import format_duration
from ddbnb.plan import choose_segments
from ddbnb.progress import LineProgress, progress_mode
from ddbnb.worker.tables import TableFacts


def facts(items: int, item_bytes: int = 1_000) -> TableFacts:
    return TableFacts("t", items, items * item_bytes, "PAY_PER_REQUEST", 0, 0, ("pk",))


@pytest.mark.parametrize(
    ("items", "local", "aws"),
    [(0, 1, 1), (976, 2, 1), (10_000, 8, 1), (100_000, 34, 2), (10_000_000, 3_334, 200)],
)
def test_segments_follow_the_table_size_on_both_engines(items, local, aws):
    assert choose_segments(facts(items), "local", 4)[0] == local
    assert choose_segments(facts(items), "aws")[0] == aws


def test_big_items_get_more_aws_segments_by_bytes():
    count, reason = choose_segments(facts(100_000, item_bytes=100_000), "aws")
    assert count == 38 and "MiB" in reason  # 9.3 GiB / 256 MiB


@pytest.mark.parametrize(
    ("seconds", "text"), [(0.4, "0.4 s"), (42, "42 s"), (59.4, "59 s"), (90, "1.5 min"), (7_200, "2.0 h")]
)
def test_durations_under_a_minute_print_in_seconds(seconds, text):
    assert format_duration(seconds) == text


def test_line_progress_prints_steady_plain_lines():
    out = io.StringIO()
    bar = LineProgress(total=1_000, unit="item", desc="scanned", interval=0, stream=out)
    bar.update(250)
    bar.set_postfix(segments="1/4", failed=0)
    bar.update(250)
    bar.close()
    bar.close()
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("scanned: 250/1,000 items (25%)")
    assert "segments 1/4, failed 0" in lines[-1] and "500/1,000 items (50%)" in lines[-1]
    assert len(lines) == 4 and "\r" not in out.getvalue()


def test_line_progress_waits_for_its_interval():
    out = io.StringIO()
    bar = LineProgress(total=None, unit="item", desc="scanned", interval=3600, stream=out)
    for _ in range(100):
        bar.update(1)
    assert out.getvalue() == ""
    bar.close()
    assert out.getvalue().startswith("scanned: 100 items,")


def test_progress_mode_is_lines_without_a_widget_front_end(monkeypatch):
    monkeypatch.delenv("DDBNB_PROGRESS", raising=False)
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    assert progress_mode() in ("lines", "bar")  # pytest's stderr: captured, so lines
    monkeypatch.setenv("DDBNB_PROGRESS", "off")
    assert progress_mode() == "off"


def test_the_plan_counts_the_capacity_pre_warm_raises_and_says_what_it_does():
    from ddbnb.plan import after_prewarm, capacity_limits, prewarm_reasons

    provisioned = TableFacts("src", 1000, 10**6, "PROVISIONED", 100, 50, ("pk",))
    on_demand = TableFacts("dst", 0, 0, "PAY_PER_REQUEST", 0, 0, ("pk",), warm_write_units=4000)
    # In place: the pace follows the raised units, not the ones the table has before the run.
    read, write, _ = capacity_limits(after_prewarm(provisioned, 0, 400), after_prewarm(provisioned, 0, 400), 0.5, 0, 0)
    assert (read, write) == (50, 200)
    assert after_prewarm(provisioned, 30, 20) == provisioned  # never lowered
    # Copy into an on-demand table: warmed, never lowered, and the plan says so before anything runs.
    assert after_prewarm(on_demand, 0, 10_000).warm_write_units == 10_000
    reasons = prewarm_reasons(provisioned, on_demand, 0, 10_000)
    assert len(reasons) == 1 and "'dst' is on demand" in reasons[0] and "cannot be lowered again" in reasons[0]
    assert "from 100 to 400" in prewarm_reasons(provisioned, provisioned, 400, 0)[0]
