"""The run's capacity budgets, from the tables' capacity and the operator's limits.

Only the standard library: this module ships inside the Lambda package. The plan
derives the budgets before the run; on AWS each worker invocation derives them
again from the capacity the tables have when it starts (:func:`limits_now`), so a
redrive after pre-warm was put back paces to the capacity as it is then.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ddbnb.worker.tables import TableFacts

#: What a new on-demand table sustains at first, in units per second.
NEW_ON_DEMAND_WRITES, NEW_ON_DEMAND_READS = 4_000, 12_000


def table_rate(facts: TableFacts, kind: str) -> tuple[float, str]:
    """The table's own rate of ``kind`` ("read" or "write") units per second, and where it comes from."""
    if facts.billing_mode != "PAY_PER_REQUEST":
        return float(facts.read_capacity if kind == "read" else facts.write_capacity), "provisioned"
    cap = facts.max_read_units if kind == "read" else facts.max_write_units
    if cap:
        return float(cap), "its OnDemandThroughput cap"
    warm = facts.warm_read_units if kind == "read" else facts.warm_write_units
    if warm:
        return float(warm), "its warm throughput"
    new = NEW_ON_DEMAND_READS if kind == "read" else NEW_ON_DEMAND_WRITES
    return float(new), "what a new on-demand table sustains"


def capacity_limits(
    source: TableFacts, target: TableFacts, share: float, max_read: float, max_write: float
) -> tuple[float, float, list[str]]:
    """The run's read and write budgets in units per second (0: none), and why.

    With neither a share nor a cap, a table with a known capacity (provisioned,
    or an on-demand OnDemandThroughput cap) still paces the run to all of it:
    calls beyond it would only be throttled.
    """
    reasons = []
    budgets = []
    for kind, table, absolute in (("read", source, max_read), ("write", target, max_write)):
        rate, where = table_rate(table, kind)
        if absolute:
            budgets.append(float(absolute))
            reasons.append(f"{kind} limit {absolute:,.0f} units/s: max_{kind}_units")
        elif share and rate:
            budgets.append(max(1.0, rate * share))
            reasons.append(
                f"{kind} limit {max(1.0, rate * share):,.0f} units/s: capacity_share {share:g} of "
                f"{rate:,.0f} ({where} of {table.name!r})"
            )
        elif where in ("provisioned", "its OnDemandThroughput cap") and rate:
            budgets.append(rate)
            reasons.append(
                f"{kind} pace {rate:,.0f} units/s: no capacity_share, so all of {table.name!r}'s capacity "
                f"({where}; beyond it DynamoDB only throttles, and a capacity_share leaves room for the application)"
            )
        else:
            budgets.append(0.0)
    if not max_write:  # an absolute cap is the operator's word; otherwise the provisioned GSIs bound writes too
        budgets[1] = _index_bound(target, share, budgets[1], reasons)
    return budgets[0], budgets[1], reasons


def _index_bound(target: TableFacts, share: float, budget: float, reasons: list[str]) -> float:
    """The write budget within the same share of each provisioned GSI of ``target``: a write to the table
    may write each of them too, and a GSI out of capacity throttles the table's writes."""
    for index in target.indexes:
        if not index.write_capacity or target.billing_mode == "PAY_PER_REQUEST":
            continue
        bound = max(1.0, index.write_capacity * share) if share else float(index.write_capacity)
        if budget and bound >= budget:
            continue
        budget = bound
        of = f"capacity_share {share:g} of " if share else "all of "
        reasons.append(
            f"write limit {bound:,.0f} units/s: {of}GSI {index.name!r}'s {index.write_capacity:,} provisioned "
            f"write units (each write to {target.name!r} may write the index too; when the transform changes none "
            "of the attributes it holds, max_write_units lifts this)"
        )
    return budget


def budgets_now(event: Mapping[str, Any], source: TableFacts, target: TableFacts) -> tuple[float, float] | None:
    """A worker's budgets from the capacity the tables have now, when ``event`` carries the run's ``limits``
    (the aws engine); None otherwise (the event's own rates hold)."""
    settings = event.get("limits")
    return limits_now(settings, source, target) if settings else None


def limits_now(settings: Mapping[str, Any], source: TableFacts, target: TableFacts) -> tuple[float, float]:
    """One worker's read and write budgets from the event's ``limits`` and the tables as they are now.

    ``settings`` holds ``share``, ``max_read_units``, ``max_write_units`` and
    ``divide`` (the workers that run at once, which split the budgets).
    """
    read, write, _ = capacity_limits(
        source,
        target,
        float(settings.get("share") or 0),
        float(settings.get("max_read_units") or 0),
        float(settings.get("max_write_units") or 0),
    )
    divide = max(1, int(settings.get("divide") or 1))
    return read / divide, write / divide
