"""Charts of a run's results; each is saved as a PNG into the run folder and returned."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure


def _save(fig: Figure, run_dir: str | Path | None, name: str) -> Figure:
    from matplotlib.ticker import MaxNLocator

    for ax in fig.axes:  # segments are whole numbers
        axis = ax.yaxis if name == "timeline.png" else ax.xaxis
        axis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    if run_dir:
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        fig.savefig(Path(run_dir) / name, dpi=110)
    return fig


def plot_throughput(results: pd.DataFrame, run_dir: str | Path | None = None) -> Figure:
    """Bar chart of items scanned per second for each segment, median marked."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4))
    colors = ["tab:red" if s != "SUCCEEDED" else "tab:blue" for s in results["status"]]
    ax.bar(results["segment"], results["items_per_s"].fillna(0), color=colors)
    median = float(results["items_per_s"].median())
    ax.axhline(median, color="black", linestyle="--", label=f"median {median:,.0f} items/s")
    ax.set(xlabel="segment", ylabel="items scanned per second", title="Throughput per segment")
    ax.legend()
    return _save(fig, run_dir, "throughput.png")


def plot_durations(results: pd.DataFrame, run_dir: str | Path | None = None) -> Figure:
    """Bar chart of how long each segment took, in seconds."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4))
    ax.bar(results["segment"], results["duration_s"], color="tab:green")
    ax.set(xlabel="segment", ylabel="seconds", title="Segment durations")
    return _save(fig, run_dir, "durations.png")


def plot_timeline(results: pd.DataFrame, run_dir: str | Path | None = None) -> Figure:
    """When each segment ran, relative to the start of the run."""
    import matplotlib.pyplot as plt

    start = results["started_at"].min()
    offsets = (results["started_at"] - start).dt.total_seconds()
    fig, ax = plt.subplots(figsize=(10, max(2.5, 0.25 * len(results))))
    ax.barh(results["segment"], results["duration_s"], left=offsets, color="tab:purple")
    ax.set(xlabel="seconds since the run started", ylabel="segment", title="Timeline")
    ax.invert_yaxis()
    return _save(fig, run_dir, "timeline.png")
