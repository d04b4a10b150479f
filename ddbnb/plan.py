"""Choose segments and concurrency for a migration, and say why."""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from typing import Any

import boto3

from ddbnb import params
from ddbnb.exceptions import InvalidParameterError
from ddbnb.tables import TableFacts, describe_table
from ddbnb.transforms import load_transform

#: Bytes of table one segment should cover at most.
SEGMENT_BYTES = 64 * 1024 * 1024
#: Items one segment should cover at most. DynamoDB Local's segmented scan slows
#: down sharply as segments grow (bench: 8 segments of 12,500 items scan at 5,000
#: items/s, 32 of 3,100 at 12,000), and small segments balance the pool better.
SEGMENT_ITEMS = 3_000
#: Children the aws engine runs at once unless told (Lambda allows 1,000 by default).
AWS_CONCURRENCY = 500
#: Local processes beyond this stop helping on one machine.
MAX_LOCAL_CONCURRENCY = 8


@dataclass
class Plan:
    """A migration plan: what runs, where, and how it is split."""

    table: TableFacts
    transform: str
    engine: str
    total_segments: int
    max_concurrency: int
    write_mode: str = "batch"
    rate_limit: float = 0.0
    destination: str | None = None
    stack_name: str = ""
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict of the plan."""
        return asdict(self)

    def events(self) -> list[dict[str, Any]]:
        """The segment events, one per segment (the Map items plus run settings)."""
        per_segment = self.rate_limit / self.max_concurrency if self.rate_limit else 0
        base = {
            "table": self.table.name,
            "destination": self.destination,
            "total_segments": self.total_segments,
            "transform": self.transform,
            "write_mode": self.write_mode,
            "rate_limit": per_segment,
        }
        return [{**base, "segment": segment} for segment in range(self.total_segments)]

    def __str__(self) -> str:
        target = f" into {self.destination!r}" if self.destination else " in place"
        lines = [
            f"Migrate {self.table.name!r}{target} with {self.transform}",
            f"  table: ~{self.table.item_count:,} items, ~{self.table.size_bytes / 1e6:,.1f} MB, "
            f"{self.table.billing_mode}, key {', '.join(self.table.key_names)}",
            f"  engine {self.engine}: {self.total_segments:,} segments, "
            f"{self.max_concurrency} at a time, write mode {self.write_mode}, "
            f"rate limit {'none' if not self.rate_limit else f'{self.rate_limit:,.0f} items/s'}",
        ]
        lines += [f"  - {reason}" for reason in self.reasons]
        return "\n".join(lines)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(str(self))


def plan_migration(
    table_name: str,
    transform: str,
    *,
    destination_table_name: str | None = None,
    engine: str = "local",
    total_segments: int = 0,
    max_concurrency: int = 0,
    write_mode: str = "batch",
    rate_limit: float = 0,
    stack_name: str = "",
    boto3_session: boto3.Session | None = None,
) -> Plan:
    """Validate the parameters and plan a migration of ``table_name``.

    ``total_segments`` and ``max_concurrency`` of 0 are chosen from the table
    size and the machine; the plan's ``reasons`` say how. The aws engine runs on
    the stack ``stack_name`` that 01_deploy created. Nothing is written.
    """
    params.check_name("table_name", table_name)
    params.check_choice("engine", engine, params.ENGINES)
    params.check_choice("write_mode", write_mode, params.WRITE_MODES)
    params.check_int("total_segments", total_segments, 0, params.MAX_TOTAL_SEGMENTS)
    params.check_int("max_concurrency", max_concurrency, 0, 10_000)
    rate = params.check_rate("rate_limit", rate_limit)
    if destination_table_name:
        params.check_name("destination_table_name", destination_table_name)
    if engine == "aws" and not stack_name:
        raise InvalidParameterError("stack_name", stack_name, "the stack 01_deploy created, for engine='aws'")
    load_transform(transform)
    facts = describe_table(table_name, boto3_session)
    if destination_table_name:
        describe_table(destination_table_name, boto3_session)
    reasons: list[str] = []
    if not max_concurrency and engine == "aws":
        max_concurrency = AWS_CONCURRENCY
        reasons.append(f"max_concurrency {max_concurrency}: within Lambda's default of 1,000 concurrent runs")
    if not max_concurrency:
        cpus = os.cpu_count() or 2
        max_concurrency = min(MAX_LOCAL_CONCURRENCY, 2 * cpus)
        reasons.append(
            f"max_concurrency {max_concurrency}: two processes per core ({cpus} here); a worker waits on "
            "DynamoDB most of the time, so one per core leaves the machine idle"
        )
    if not total_segments:
        by_size = max(math.ceil(facts.size_bytes / SEGMENT_BYTES), math.ceil(facts.item_count / SEGMENT_ITEMS))
        total_segments = max(1, min(params.MAX_TOTAL_SEGMENTS, max(2 * max_concurrency, by_size)))
        reasons.append(
            f"total_segments {total_segments}: the larger of 2 per process (balances uneven segments) and "
            f"one per {SEGMENT_ITEMS:,} items or {SEGMENT_BYTES // 2**20} MiB of table ({by_size})"
        )
    if max_concurrency > total_segments:
        reasons.append(f"max_concurrency lowered to {total_segments}: no more processes than segments")
        max_concurrency = total_segments
    return Plan(
        table=facts,
        transform=transform,
        engine=engine,
        total_segments=total_segments,
        max_concurrency=max_concurrency,
        write_mode=write_mode,
        rate_limit=rate,
        destination=destination_table_name or None,
        stack_name=stack_name,
        reasons=reasons,
    )
