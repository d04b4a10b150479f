"""Charts of a run's results; each is saved as a PNG into the run folder and returned.

Up to :data:`PER_SEGMENT_MAX` segments a chart draws each one; beyond that (an
aws run has 1,000 to 10,000) it draws their distribution and names the slowest
ten, the ones an operator acts on. :func:`plot_run_throughput` shows the whole
run over time at any size.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ddbnb.insight.results import slowest_first

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

#: Up to this many segments, charts draw one bar per segment.
PER_SEGMENT_MAX = 200
#: Points on the time axis of :func:`plot_run_throughput`.
TIME_BINS = 300


def _save(fig: Figure, run_dir: str | Path | None, name: str) -> Figure:
    fig.tight_layout()
    if run_dir:
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        fig.savefig(Path(run_dir) / name, dpi=110)
    return fig


def _integer_axis(ax: Axes, axis: str) -> None:
    from matplotlib.ticker import MaxNLocator

    (ax.yaxis if axis == "y" else ax.xaxis).set_major_locator(MaxNLocator(integer=True))


def slowest_segments(results: pd.DataFrame, count: int = 10) -> pd.DataFrame:
    """The ``count`` segments with the fewest items per second (failed ones first), slowest first."""
    columns = ["segment", "status", "items_per_s", "scanned", "duration_s", "error"]
    return slowest_first(results).head(count)[columns].reset_index(drop=True)


def _distribution(ax: Axes, values: pd.Series, results: pd.DataFrame, label: str) -> None:
    """A histogram of ``values`` across segments, with the slowest ten named beside it."""
    ax.hist(values.dropna(), bins=60, color="tab:blue")
    median = float(values.median())
    ax.axvline(median, color="black", linestyle="--", label=f"median {median:,.0f}")
    ax.set(xlabel=label, ylabel="segments")
    slow = slowest_segments(results)
    named = "\n".join(
        f"{int(row.segment):>6}  {row.items_per_s or 0:>9,.0f}" + ("  FAILED" if row.status != "SUCCEEDED" else "")
        for row in slow.itertuples()
    )
    ax.text(
        1.02, 1.0, "slowest segments\nsegment  items/s\n" + named, transform=ax.transAxes, va="top",
        family="monospace", fontsize=8,
    )  # fmt: skip
    ax.legend(loc="upper left")


def plot_throughput(results: pd.DataFrame, run_dir: str | Path | None = None) -> Figure:
    """Items scanned per second: a bar per segment (failed in red), or, for many, their distribution."""
    import matplotlib.pyplot as plt

    if len(results) > PER_SEGMENT_MAX:
        fig, ax = plt.subplots(figsize=(11, 4))
        _distribution(ax, results["items_per_s"], results, "items scanned per second")
        ax.set_title(f"Throughput of {len(results):,} segments")
        return _save(fig, run_dir, "throughput.png")
    fig, ax = plt.subplots(figsize=(10, 4))
    colors = ["tab:red" if s != "SUCCEEDED" else "tab:blue" for s in results["status"]]
    ax.bar(results["segment"], results["items_per_s"].fillna(0), color=colors)
    median = float(results["items_per_s"].median())
    ax.axhline(median, color="black", linestyle="--", label=f"median {median:,.0f} items/s")
    ax.set(xlabel="segment", ylabel="items scanned per second", title="Throughput per segment")
    ax.legend()
    _integer_axis(ax, "x")
    return _save(fig, run_dir, "throughput.png")


def plot_durations(results: pd.DataFrame, run_dir: str | Path | None = None) -> Figure:
    """How long each segment took: a bar per segment, or, for many, the distribution of durations."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4))
    if len(results) > PER_SEGMENT_MAX:
        ax.hist(results["duration_s"].dropna(), bins=60, color="tab:green")
        ax.set(xlabel="seconds", ylabel="segments", title=f"Durations of {len(results):,} segments")
        return _save(fig, run_dir, "durations.png")
    ax.bar(results["segment"], results["duration_s"], color="tab:green")
    ax.set(xlabel="segment", ylabel="seconds", title="Segment durations")
    _integer_axis(ax, "x")
    return _save(fig, run_dir, "durations.png")


def plot_timeline(results: pd.DataFrame, run_dir: str | Path | None = None) -> Figure:
    """When each segment ran; for many segments, how many ran at each moment."""
    import matplotlib.pyplot as plt
    import numpy as np

    start = results["started_at"].min()
    offsets = (results["started_at"] - start).dt.total_seconds().to_numpy()
    durations = results["duration_s"].fillna(0).to_numpy()
    if len(results) > PER_SEGMENT_MAX:
        times = np.concatenate([offsets, offsets + durations])
        steps = np.concatenate([np.ones(len(offsets)), -np.ones(len(offsets))])
        order = np.argsort(times, kind="stable")
        fig, ax = plt.subplots(figsize=(10, 3.5))
        ax.step(times[order], np.cumsum(steps[order]), where="post", color="tab:purple")
        ax.set(xlabel="seconds since the run started", ylabel="segments running", title="Segments running over time")
        return _save(fig, run_dir, "timeline.png")
    fig, ax = plt.subplots(figsize=(10, max(2.5, 0.25 * len(results))))
    ax.barh(results["segment"], durations, left=offsets, color="tab:purple")
    ax.set(xlabel="seconds since the run started", ylabel="segment", title="Timeline")
    ax.invert_yaxis()
    _integer_axis(ax, "y")
    return _save(fig, run_dir, "timeline.png")


def run_rates(results: pd.DataFrame, bins: int = TIME_BINS) -> pd.DataFrame:
    """The whole run's rates over time: items/s scanned, written and unchanged, and write units/s.

    Each segment's counts are spread evenly over the time it ran (the results
    hold each segment's start and end), and the segments' rates are summed in
    ``bins`` steps: exact for a segment that ran at a steady pace.
    """
    import numpy as np
    import pandas as pd

    start = results["started_at"].min()
    begin = (results["started_at"] - start).dt.total_seconds().to_numpy()
    end = np.maximum((results["finished_at"] - start).dt.total_seconds().to_numpy(), begin + 1e-3)
    edges = np.linspace(0.0, float(end.max()), bins + 1)
    width = edges[1] - edges[0]
    frame = {"seconds": edges[:-1]}
    for name in ("scanned", "written", "unchanged", "write_units"):
        rate = results[name].fillna(0).to_numpy(dtype=float) / (end - begin)
        frame[name] = _spread(begin, end, rate, edges) / width
    return pd.DataFrame(frame)


def _spread(begin: np.ndarray, end: np.ndarray, rate: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Sum of each interval's ``rate`` times its overlap with each bin, in O(segments log segments + bins)."""
    import numpy as np

    b, e, r, x = (np.asarray(v, dtype=float) for v in (begin, end, rate, edges))
    # The integral of the summed rate up to t is piecewise linear: slope changes by +r at b and -r at e.
    points = np.concatenate([b, e])
    slopes = np.concatenate([r, -r])
    order = np.argsort(points, kind="stable")
    points, slopes = points[order], slopes[order]
    slope_after = np.cumsum(slopes)
    # Integral at each change point, then at each edge.
    integral_at_points = np.concatenate([[0.0], np.cumsum(slope_after[:-1] * np.diff(points))])
    index = np.searchsorted(points, x, side="right") - 1
    inside = index >= 0
    integral = np.zeros_like(x)
    integral[inside] = integral_at_points[index[inside]] + slope_after[index[inside]] * (
        x[inside] - points[index[inside]]
    )
    return np.diff(integral)


def plot_run_throughput(results: pd.DataFrame, run_dir: str | Path | None = None) -> Figure:
    """The whole run over time: items/s written and unchanged (stacked), and write units/s."""
    import matplotlib.pyplot as plt

    rates = run_rates(results)
    fig, (items, units) = plt.subplots(2, 1, figsize=(10, 5.5), sharex=True)
    items.stackplot(
        rates["seconds"], rates["written"], rates["unchanged"], labels=["written", "unchanged"],
        colors=["tab:blue", "tab:gray"],
    )  # fmt: skip
    items.plot(rates["seconds"], rates["scanned"], color="black", linewidth=0.8, label="scanned")
    items.set(ylabel="items per second", title=f"The run over time ({len(results):,} segments)")
    items.legend(loc="upper right")
    units.plot(rates["seconds"], rates["write_units"], color="tab:orange")
    units.set(xlabel="seconds since the run started", ylabel="write units per second")
    return _save(fig, run_dir, "run_throughput.png")
