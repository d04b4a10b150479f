"""Charts of a run's results; each is saved as a PNG into the run folder and returned.

Up to :data:`PER_SEGMENT_MAX` segments a chart draws each one; beyond that (an
aws run has 1,000 to 10,000) it draws their distribution and names the slowest
ten, the ones an operator acts on. :func:`plot_run_throughput` shows the whole
run over time at any size.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ddbnb.exceptions import DdbnbError
from ddbnb.insight.results import page_timeline, slowest_first
from ddbnb.progress import count_of
from ddbnb.runfolder import RunFolder

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


def _places(results: pd.DataFrame) -> tuple[Any, str, list[str]]:
    """Where each segment's bar goes, the axis label, and the bars' colours (failed red, key ranges orange).

    Scan segments sit at their numbers; a hot key's ranges, numbered far past them, follow in order."""
    import numpy as np

    ranges = results["key_range"] if "key_range" in results else np.zeros(len(results), dtype=bool)
    colors = [
        "tab:red" if status != "SUCCEEDED" else "tab:orange" if in_range else "tab:blue"
        for status, in_range in zip(results["status"], ranges, strict=True)
    ]
    if not any(ranges):
        return results["segment"], "segment", colors
    return np.arange(len(results)), "segment, then the hot keys' ranges (orange)", colors


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
        ax.set_title(run_title(run_dir, f"Throughput of {len(results):,} segments"))
        return _save(fig, run_dir, "throughput.png")
    fig, ax = plt.subplots(figsize=(10, 4))
    places, label, colors = _places(results)
    ax.bar(places, results["items_per_s"].fillna(0), color=colors)
    median = float(results["items_per_s"].median())
    ax.axhline(median, color="black", linestyle="--", label=f"median {median:,.0f} items/s")
    ax.set(xlabel=label, ylabel="items scanned per second", title=run_title(run_dir, "Throughput per segment"))
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    _integer_axis(ax, "x")
    return _save(fig, run_dir, "throughput.png")


def plot_durations(results: pd.DataFrame, run_dir: str | Path | None = None) -> Figure:
    """How long each segment took: a bar per segment, or, for many, the distribution of durations."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4))
    if len(results) > PER_SEGMENT_MAX:
        ax.hist(results["duration_s"].dropna(), bins=60, color="tab:green")
        median = float(results["duration_s"].median())
        ax.axvline(median, color="black", linestyle="--", label=f"median {median:,.1f} s")
        ax.legend(loc="upper right", fontsize=8)
        ax.set(xlabel="seconds", ylabel="segments", title=run_title(run_dir, f"Durations of {len(results):,} segments"))
        return _save(fig, run_dir, "durations.png")
    places, label, colors = _places(results)
    ax.bar(places, results["duration_s"], color=["tab:green" if c == "tab:blue" else c for c in colors])
    median = float(results["duration_s"].median())
    ax.axhline(median, color="black", linestyle="--", label=f"median {median:,.1f} s")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    ax.set(xlabel=label, ylabel="seconds", title=run_title(run_dir, "Segment durations"))
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
        title = run_title(run_dir, "Segments running over time")
        ax.set(xlabel="seconds since the run started", ylabel="segments running", title=title)
        return _save(fig, run_dir, "timeline.png")
    fig, ax = plt.subplots(figsize=(10, max(2.5, 0.25 * len(results))))
    places, label, colors = _places(results)
    ax.barh(places, durations, left=offsets, color=["tab:purple" if c == "tab:blue" else c for c in colors])
    ax.set(xlabel="seconds since the run started", ylabel=label, title=run_title(run_dir, "Timeline"))
    ax.invert_yaxis()
    _integer_axis(ax, "y")
    return _save(fig, run_dir, "timeline.png")


#: The counts the run charts draw over time.
RATES = ("scanned", "written", "unchanged", "deleted", "failed", "write_units", "throttled")


def run_rates(results: pd.DataFrame, bins: int = TIME_BINS) -> pd.DataFrame:
    """The whole run's rates over time, per second: items scanned, written, unchanged, deleted and failed,
    write units and throttled calls.

    Each page's counts are spread over the time the worker spent on it (the
    segments' timelines), and summed in ``bins`` steps: the rates are the ones the
    run really held, so a capped run stays at or under its cap. Results without
    timelines (older runs, rollbacks) spread each segment's counts evenly over
    the time it ran. Bins are one second wide at least: capacity is counted per second.
    """
    import numpy as np
    import pandas as pd

    pages = page_timeline(results)
    if len(pages):
        intervals = pages.rename(columns={"began": "started_at", "ended": "finished_at"})
    else:
        intervals = results.assign(**{name: results.get(name, 0) for name in RATES})
    start = intervals["started_at"].min()
    begin = (intervals["started_at"] - start).dt.total_seconds().to_numpy()
    end = np.maximum((intervals["finished_at"] - start).dt.total_seconds().to_numpy(), begin + 1e-3)
    bins = max(1, min(bins, int(np.floor(float(end.max())))))  # each at least a second wide
    edges = np.linspace(0.0, float(end.max()), bins + 1)
    width = edges[1] - edges[0]
    frame = {"seconds": edges[:-1]}
    for name in RATES:
        counts = pd.to_numeric(intervals[name], errors="coerce").fillna(0).to_numpy(dtype=float)
        frame[name] = _spread(begin, end, counts / (end - begin), edges) / width
    return pd.DataFrame(frame)


def run_title(run_dir: str | Path | None, what: str) -> str:
    """A chart title that names the run: what it shows, the table, the transform, the run and its UTC start."""
    if not run_dir:
        return what
    summary = RunFolder(run_dir).summary()
    transform = str(summary.get("transform") or "").rsplit("/", 1)[-1]
    parts = [summary.get("table"), transform, Path(run_dir).name, summary.get("started_at")]
    return f"{what}\n" + " · ".join(str(p) for p in parts if p)


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
    """The whole run over time: items/s (written, unchanged, deleted and failed, stacked, with scanned),
    write units/s against the run's write limit, and throttled calls/s."""
    import matplotlib.pyplot as plt

    rates = run_rates(results)
    fig, (items, units, throttles) = plt.subplots(
        3, 1, figsize=(11, 7), sharex=True, gridspec_kw={"height_ratios": [3, 2, 1]}
    )
    stacked = ("written", "unchanged", "deleted", "failed")
    colors = ("tab:blue", "tab:gray", "tab:purple", "tab:red")
    items.stackplot(rates["seconds"], *(rates[name] for name in stacked), labels=stacked, colors=colors)
    items.plot(rates["seconds"], rates["scanned"], color="black", linewidth=0.8, label="scanned")
    items.set(
        ylabel="items per second", title=run_title(run_dir, f"The run over time ({count_of(len(results), 'segment')})")
    )
    units.plot(rates["seconds"], rates["write_units"], color="tab:orange", label="write units/s used")
    cap = _write_limit(run_dir)
    if cap:
        units.axhline(cap, color="tab:red", linestyle="--", label=f"write limit {cap:,.0f} units/s")
    units.set(ylabel="write units per second")
    throttles.plot(rates["seconds"], rates["throttled"], color="tab:red", label="throttled calls/s")
    throttles.set(xlabel="seconds since the run started", ylabel="throttled / s")
    for ax in (items, units, throttles):
        ax.set_ylim(bottom=0)
        ax.set_xlim(left=0)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)  # outside the data
    return _save(fig, run_dir, "run_throughput.png")


def _write_limit(run_dir: str | Path | None) -> float:
    """The run's write budget in units per second, from its summary (0: none, or not known)."""
    if not run_dir:
        return 0.0
    limits = RunFolder(run_dir).summary().get("limits") or {}
    return float(limits.get("write_units_per_s") or 0)


def plot_follow_lag(run_dir: str | Path) -> Figure:
    """How far behind the source the last follow of ``run_dir`` was, second by second (0: caught up)."""
    import matplotlib.pyplot as plt

    summary = RunFolder(run_dir).follow_summary()
    if not summary:
        raise DdbnbError(f"{run_dir} holds no follow yet: call ddbnb.follow({str(run_dir)!r}) first.")
    samples = summary.get("lag") or [[0.0, 0.0]]
    start = samples[0][0]
    fig, ax = plt.subplots(figsize=(10, 3))
    ax.plot([t - start for t, _ in samples], [lag for _, lag in samples], color="tab:blue", drawstyle="steps-post")
    ax.axhline(0, color="black", linewidth=0.5)
    ax.set(
        xlabel="seconds into the follow",
        ylabel="lag (s)",
        title=run_title(run_dir, f"Follow lag: {summary['status']}, {summary['records']:,} records"),
    )
    return _save(fig, run_dir, "follow_lag.png")


def plot_segment_sizes(units: pd.DataFrame, run_dir: str | Path | None = None) -> Figure:
    """A dry run's estimate of the items in each unit of work (:meth:`DryRun.segment_sizes`), largest first:
    left, every partition key in one segment; right, as planned, hot keys cut into ranges (orange).

    A run lasts as long as its largest unit: a bar far above the dashed line (twice the median) is a hot key.
    Beyond :data:`PER_SEGMENT_MAX` units, the largest are drawn."""
    import matplotlib.pyplot as plt

    scan = units[units["kind"] == "scan segment"]
    median = float(scan["unsplit_items"].median()) if len(scan) else 0.0
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    panels = (
        (scan["unsplit_items"], ["tab:blue"] * len(scan), "each partition key in one segment"),
        (units["items"], ["tab:orange" if k != "scan segment" else "tab:blue" for k in units["kind"]], "as planned"),
    )
    for ax, (values, colors, title) in zip(axes, panels, strict=True):
        order = values.reset_index(drop=True).sort_values(ascending=False).head(PER_SEGMENT_MAX)
        ax.bar(range(len(order)), order.to_numpy(), color=[colors[i] for i in order.index], width=0.9)
        ax.axhline(median, color="black", linestyle="--", linewidth=0.8, label=f"median {median:,.0f}")
        ax.axhline(2 * median, color="tab:red", linestyle=":", linewidth=0.8, label="twice the median")
        shown = f"largest {len(order):,} of {len(values):,}" if len(values) > len(order) else f"{len(values):,}"
        ax.set(title=f"{title}: {shown} units", xlabel="units of work, largest first (orange: a hot key's ranges)")
        ax.legend(loc="upper right", fontsize=8)
    axes[0].set_ylabel("estimated items")
    fig.suptitle(run_title(run_dir, "Estimated items per unit of work"), fontsize=10)
    return _save(fig, run_dir, "segment_sizes.png")
