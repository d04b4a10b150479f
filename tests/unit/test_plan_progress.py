"""Segment choices that follow the table's size, durations as people say them, and progress lines."""

from __future__ import annotations

import io

import pytest

from ddbnb.plan import choose_hot_items, choose_segments
from ddbnb.progress import LineProgress, format_duration, progress_mode
from ddbnb.worker.tables import TableFacts


def facts(items: int, item_bytes: int = 1_000) -> TableFacts:
    return TableFacts("t", items, items * item_bytes, "PAY_PER_REQUEST", 0, 0, ("pk",))


@pytest.mark.parametrize(
    ("items", "local", "aws"),
    [(0, 1, 1), (976, 2, 1), (10_000, 8, 1), (30_000, 20, 1), (100_000, 67, 2), (10_000_000, 6_667, 200)],
)
def test_segments_follow_the_table_size_on_both_engines(items, local, aws):
    assert choose_segments(facts(items), "local", 4)[0] == local
    assert choose_segments(facts(items), "aws")[0] == aws


def test_big_items_get_more_aws_segments_by_bytes():
    count, reason = choose_segments(facts(100_000, item_bytes=100_000), "aws")
    assert count == 38 and "MiB" in reason  # 9.3 GiB / 256 MiB


def test_both_engines_cut_hot_keys_and_the_aws_plan_says_it_takes_a_second_pass():
    composite = TableFacts("t", 10_000_000, 10**10, "PAY_PER_REQUEST", 0, 0, ("pk", "sk"))
    local, why_local = choose_hot_items(composite, "local", 3_334, True)
    aws, why_aws = choose_hot_items(composite, "aws", 200, True)
    assert (local, aws) == (1_500, 25_000)  # half a segment's share
    assert "second pass of the Map" in why_aws and "second pass" not in why_local
    assert choose_hot_items(composite, "aws", 200, False)[0] == 0
    assert choose_hot_items(facts(10_000_000), "aws", 200, True) == (0, "")  # no sort key: a key is one item


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
    from ddbnb.plan import after_prewarm, prewarm_reasons
    from ddbnb.worker.budgets import capacity_limits

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


class Clock:
    """time.monotonic, moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_run_view_sums_segments_and_measures_the_rates_now(monkeypatch, capsys):
    from ddbnb import progress

    clock = Clock()
    monkeypatch.setattr(progress.time, "monotonic", clock)
    view = progress.RunView(10_000, 4, mode="lines", interval=0)
    view.carry({"scanned": 1_000, "written": 1_000, "write_units": 1_000})  # a segment finished before (resumed)
    clock.now += 1
    view.page(1, {"scanned": 500, "written": 400, "unchanged": 100, "write_units": 400, "throttled": 2})
    clock.now += 10
    view.page(1, {"scanned": 2_500, "written": 2_000, "unchanged": 500, "write_units": 2_000, "throttled": 2})
    view.page(2, {"scanned": 1_000, "written": 1_000, "write_units": 1_000})
    view.done(1, {"scanned": 2_500, "written": 2_000, "unchanged": 500, "write_units": 2_000, "throttled": 2}, True)
    view.page(1, {"scanned": 2_000, "written": 1_600})  # a page report that reached the queue late
    state = view.state()
    assert (state["scanned"], state["written"], state["throttled"]) == (4_500, 4_000, 2)
    # 3,000 more items and 2,600 more write units in the 10 s since the first page.
    assert state["items_per_s"] == pytest.approx(300.0, rel=0.01)
    assert state["write_units_per_s"] == pytest.approx(260.0, rel=0.01)
    assert (state["segments_done"], state["segments_running"], state["segments_left"]) == (1, 1, 2)
    assert state["eta_s"] == pytest.approx(5_500 / 300, rel=0.01)
    line = capsys.readouterr().err.splitlines()[-1]
    assert line.startswith("scanned 4,500/10,000, written 4,000, unchanged 500, deleted 0, failed 0;")
    assert "segments 1 done (0 failed), 1 running, 2 left, ETA 18 s" in line
    # Throttles by DynamoDB's reason, as the workers report them, most first.
    view.page(2, {"scanned": 1_200, "throttled": 3, "throttle_reasons": {"partial": 1, "TableWriteKeyRange": 2}})
    view.page(3, {"scanned": 10, "throttled": 1, "throttle_reasons": {"TableWriteKeyRange": 1}})
    assert view.state()["throttle_reasons"] == "TableWriteKeyRange 3, partial 1"
    assert "throttled 6 (TableWriteKeyRange 3, partial 1); segments" in view.line()


def test_the_widget_draws_a_table_and_a_bar_per_running_segment(monkeypatch):
    from ddbnb import progress

    clock = Clock()
    monkeypatch.setattr(progress.time, "monotonic", clock)
    view = progress.RunView(None, 70, mode="off")
    for segment in range(60):
        view.page(segment, {"scanned": 100 * (segment + 1)})
    clock.now += 2
    html = view.render_html()
    assert "<th style='text-align:left'>segments</th><td>0 done (0 failed), 60 running, 10 left" in html
    assert html.count("<rect") == progress.CHART_SEGMENTS  # the most recent running segments, not all
    assert "segment 59: 3,000 items/s" in html  # 6,000 items in 2 s


def test_the_aws_view_counts_segments_and_estimates_from_them(monkeypatch):
    from ddbnb import progress

    clock = Clock()
    monkeypatch.setattr(progress.time, "monotonic", clock)
    view = progress.RunView(None, 100, mode="off")
    clock.now += 60
    view.segments(done=20, running=10, failed=1)
    state = view.state()
    assert (state["segments_done"], state["segments_running"], state["segments_left"], state["segments_failed"]) == (
        20,
        10,
        70,
        1,
    )
    assert state["eta_s"] == pytest.approx(3 * 80)  # a segment finished every 3 s so far, and 80 are left


def test_a_segment_counts_as_running_when_it_starts_and_a_resumed_one_from_what_it_had_done():
    from ddbnb.progress import RunView

    view = RunView(1_000, 4, mode="off")
    view.carry({"scanned": 300, "written": 300})  # a segment the earlier session finished
    view.carry_partial(1, {"scanned": 120, "written": 100})  # one that goes on from its checkpoint
    state = view.state()
    assert (state["scanned"], state["segments_running"], state["segments_left"]) == (420, 0, 4)
    view.page(1, {"scanned": 120, "written": 100})  # it starts: the engine reports it before its first page
    view.page(2, {})
    state = view.state()
    assert (state["scanned"], state["segments_running"], state["segments_left"]) == (420, 2, 2)
    view.page(1, {"scanned": 180, "written": 150})
    view.done(2, {"scanned": 50}, succeeded=True)
    state = view.state()
    assert (state["scanned"], state["segments_done"], state["segments_running"]) == (530, 1, 1)
