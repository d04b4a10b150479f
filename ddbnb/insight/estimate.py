"""Read and write units, duration and cost of a migration, from table facts and a dry run's sample.

Prices are constants with their date and region; check the AWS pricing pages
before relying on them for another region or a later date.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from ddbnb.progress import count_of, format_duration
from ddbnb.worker import items
from ddbnb.worker.budgets import NEW_ON_DEMAND_READS, NEW_ON_DEMAND_WRITES

#: us-east-1 list prices as published in 2025 (on-demand after the November 2024 price cut).
PRICES_AS_OF = "2025, us-east-1"
ON_DEMAND_PER_MILLION_WRITES = 0.625
ON_DEMAND_PER_MILLION_READS = 0.125
PROVISIONED_WCU_HOUR = 0.00065
PROVISIONED_RCU_HOUR = 0.00013
LAMBDA_ARM_GB_SECOND = 0.0000133334
LAMBDA_PER_MILLION_REQUESTS = 0.20
STEP_FUNCTIONS_PER_THOUSAND_TRANSITIONS = 0.025
S3_PER_THOUSAND_PUTS = 0.005
S3_GB_MONTH = 0.023
#: A Scan page holds at most 1 MB: the journal keeps one object per page that writes.
SCAN_PAGE_BYTES = 1_000_000
#: Items one worker Lambda handles per second, for the GB-seconds estimate (measured locally: ~600 a process).
LAMBDA_ITEMS_PER_SECOND = 600
#: State transitions per child workflow invocation, and per execution outside the Map.
TRANSITIONS_PER_INVOCATION, TRANSITIONS_PER_EXECUTION = 3, 12


@dataclass(frozen=True)
class Estimate:
    """What a migration will consume and cost."""

    items: int
    changed_share: float
    read_units: float
    write_units: float
    read_rate: float
    write_rate: float
    duration_s: float
    on_demand_cost: float
    provisioned_cost: float
    lambda_gb_seconds: float
    state_transitions: int
    aws_engine_cost: float
    aws_segments: int = 0
    journal_bytes: float = 0.0
    journal_objects: int = 0
    journal_cost: float = 0.0
    billing_mode: str = "PAY_PER_REQUEST"
    transform_ms: float = 0.0  # the transform's time per item, measured on the sample
    workers: int = 1
    bound_by: str = "writes"  # what sets the duration: writes, reads or the transform
    index_write_units: float = 0.0  # what the writes cost the written table's GSIs (in write_units' terms)
    prices: str = PRICES_AS_OF

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict."""
        return asdict(self)

    def __str__(self) -> str:
        return (
            f"Estimate for ~{self.items:,} items ({self.changed_share:.0%} written): "
            f"{self.read_units:,.0f} read units, {self.write_units:,.0f} write units{self.index_note}, "
            f"~{format_duration(self.duration_s)} ({self.pace_note}); {self.cost_note}; "
            f"aws engine ({count_of(self.aws_segments, 'segment')}) adds {self.lambda_gb_seconds:,.0f} Lambda GB-s "
            f"and {self.state_transitions:,} state transitions (${self.aws_engine_cost:,.2f}). "
            f"{self.journal_note} Prices: {self.prices}."
        )

    @property
    def index_note(self) -> str:
        """What the writes cost the GSIs ("" when nothing)."""
        return f" (+{self.index_write_units:,.0f} on GSIs)" if self.index_write_units else ""

    @property
    def pace_note(self) -> str:
        """What sets the duration."""
        transform = (
            f"the transform takes {self.transform_ms:,.2f} ms an item, measured on the sample, on "
            f"{count_of(self.workers, 'worker')}"
        )
        if self.bound_by == "transform":
            return transform
        rate = (
            f"{self.write_rate:,.0f} write units/s"
            if self.bound_by == "writes"
            else f"{self.read_rate:,.0f} read units/s"
        )
        return f"at {rate}" + (f"; {transform}" if self.transform_ms else "")

    @property
    def cost_note(self) -> str:
        """What the run costs, by the table's billing mode."""
        if self.billing_mode == "PAY_PER_REQUEST":
            return f"on demand, it costs ${self.on_demand_cost:,.2f} in requests"
        return (
            "provisioned, it uses capacity already paid for by the hour (no request charges); "
            f"raising the table to this pace would cost about ${self.provisioned_cost:,.2f}"
        )

    @property
    def journal_note(self) -> str:
        """One sentence on the journal's size and cost."""
        if not self.journal_objects:
            return "The journal holds nothing: the run writes nothing."
        return (
            f"The journal (for rollback; journal=False in 03 skips it) takes ~{self.journal_bytes / 1e6:,.1f} MB "
            f"in ~{self.journal_objects:,} objects: on the aws engine ${self.journal_cost:,.2f} of S3 puts and a "
            "month of storage; local, disk space in run_dir."
        )


def estimate(
    *,
    item_count: int,
    average_item_bytes: float,
    written_share: float,
    average_written_bytes: float,
    billing_mode: str,
    read_capacity: int,
    write_capacity: int,
    aws_segments: int,
    read_limit: float = 0.0,
    write_limit: float = 0.0,
    lambda_memory_mb: int = 1024,
    journal_entry_bytes: float = 0.0,
    transform_ms: float = 0.0,
    workers: int = 1,
    index_write_units_per_item: float = 0.0,
) -> Estimate:
    """Estimate units, duration and cost.

    A parallel scan reads with eventual consistency: half a unit per 4 KB. Each
    written item costs one unit per started KB; unchanged items cost nothing.
    The write rate is the table's provisioned capacity, or what a new on-demand
    table sustains at first, or the run's limit when that is lower. The journal
    keeps ``journal_entry_bytes`` (compressed, as measured on the sample) per
    written item, in one object per Scan page that writes. A transform that
    takes ``transform_ms`` per item (timed on the sample) runs on ``workers``
    processes at once: when that is slower than the table, it sets the pace.
    ``index_write_units_per_item`` (from the sample) is what the writes cost the
    written table's GSIs; on demand it is billed like the table's writes.
    """
    read_units = item_count * average_item_bytes / 4096 * 0.5
    writes = item_count * written_share
    write_units = writes * items.write_units(average_written_bytes)
    on_demand = billing_mode == "PAY_PER_REQUEST"
    write_rate = float(NEW_ON_DEMAND_WRITES if on_demand else max(write_capacity, 1))
    read_rate = float(NEW_ON_DEMAND_READS if on_demand else max(read_capacity, 1))
    if write_limit:  # the run's own limit (capacity_share or max_write_units) sets the pace
        write_rate = min(write_rate, write_limit)
    if read_limit:
        read_rate = min(read_rate, read_limit)
    paces = {
        "writes": write_units / write_rate,
        "reads": read_units / read_rate,
        "transform": item_count * transform_ms / 1000 / max(workers, 1),
    }
    bound_by = max(paces, key=lambda name: paces[name])
    duration = paces[bound_by]
    hours = duration / 3600
    provisioned = (write_rate * PROVISIONED_WCU_HOUR + read_rate * PROVISIONED_RCU_HOUR) * max(hours, 1)
    gb_seconds = item_count / LAMBDA_ITEMS_PER_SECOND * lambda_memory_mb / 1024
    invocations = max(aws_segments, math.ceil(item_count / (LAMBDA_ITEMS_PER_SECOND * 840)))
    transitions = invocations * TRANSITIONS_PER_INVOCATION + TRANSITIONS_PER_EXECUTION
    aws_cost = (
        gb_seconds * LAMBDA_ARM_GB_SECOND
        + invocations / 1e6 * LAMBDA_PER_MILLION_REQUESTS
        + transitions / 1000 * STEP_FUNCTIONS_PER_THOUSAND_TRANSITIONS
    )
    pages = math.ceil(item_count * average_item_bytes / SCAN_PAGE_BYTES)
    journal_objects = min(max(pages, aws_segments), math.ceil(writes)) if writes and journal_entry_bytes else 0
    journal_bytes = writes * journal_entry_bytes
    journal_cost = journal_objects / 1000 * S3_PER_THOUSAND_PUTS + journal_bytes / 1e9 * S3_GB_MONTH
    return Estimate(
        items=item_count,
        changed_share=written_share,
        read_units=read_units,
        write_units=write_units,
        read_rate=read_rate,
        write_rate=write_rate,
        duration_s=duration,
        on_demand_cost=read_units / 1e6 * ON_DEMAND_PER_MILLION_READS
        + (write_units + item_count * index_write_units_per_item) / 1e6 * ON_DEMAND_PER_MILLION_WRITES,
        provisioned_cost=provisioned,
        lambda_gb_seconds=gb_seconds,
        state_transitions=transitions,
        aws_engine_cost=aws_cost,
        aws_segments=aws_segments,
        journal_bytes=journal_bytes,
        journal_objects=journal_objects,
        journal_cost=journal_cost,
        billing_mode=billing_mode,
        transform_ms=transform_ms,
        workers=workers,
        bound_by=bound_by,
        index_write_units=item_count * index_write_units_per_item,
    )
