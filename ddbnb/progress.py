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
        self.interval = interval if interval is not None else float(os.environ.get("DDBNB_PROGRESS_INTERVAL", 10))
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
