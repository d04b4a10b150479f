"""Does the live view slow a run down? The same local migration with the view off and on, twice each.

Runs in the same session, alternating, on the same restored table, so the
machine's noise falls on both sides; reports items/s with the widget view
over items/s without it (target: at least 0.95). `make bench` runs it after
the main bench; `python -m bench.live_view` alone.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path

from bench.run import RESULTS, SOURCE, Bench, _check

#: Target: items/s with the live view over items/s without it.
TARGET = 0.95
ROUNDS = 2


def main() -> None:
    items = int(os.environ.get("BENCH_ITEMS", "100000"))
    bench = Bench(items)
    started = time.perf_counter()
    try:
        bench.seed_source()
        rates: dict[str, list[float]] = {"off": [], "widget": []}
        for _ in range(ROUNDS):
            for view in rates:
                bench.restore()
                result = bench.run("ddbnb", "--table", SOURCE, "--view", view)
                _check(result["written"] == items, f"the run with view={view} did not write every item")
                rates[view].append(result["items_per_s"])
    finally:
        bench.close()
    ratio = statistics.median(rates["widget"]) / statistics.median(rates["off"])
    report = {
        "items": items,
        "items_per_s": rates,
        "live view / no view": round(ratio, 3),
        "target": TARGET,
        "met": ratio >= TARGET,
        "seconds": round(time.perf_counter() - started, 1),
    }
    Path(RESULTS, "live-view-latest.json").write_text(json.dumps(report, indent=1) + "\n")
    print(
        f"live view / no view: {ratio:.3f} (target >= {TARGET}): with {statistics.median(rates['widget']):,.0f}, "
        f"without {statistics.median(rates['off']):,.0f} items/s (median of {ROUNDS} runs each)"
    )


if __name__ == "__main__":
    main()
