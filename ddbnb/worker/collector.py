"""The cyclic garbage collector, set for a process that does nothing but run segments.

Only the standard library: this module ships inside the Lambda package.

A page of items parsed from JSON is tens of thousands of dicts and lists that
refer to nothing but strings and each other, without a cycle among them; the
reference counts free them. At CPython's default first threshold (700
allocations) the collector still runs every few hundred of them and, as the
page lives on while it is written, walks each one again in every older
generation it reaches, along with every module and botocore model the process
holds. On the bench's items that doubled the CPU of parsing and
deserializing a page (ADR 0025). So a worker process, once it has started,
moves what it holds out of the collector's sight (:func:`gc.freeze`) and
collects the young generation every :data:`YOUNG_THRESHOLD` allocations.
Cyclic garbage (an exception and its traceback, say) is still collected,
later: at most a few megabytes of it wait.

Only processes that ddbnb owns call :func:`settle_collector`: the local
engine's workers and the Lambda. A notebook's kernel is the user's, and keeps
its own settings.
"""

from __future__ import annotations

import gc

#: Allocations between two collections of the youngest generation (CPython's default is 700).
YOUNG_THRESHOLD = 50_000

_settled = False


def settle_collector() -> None:
    """Freeze what the process holds now out of the collector's sight, and collect the young generation
    every :data:`YOUNG_THRESHOLD` allocations. Once a process: later calls change nothing (freezing again
    would keep garbage that waits for collection forever)."""
    global _settled
    if _settled:
        return
    _settled = True
    gc.collect()  # what is garbage now goes now, not into the frozen generation
    gc.freeze()
    young, middle, old = gc.get_threshold()
    if young and young < YOUNG_THRESHOLD:  # 0: the collector was turned off, and stays off
        gc.set_threshold(YOUNG_THRESHOLD, middle, old)
