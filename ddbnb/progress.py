"""Progress for long work: a widget in JupyterLab, a bar in a terminal, text lines elsewhere.

Under papermill there is no widget front end (a tqdm widget saves as ``0%``
forever), and in a log file a redrawn bar is noise. There, and in anything
else that is not a terminal, progress is a plain line on stderr at a steady
interval, which ``papermill --log-output`` shows as it comes.

``DDBNB_PROGRESS`` forces a mode (``widget``, ``bar``, ``lines`` or ``off``);
``DDBNB_PROGRESS_INTERVAL`` sets the seconds between lines (default 10).
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, TextIO

from ddbnb.worker.writes import merge_counts

MODES = ("widget", "bar", "lines", "off")
#: Seconds between two text lines.
DEFAULT_INTERVAL_S = 10.0


def progress_mode() -> str:
    """``widget`` in a kernel a Jupyter server started, ``bar`` on a terminal, else ``lines``."""
    forced = os.environ.get("DDBNB_PROGRESS", "")
    if forced in MODES:
        return forced
    if "ipykernel" in sys.modules and os.environ.get("JPY_SESSION_NAME"):
        return "widget"  # JupyterLab or Notebook: a front end renders widgets
    if "ipykernel" not in sys.modules and sys.stderr is not None and sys.stderr.isatty():
        return "bar"
    return "lines"


def line_interval(interval: float | None = None) -> float:
    """Seconds between two text lines: ``interval``, else ``DDBNB_PROGRESS_INTERVAL``, else the default."""
    if interval is not None:
        return interval
    return float(os.environ.get("DDBNB_PROGRESS_INTERVAL", DEFAULT_INTERVAL_S))


class LineProgress:
    """A tqdm look-alike that prints one plain line at a steady interval, and a last one on close."""

    def __init__(
        self,
        total: float | None = None,
        unit: str = "it",
        desc: str = "",
        interval: float | None = None,
        stream: TextIO | None = None,
    ) -> None:
        self.total = total
        self.unit = unit
        self.desc = desc
        self.n = 0
        self.interval = line_interval(interval)
        self.stream = stream
        self.postfix = ""
        self.started = time.monotonic()
        self._last = self.started
        self._closed = False

    def update(self, n: float = 1) -> None:
        """Count ``n`` more; print a line when the interval has passed."""
        self.n += int(n)
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            self._print()

    def set_postfix(self, **fields: Any) -> None:
        """Extra fields shown at the end of each line."""
        self.postfix = ", ".join(f"{name} {value}" for name, value in fields.items())
        self.update(0)

    def set_postfix_str(self, text: str) -> None:
        """Extra text shown at the end of each line."""
        self.postfix = text
        self.update(0)

    def line(self) -> str:
        """The current progress as one line."""
        elapsed = time.monotonic() - self.started
        units = self.unit if self.unit.endswith("s") else self.unit + "s"
        count = f"{self.n:,}/{int(self.total):,} {units}" if self.total else f"{self.n:,} {units}"
        share = f" ({self.n / self.total:.0%})" if self.total else ""
        rate = f", {self.n / elapsed:,.0f} {units}/s" if elapsed > 0 else ""
        extra = f", {self.postfix}" if self.postfix else ""
        return f"{self.desc}: {count}{share}{rate}{extra}, {elapsed:,.0f} s"

    def _print(self) -> None:
        print(self.line(), file=self.stream or sys.stderr, flush=True)

    def close(self) -> None:
        """Print the last line (once)."""
        if not self._closed:
            self._closed = True
            self._print()

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()


def progress_bar(total: float | None = None, *, unit: str = "it", desc: str = "", enabled: bool = True) -> Any:
    """A progress display for the place this runs in (see :func:`progress_mode`).

    It has tqdm's ``update``, ``set_postfix``, ``set_postfix_str``, ``n`` and ``close``.
    """
    mode = progress_mode() if enabled else "off"
    if mode == "lines":
        return LineProgress(total, unit, desc)
    if mode == "widget":
        from tqdm.notebook import tqdm as widget_tqdm

        return widget_tqdm(total=total, unit=unit, desc=desc)
    from tqdm import tqdm

    return tqdm(total=total, unit=unit, desc=desc, disable=mode == "off")


#: Counters a run view sums over segments.
COUNTED = ("scanned", "written", "unchanged", "deleted", "failed", "throttled")
#: Seconds of history the "now" rates are measured over.
RATE_WINDOW_S = 10.0
#: Seconds between two redraws of the widget (lines keep their own interval).
WIDGET_REFRESH_S = 1.0
#: Segments drawn in the widget's per-segment chart (the highest-numbered running ones).
CHART_SEGMENTS = 48


def _by_reason(state: dict[str, Any]) -> str:
    """The throttles by reason, in brackets ("" when none was reported)."""
    return f" ({state['throttle_reasons']})" if state.get("throttle_reasons") else ""


class RunView:
    """One live display of a run: items scanned, written, unchanged, deleted and failed; items/s and
    write units/s now; throttles; segments done, running and left; and the time left.

    In JupyterLab it is a widget redrawn in place, with a small chart of items/s per
    running segment when the engine reports pages (the local engine); in a terminal
    a bar; under papermill and in logs a plain line every interval (no widget JSON).
    The engine feeds it: :meth:`page` with a segment's running totals, :meth:`done`
    when a segment ends, or :meth:`segments` with counts alone (the aws engine,
    whose workers report per segment only when it ends).
    """

    def __init__(
        self,
        total_items: int | None,
        total_segments: int,
        *,
        enabled: bool = True,
        mode: str | None = None,
        interval: float | None = None,
    ) -> None:
        self.mode = mode or (progress_mode() if enabled else "off")
        self.total_items = total_items or None
        self.total_segments = total_segments
        self.interval = line_interval(interval)
        self.started = time.monotonic()
        self.carried: dict[str, float] = {name: 0 for name in (*COUNTED, "write_units")}
        self.latest: dict[int, dict[str, Any]] = {}
        self.first_seen: dict[int, float] = {}
        self.finished: set[int] = set()
        self.failed_segments = 0
        self.counted_segments: tuple[int, int, int] | None = None  # (done, running, failed) when told so
        self.samples: list[tuple[float, float, float]] = []
        self._drawn = 0.0
        self._display: Any = None
        self._bar: Any = None
        if self.mode == "widget":
            import ipywidgets
            from IPython.display import display

            self._display = ipywidgets.HTML(self.render_html())
            display(self._display)  # type: ignore[no-untyped-call]
        elif self.mode == "bar":
            from tqdm import tqdm

            self._bar = tqdm(total=self.total_items, unit="item", desc="scanned")

    # -- what the engines tell it ---------------------------------------------------------------------------
    def carry(self, totals: dict[str, Any]) -> None:
        """Count the totals of a segment that finished before this session (a resumed run)."""
        for name in self.carried:
            self.carried[name] += float(totals.get(name, 0))

    def carry_partial(self, segment: int, totals: dict[str, Any]) -> None:
        """Count what a segment did before this session, until it reports from where it goes on."""
        self.latest.setdefault(segment, totals)

    def page(self, segment: int, totals: dict[str, Any]) -> None:
        """A segment's running totals after a page (a late report of a segment that ended is ignored)."""
        if segment in self.finished:
            return
        self.first_seen.setdefault(segment, time.monotonic())
        self.latest[segment] = totals
        self.refresh()

    def done(self, segment: int, totals: dict[str, Any] | None, succeeded: bool) -> None:
        """A segment ended (with its final totals when it has them)."""
        if totals:
            self.latest[segment] = totals
        self.finished.add(segment)
        self.failed_segments += not succeeded
        self.refresh()

    def segments(self, done: int, running: int, failed: int) -> None:
        """Segment counts alone, for an engine that reports no pages."""
        self.counted_segments = (done, running, failed)
        self.refresh()

    # -- what it shows --------------------------------------------------------------------------------------
    def totals(self) -> dict[str, float]:
        """The counters summed over every segment so far."""
        summed = dict(self.carried)
        for totals in self.latest.values():
            for name in summed:
                summed[name] += float(totals.get(name, 0))
        return summed

    def _segment_counts(self) -> tuple[int, int, int]:
        if self.counted_segments is not None:
            done, running, failed = self.counted_segments
        else:
            done, failed = len(self.finished), self.failed_segments
            running = len(set(self.first_seen) - self.finished)
        return done, running, failed

    def _rates(self, totals: dict[str, float]) -> tuple[float, float]:
        """Items/s and write units/s over the last :data:`RATE_WINDOW_S` seconds."""
        now = time.monotonic()
        self.samples.append((now, totals["scanned"], totals["write_units"]))
        while len(self.samples) > 2 and now - self.samples[1][0] >= RATE_WINDOW_S:
            self.samples.pop(0)
        then, scanned, units = self.samples[0]
        elapsed = now - then
        if elapsed <= 0:
            return 0.0, 0.0
        return (totals["scanned"] - scanned) / elapsed, (totals["write_units"] - units) / elapsed

    def state(self) -> dict[str, Any]:
        """Everything the display shows, as numbers."""
        totals = self.totals()
        items_per_s, units_per_s = self._rates(totals)
        done, running, failed = self._segment_counts()
        left = max(0, self.total_segments - done - running)
        eta = None
        if self.total_items and items_per_s > 0:
            eta = max(0.0, self.total_items - totals["scanned"]) / items_per_s
        elif done and self.counted_segments is not None:  # wall time per finished segment, so far
            eta = (time.monotonic() - self.started) / done * (self.total_segments - done)
        return {
            **totals,
            "items_per_s": items_per_s,
            "write_units_per_s": units_per_s,
            "segments_done": done,
            "segments_running": running,
            "segments_left": left,
            "segments_failed": failed,
            "eta_s": eta,
            "elapsed_s": time.monotonic() - self.started,
            "throttle_reasons": self.throttle_reasons(),
        }

    def throttle_reasons(self) -> str:
        """Throttles by DynamoDB's reason so far, most first ("" when none was reported)."""
        summed: dict[str, int] = {}
        for totals in self.latest.values():
            merge_counts(summed, totals.get("throttle_reasons") or {})
        return ", ".join(f"{reason} {count:,}" for reason, count in sorted(summed.items(), key=lambda kv: -kv[1]))

    def line(self, state: dict[str, Any] | None = None) -> str:
        """The view as one plain line."""
        s = state or self.state()
        of = f"/{self.total_items:,}" if self.total_items else ""
        eta = f", ETA {format_duration(s['eta_s'])}" if s["eta_s"] is not None else ""
        return (
            f"scanned {s['scanned']:,.0f}{of}, written {s['written']:,.0f}, unchanged {s['unchanged']:,.0f}, "
            f"deleted {s['deleted']:,.0f}, failed {s['failed']:,.0f}; {s['items_per_s']:,.0f} items/s, "
            f"{s['write_units_per_s']:,.0f} write units/s, throttled {s['throttled']:,.0f}{_by_reason(s)}; segments "
            f"{s['segments_done']:,} done ({s['segments_failed']:,} failed), {s['segments_running']:,} running, "
            f"{s['segments_left']:,} left{eta}, {format_duration(s['elapsed_s'])}"
        )

    def render_html(self, state: dict[str, Any] | None = None) -> str:
        """The widget's HTML: a table of the numbers and, with pages reported, items/s per running segment."""
        s = state or self.state()
        by_reason = _by_reason(s)
        share = f" of {self.total_items:,} ({s['scanned'] / self.total_items:.0%})" if self.total_items else ""
        cells = [
            ("scanned", f"{s['scanned']:,.0f}{share}"),
            ("written / unchanged / deleted", f"{s['written']:,.0f} / {s['unchanged']:,.0f} / {s['deleted']:,.0f}"),
            ("failed items", f"{s['failed']:,.0f}"),
            ("now", f"{s['items_per_s']:,.0f} items/s, {s['write_units_per_s']:,.0f} write units/s"),
            ("throttled calls", f"{s['throttled']:,.0f}" + by_reason),
            (
                "segments",
                f"{s['segments_done']:,} done ({s['segments_failed']:,} failed), {s['segments_running']:,} running, "
                f"{s['segments_left']:,} left",
            ),
            (
                "time",
                f"{format_duration(s['elapsed_s'])}"
                + (f", about {format_duration(s['eta_s'])} left" if s["eta_s"] else ""),
            ),
        ]
        rows = "".join(f"<tr><th style='text-align:left'>{k}</th><td>{v}</td></tr>" for k, v in cells)
        return f"<div style='display:flex;gap:24px'><table>{rows}</table>{self._chart_svg()}</div>"

    def _chart_svg(self) -> str:
        """Items/s of up to CHART_SEGMENTS running segments (the highest-numbered), as bars (local engine only)."""
        now = time.monotonic()
        running = sorted(set(self.first_seen) - self.finished)[-CHART_SEGMENTS:]
        if not running:
            return ""
        rates = [float(self.latest[seg].get("scanned", 0)) / max(1e-3, now - self.first_seen[seg]) for seg in running]
        top, width, height = max(rates) or 1.0, 6, 80
        bars = "".join(
            f"<rect x='{i * (width + 2)}' y='{height - rate / top * height:.1f}' width='{width}' "
            f"height='{rate / top * height:.1f}' fill='#4c72b0'>"
            f"<title>segment {seg}: {rate:,.0f} items/s</title></rect>"
            for i, (seg, rate) in enumerate(zip(running, rates, strict=True))
        )
        span = len(running) * (width + 2)
        return (
            f"<div><div>items/s per running segment (max {top:,.0f})</div>"
            f"<svg width='{span}' height='{height}' style='background:#f4f4f4'>{bars}</svg></div>"
        )

    def refresh(self, force: bool = False) -> None:
        """Redraw if it is time (or ``force``)."""
        if self.mode == "off":
            return
        now = time.monotonic()
        wait = WIDGET_REFRESH_S if self.mode in ("widget", "bar") else self.interval
        if not force and now - self._drawn < wait:
            return
        self._drawn = now
        state = self.state()
        if self.mode == "widget":
            self._display.value = self.render_html(state)
        elif self.mode == "bar":
            self._bar.n = int(state["scanned"])
            self._bar.set_postfix_str(self.line(state).split("; ", 1)[1], refresh=True)
        else:
            print(self.line(state), file=sys.stderr, flush=True)

    def close(self) -> None:
        """Draw the final state."""
        self.refresh(force=True)
        if self._bar is not None:
            self._bar.close()

    def __enter__(self) -> RunView:
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()


def count_of(number: int, noun: str) -> str:
    """``number`` and ``noun``, plural unless it is one: "1 segment", "6 segments"."""
    return f"{number:,} {noun}" + ("" if number == 1 else "s")


def format_duration(seconds: float) -> str:
    """A duration as people say it: seconds under a minute, minutes under two hours, then hours."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f} s" if seconds >= 1 else f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:,.1f} min"
    return f"{seconds / 3600:,.1f} h"
