"""04's charts at the sizes runs have: a handful of segments locally, 10,000 on AWS."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ddbnb.insight.charts import (
    PER_SEGMENT_MAX,
    plot_durations,
    plot_run_throughput,
    plot_throughput,
    plot_timeline,
    run_rates,
    slowest_segments,
)


def synthetic(segments: int, seed: int = 1) -> pd.DataFrame:
    """Results shaped like load_results' for ``segments`` segments over about an hour."""
    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2026-11-27T10:00:00Z") + pd.to_timedelta(rng.uniform(0, 3000, segments), unit="s")
    duration = rng.uniform(30, 600, segments)
    scanned = rng.integers(10_000, 60_000, segments)
    written = (scanned * rng.uniform(0.2, 0.9, segments)).astype(int)
    frame = pd.DataFrame(
        {
            "segment": np.arange(segments),
            "status": np.where(rng.uniform(size=segments) < 0.001, "FAILED", "SUCCEEDED"),
            "scanned": scanned,
            "written": written,
            "unchanged": scanned - written,
            "write_units": written * 2,
            "started_at": start,
            "finished_at": start + pd.to_timedelta(duration, unit="s"),
            "duration_s": duration,
            "error": "",
        }
    )
    frame["items_per_s"] = frame["scanned"] / frame["duration_s"]
    return frame


@pytest.mark.timeout(120)  # a guard against one bar (or one row) per segment, not a speed measurement
def test_every_chart_stays_readable_at_ten_thousand_segments(tmp_path):
    import matplotlib.pyplot as plt

    results = synthetic(10_000)
    for plot in (plot_throughput, plot_durations, plot_timeline, plot_run_throughput):
        fig = plot(results, tmp_path)
        width, height = fig.get_size_inches()
        assert width <= 12 and height <= 8  # the timeline used to be 0.25 inch per segment: 2,500 inches
        assert sum(len(ax.patches) for ax in fig.axes) < 1_000  # a histogram, not 10,000 bars
        plt.close(fig)
    assert {p.name for p in tmp_path.glob("*.png")} == {
        "throughput.png",
        "durations.png",
        "timeline.png",
        "run_throughput.png",
    }
    named = plot_throughput(results).axes[0].texts[0].get_text()
    slow = slowest_segments(results)
    assert len(slow) == 10 and all(f"{s:>6}" in named for s in slow["segment"])
    assert slow["status"].iloc[0] == "FAILED"  # failed segments come first: they need acting on most


def test_small_runs_keep_one_bar_per_segment():
    import matplotlib.pyplot as plt

    results = synthetic(PER_SEGMENT_MAX)
    fig = plot_throughput(results)
    assert len(fig.axes[0].patches) == PER_SEGMENT_MAX
    plt.close(fig)


def test_the_run_rates_add_up_to_the_runs_totals_and_match_a_brute_force_sum():
    results = synthetic(300, seed=3)
    rates = run_rates(results, bins=200)
    width = rates["seconds"].iloc[1] - rates["seconds"].iloc[0]
    for name in ("scanned", "written", "unchanged", "write_units"):
        assert rates[name].sum() * width == pytest.approx(results[name].sum(), rel=1e-6)
    # Brute force: each segment's rate times its overlap with each bin.
    start = results["started_at"].min()
    begin = (results["started_at"] - start).dt.total_seconds().to_numpy()
    end = (results["finished_at"] - start).dt.total_seconds().to_numpy()
    edges = np.append(rates["seconds"].to_numpy(), rates["seconds"].iloc[-1] + width)
    overlap = np.clip(np.minimum(end[:, None], edges[None, 1:]) - np.maximum(begin[:, None], edges[None, :-1]), 0, None)
    expected = (overlap * (results["scanned"].to_numpy() / (end - begin))[:, None]).sum(axis=0) / width
    assert np.allclose(rates["scanned"].to_numpy(), expected, rtol=1e-6)
