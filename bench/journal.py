"""What the journal costs a migration, and how fast a rollback goes, in one session.

The same local migration of the seeded table with the journal on and off,
alternating, each on the restored table; after each journaled run, its
rollback (which puts the table back). Both write modes: a rollback in
conditional mode reads every item again and guards each write, as a migration
in conditional mode does. Reports ``journal / no journal`` (target >= 0.85) and
``rollback / migration`` (target >= 0.8) from the medians, the client CPU per
worker process, to show the Python processes were not the bottleneck, and
``client cpu journal / no journal``: what the journal adds to the run's CPU (no target).
`make bench` runs it; `python -m bench.journal` alone. BENCH_JOURNAL_ITEMS sets the
table size (default 20,000: ten migrations and rollbacks take about 9 minutes here).
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.run import RESULTS, SOURCE, Bench, _check

TARGETS = {"journal / no journal": 0.85, "rollback / migration": 0.8}
ROUNDS = 2
MODES = ("batch", "conditional")


def _busy(result: dict[str, Any]) -> float:
    """Client CPU seconds per wall second per worker process: near 1.0 would mean Python is the bottleneck."""
    return float(result["cpu_s"]) / max(float(result["seconds"]), 1e-9) / max(int(result.get("concurrency", 4)), 1)


def main() -> None:
    items = int(os.environ.get("BENCH_JOURNAL_ITEMS", "20000"))
    bench = Bench(items)
    started = time.perf_counter()
    rates: dict[str, dict[str, list[float]]] = {m: {"journal": [], "no journal": [], "rollback": []} for m in MODES}
    busy: list[float] = []
    cpu: dict[str, dict[str, list[float]]] = {m: {"journal": [], "no journal": []} for m in MODES}
    try:
        bench.seed_source()
        for round_ in range(ROUNDS):
            for mode in MODES:
                order = ("journal", "no journal") if round_ % 2 == 0 else ("no journal", "journal")
                for kind in order:
                    bench.restore()
                    run_dir = tempfile.mkdtemp(prefix="bench-journal-")
                    args = ["--table", SOURCE, "--mode", mode, "--run-dir", run_dir]
                    result = bench.run("ddbnb", *args, *(["--no-journal"] if kind == "no journal" else []))
                    _check(result["written"] == items, f"the {mode} run ({kind}) did not write every item")
                    rates[mode][kind].append(result["items_per_s"])
                    cpu[mode][kind].append(result["cpu_s"])
                    busy.append(_busy(result))
                    if kind == "journal":
                        undone = bench.run("rollback", "--table", SOURCE, "--run-dir", run_dir, "--mode", mode)
                        _check(undone["written"] == items, f"the {mode} rollback did not restore every item")
                        _check(bench.count(SOURCE, "ddbnb") == 0, "the rollback left migrated items behind")
                        rates[mode]["rollback"].append(undone["items_per_s"])
    finally:
        bench.close()
    report: dict[str, Any] = {
        "items": items,
        "items_per_s": rates,
        "client_cpu_s": cpu,
        "client_cpu_per_process": round(max(busy), 2),
    }
    for mode in MODES:
        median = {kind: statistics.median(values) for kind, values in rates[mode].items()}
        ratios = {
            "journal / no journal": median["journal"] / median["no journal"],
            "rollback / migration": median["rollback"] / median["journal"],
        }
        report[mode] = {name: round(value, 3) for name, value in ratios.items()}
        cpu_ratio = statistics.median(cpu[mode]["journal"]) / statistics.median(cpu[mode]["no journal"])
        report[mode]["client cpu journal / no journal"] = round(cpu_ratio, 3)
        print(f"{mode}: client cpu journal / no journal: {cpu_ratio:.3f} (median of {ROUNDS}; no target)")
        for name, value in ratios.items():
            print(
                f"{mode}: {name}: {value:.3f} (target >= {TARGETS[name]}): journal {median['journal']:,.0f}, "
                f"no journal {median['no journal']:,.0f}, rollback {median['rollback']:,.0f} items/s "
                f"(median of {ROUNDS})"
            )
    report["targets"] = TARGETS
    report["met"] = all(report[m][name] >= TARGETS[name] for m in MODES for name in TARGETS)
    report["seconds"] = round(time.perf_counter() - started, 1)
    print(f"client CPU per worker process, at most: {report['client_cpu_per_process']} of one core")
    Path(RESULTS, "journal-latest.json").write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
