"""Choose segments and concurrency for a migration, and say why."""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import boto3

from ddbnb.control.deploy import AWS_CONCURRENCY, stack_outputs
from ddbnb.exceptions import InvalidParameterError, StreamRequiredError
from ddbnb.progress import count_of
from ddbnb.worker import params
from ddbnb.worker.budgets import capacity_limits
from ddbnb.worker.clients import clear_errors
from ddbnb.worker.items import write_units
from ddbnb.worker.streams import Stream, stream_problems
from ddbnb.worker.tables import TableFacts, describe_table
from ddbnb.worker.transforms import load_transform, transform_digest

#: Bytes of table one segment should cover at most.
SEGMENT_BYTES = 64 * 1024 * 1024
#: Items one segment should cover at most. DynamoDB Local's segmented scan slows
#: down sharply as segments grow, a page costing it more the further into its
#: segment (ADR 0002: 8 segments of 12,500 items scan at 5,000 items/s, 32 of 3,100
#: at 12,000; ADR 0023: a re-run of 100,000 items in 68 segments is 1.2 times as fast
#: as in 34), and small segments balance the pool better. On AWS their size costs nothing.
SEGMENT_ITEMS = 1_500
#: Below this many items per segment, more segments only add start-up cost.
MIN_SEGMENT_ITEMS = 500
#: On the aws engine each segment is a child workflow and at least one Lambda
#: invocation: a segment should be worth that (a worker handles about 600
#: items/s, so one of 50,000 items takes a minute or two).
AWS_SEGMENT_ITEMS = 50_000
AWS_SEGMENT_BYTES = 256 * 1024 * 1024
#: Local processes beyond this stop helping on one machine.
MAX_LOCAL_CONCURRENCY = 8
#: A partition key is hot past this many items at least, whatever the table's (possibly stale) item count.
MIN_HOT_ITEMS = 100


@dataclass
class Plan:
    """A migration plan: what runs, where, and how it is split."""

    table: TableFacts
    transform: str
    engine: str
    total_segments: int
    max_concurrency: int
    write_mode: str = "conditional"
    rate_limit: float = 0.0
    destination: str | None = None
    version_attribute: str = ""
    destination_table: TableFacts | None = None
    read_units_per_s: float = 0.0
    write_units_per_s: float = 0.0
    page_size: int = 0
    stack_name: str = ""
    prewarm_read_units: int = 0
    prewarm_write_units: int = 0
    journal: bool = True
    capacity_share: float = 0.0
    max_read_units: float = 0.0
    max_write_units: float = 0.0
    split_hot_keys: bool = True
    hot_items: int = 0  # a partition key past this many items is cut into key ranges (0: never)
    chosen: tuple[str, ...] = ()  # the parameters the planner chose (given as 0)
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict of the plan."""
        return asdict(self)

    def settings(self) -> dict[str, Any]:
        """Every setting that decides what the run writes and how fast: what a run folder records of it."""
        return {
            "table": self.table.name,
            "destination": self.destination,
            "transform": self.transform,
            "transform_sha256": transform_digest(self.transform),
            "write_mode": self.write_mode,
            "version_attribute": self.version_attribute,
            "engine": self.engine,
            "total_segments": self.total_segments,
            "max_concurrency": self.max_concurrency,
            "rate_limit": self.rate_limit,
            "capacity_share": self.capacity_share,
            "max_read_units": self.max_read_units,
            "max_write_units": self.max_write_units,
            "prewarm_read_units": self.prewarm_read_units,
            "prewarm_write_units": self.prewarm_write_units,
            "stack_name": self.stack_name,
            "journal": self.journal,
            "split_hot_keys": self.split_hot_keys,
        }

    def events(self) -> list[dict[str, Any]]:
        """The segment events, one per segment (the Map items plus run settings)."""
        per_segment = self.rate_limit / self.max_concurrency if self.rate_limit else 0
        base: dict[str, Any] = {
            "table": self.table.name,
            "destination": self.destination,
            "total_segments": self.total_segments,
            "transform": self.transform,
            "write_mode": self.write_mode,
            "version_attribute": self.version_attribute,
            "rate_limit": per_segment,
            # The local engine shares one budget between its workers; on AWS each child gets its part.
            "read_units_per_s": self.read_units_per_s / (self.max_concurrency if self.engine == "aws" else 1),
            "write_units_per_s": self.write_units_per_s / (self.max_concurrency if self.engine == "aws" else 1),
            "page_size": self.page_size,
        }
        if self.hot_items:
            base["hot_items"] = self.hot_items
        if self.engine == "aws":  # each invocation derives its budget from the capacity as it is then
            base["limits"] = {
                "share": self.capacity_share,
                "max_read_units": self.max_read_units,
                "max_write_units": self.max_write_units,
                "divide": self.max_concurrency,
            }
        return [{**base, "segment": segment} for segment in range(self.total_segments)]

    @property
    def target_keys(self) -> dict[str, str]:
        """The key schema of the table written to (name: "S", "N" or "B")."""
        return (self.destination_table or self.table).key_schema

    @property
    def mode_note(self) -> str:
        """One line on what the write mode does to a table the application writes at the same time."""
        if self.write_mode == "conditional":
            guard = f"version attribute {self.version_attribute!r}" if self.version_attribute else "the values as read"
            return (
                f"write mode conditional (the default, safe on a live table): only changed attributes are written, "
                f"guarded by {guard}; concurrent changes are kept and the item is read again. write_mode='batch' "
                "is faster, but would overwrite what the application writes during the run and bring back what "
                "it deletes"
            )
        return (
            "write mode batch: fastest, but it writes whole items: it OVERWRITES what the application writes "
            "between the scan and the write, and brings back items it deletes. Only for a table nobody else "
            "writes during the run; otherwise use write_mode='conditional' (the default)"
        )

    def __str__(self) -> str:
        target = f" into {self.destination!r}" if self.destination else " in place"
        lines = [
            f"Migrate {self.table.name!r}{target} with {self.transform}",
            f"  table: ~{self.table.item_count:,} items, ~{self.table.size_bytes / 1e6:,.1f} MB, "
            f"{self.table.billing_mode}, key {', '.join(self.table.key_names)}",
            f"  engine {self.engine}: {count_of(self.total_segments, 'segment')}, "
            f"{self.max_concurrency} at a time, write mode {self.write_mode}, "
            f"rate limit {'none' if not self.rate_limit else f'{self.rate_limit:,.0f} items/s'}",
            f"  capacity: {units_text(self.read_units_per_s)} read and "
            f"{units_text(self.write_units_per_s)} write units/s for the whole run"
            + (f", pages of at most {self.page_size:,} items" if self.page_size else ""),
        ]
        if self.destination_table is not None:
            keys = ", ".join(f"{k} ({t})" for k, t in self.destination_table.key_schema.items())
            lines.append(f"  destination {self.destination!r}: key {keys}")
        lines += [f"  - {reason}" for reason in self.reasons]
        lines.append(f"  - {self.mode_note}")
        lines.append(f"  - {self.journal_note}")
        return "\n".join(lines)

    @property
    def journal_note(self) -> str:
        """One line on the journal: what it keeps, and what it makes possible."""
        if not self.journal:
            return "journal off: nothing records what the run changes, so ddbnb.rollback cannot undo it"
        kept = "each written key and a digest" if self.destination else "each changed item's before-image"
        return (
            f"journal on: {kept} is saved before its page is written (run_dir/journal, or the results bucket "
            "on aws); ddbnb.rollback(run_dir) undoes exactly this run's writes"
        )

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(str(self))


def units_text(rate: float) -> str:
    """A capacity budget as the plan says it: the units per second, or that there is no limit."""
    return f"{rate:,.0f}" if rate else "no limit on"


def after_prewarm(facts: TableFacts, read_units: int, write_units: int) -> TableFacts:
    """The table as the run meets it once pre-warm raised it to at least ``read_units`` / ``write_units``."""
    if facts.billing_mode == "PAY_PER_REQUEST":
        return replace(
            facts,
            warm_read_units=max(facts.warm_read_units, read_units),
            warm_write_units=max(facts.warm_write_units, write_units),
        )
    indexes = tuple(  # pre-warm raises the written table's provisioned GSIs' writes with it
        replace(index, write_capacity=max(index.write_capacity, write_units)) if index.write_capacity else index
        for index in facts.indexes
    )
    return replace(
        facts,
        read_capacity=max(facts.read_capacity, read_units),
        write_capacity=max(facts.write_capacity, write_units),
        indexes=indexes,
    )


def prewarm_reasons(source: TableFacts, target: TableFacts, read_units: int, write_units: int) -> list[str]:
    """What pre-warm will do to each table, said before anything runs."""
    reasons = []
    for table, kind, units in ((source, "read", read_units), (target, "write", write_units)):
        if not units:
            continue
        if table.billing_mode == "PAY_PER_REQUEST":
            reasons.append(
                f"pre-warm: {table.name!r} is on demand, so its warm throughput goes up to at least {units:,} "
                f"{kind} units/s (and its GSIs' writes with it): this cannot be lowered again, and the raise is "
                "billed once (see DynamoDB pricing)"
            )
        else:
            now = table.read_capacity if kind == "read" else table.write_capacity
            reasons.append(
                f"pre-warm: {table.name!r} provisioned {kind} units go from {now:,} to {max(now, units):,} "
                + ("(its provisioned GSIs' writes too) " if kind == "write" else "")
                + "for the run, billed by the hour while raised, and are put back however the run ends"
            )
    return reasons


def page_size_for(facts: TableFacts, read: float, write: float, concurrency: int, seconds: float = 10.0) -> int:
    """Items per page so that one worker's page takes about ``seconds`` of its share of the budget (0: no cap)."""
    if not read and not write:
        return 0
    item_bytes = facts.average_item_bytes or 1024.0
    pages = []
    if read:
        pages.append(read / concurrency * seconds / max(item_bytes / 4096 * 0.5, 0.001))
    if write:
        pages.append(write / concurrency * seconds / write_units(item_bytes))
    size = int(min(pages))
    return max(1, size) if size < 10_000 else 0


def choose_concurrency(engine: str) -> tuple[int, str]:
    """How many segments run at once by default on ``engine``, and why."""
    if engine == "aws":
        return AWS_CONCURRENCY, f"max_concurrency {AWS_CONCURRENCY}: within Lambda's default of 1,000 concurrent runs"
    cpus = os.cpu_count() or 2
    concurrency = min(MAX_LOCAL_CONCURRENCY, 2 * cpus)
    return concurrency, (
        f"max_concurrency {concurrency}: two processes per core ({cpus} here); a worker waits on "
        "DynamoDB most of the time, so one per core leaves the machine idle"
    )


def choose_segments(facts: TableFacts, engine: str, max_concurrency: int = 0) -> tuple[int, str]:
    """How many parallel-scan segments ``engine`` cuts the table into, and why.

    Both engines follow the table's size. The local engine cuts small segments
    (DynamoDB Local and a process pool both like them) and at least two per
    process once the table is big enough; the aws engine cuts segments worth a
    child workflow each.
    """
    items, size = facts.item_count, facts.size_bytes
    if engine == "aws":
        count = max(1, math.ceil(items / AWS_SEGMENT_ITEMS), math.ceil(size / AWS_SEGMENT_BYTES))
        return min(count, params.MAX_TOTAL_SEGMENTS), (
            f"total_segments {count}: one per {AWS_SEGMENT_ITEMS:,} items or {AWS_SEGMENT_BYTES // 2**20} MiB "
            f"of table (~{items:,} items, ~{size / 2**20:,.1f} MiB), so each child workflow has a minute "
            "or more of work"
        )
    concurrency = max_concurrency or choose_concurrency(engine)[0]
    by_size = max(math.ceil(items / SEGMENT_ITEMS), math.ceil(size / SEGMENT_BYTES))
    balance = min(2 * concurrency, math.ceil(items / MIN_SEGMENT_ITEMS))
    count = max(1, by_size, balance)
    return min(count, params.MAX_TOTAL_SEGMENTS), (
        f"total_segments {count}: one per {SEGMENT_ITEMS:,} items or {SEGMENT_BYTES // 2**20} MiB of table "
        f"({by_size} for ~{items:,} items), and at least 2 per process to balance uneven segments "
        f"while each keeps {MIN_SEGMENT_ITEMS:,} items or more ({balance})"
    )


@clear_errors
def choose_hot_items(facts: TableFacts, engine: str, total_segments: int, split: bool) -> tuple[int, str]:
    """How many items of one partition key make it hot (0: none are split), and why."""
    if not split:
        return 0, "hot keys are not split (split_hot_keys=False): one key's items stay in one segment"
    if len(facts.key_names) < 2:
        return 0, ""  # without a sort key a partition key is one item
    per_segment = math.ceil(facts.item_count / total_segments)
    hot = max(MIN_HOT_ITEMS, math.ceil(per_segment / 2))
    when = " (on aws, in a second pass of the Map once the scan segments are done)" if engine == "aws" else ""
    return hot, (
        f"hot keys split: a segment that meets a partition key with more than {hot:,} items (half a segment's) "
        f"reads the rest of it once, keys only, and cuts it into sort-key ranges of {2 * hot:,} items, each run "
        f"as a segment of its own{when}"
    )


def plan_migration(
    table_name: str,
    transform: str,
    *,
    destination_table_name: str | None = None,
    engine: str = "local",
    total_segments: int = 0,
    max_concurrency: int = 0,
    write_mode: str = "conditional",
    version_attribute: str = "",
    rate_limit: float = 0,
    capacity_share: float = 0,
    max_read_units: float = 0,
    max_write_units: float = 0,
    stack_name: str = "",
    prewarm_read_units: int = 0,
    prewarm_write_units: int = 0,
    journal: bool = True,
    follow: bool = False,
    split_hot_keys: bool = True,
    boto3_session: boto3.Session | None = None,
) -> Plan:
    """Validate the parameters and plan a migration of ``table_name``.

    ``total_segments`` and ``max_concurrency`` of 0 are chosen from the table
    size and the machine; the plan's ``reasons`` say how. ``write_mode`` is
    ``"conditional"`` (the default, for live tables: only changed attributes,
    guarded by the values as read, or by ``version_attribute`` which is
    incremented) or ``"batch"`` (whole items, fastest: only for tables nobody
    else writes during the run, whose writes it would overwrite).
    ``capacity_share`` (0 to 1) limits the run to that share of the tables'
    capacity (provisioned units; on demand, the OnDemandThroughput cap, else the
    warm throughput); ``max_read_units`` / ``max_write_units`` are absolute caps
    per second and win when given. The limits hold for the whole run, count the
    units DynamoDB reports, and slow down further on throttling. The aws engine runs on
    the stack ``stack_name`` that 01_deploy created; a missing stack raises
    StackNotFoundError here, before anything runs. ``prewarm_read_units`` /
    ``prewarm_write_units`` (aws engine) raise the source's reads and the written
    table's writes (with its provisioned GSIs) to at least that many units for the
    run: provisioned capacity is put back however the run ends; an on-demand
    table's warm throughput cannot be lowered again (the plan says so). The
    budgets count the raised capacity. ``journal`` (on by default) saves each
    item's before-image before its page is written, so ``ddbnb.rollback`` can
    undo the run; ``False`` saves the time and storage it costs. ``follow=True``
    says the run will be followed until cutover (``ddbnb.follow``): the source
    must have a stream on (and, for a copy, one that carries old images), or
    StreamRequiredError names the call that turns one on. Whenever the source
    has a stream, every run records its position before the first read, so any
    run can be followed later. ``split_hot_keys`` (on by default)
    lets a segment that meets a partition key holding more than half a
    segment's items cut the rest of that key into sort-key ranges, each run as a
    unit of its own (a parallel scan cannot split one key: without this, one key
    holding half the table makes one segment take half the run); on the aws
    engine the ranges run in a second pass of the Map. Nothing is written.
    """
    params.check_table_name("table_name", table_name)
    params.check_choice("engine", engine, params.ENGINES)
    params.check_choice("write_mode", write_mode, params.WRITE_MODES)
    params.check_int("total_segments", total_segments, 0, params.MAX_TOTAL_SEGMENTS)
    rate, share = params.check_limits(max_concurrency, rate_limit, capacity_share, max_read_units, max_write_units)
    params.check_attribute("version_attribute", version_attribute)
    params.check_int("prewarm_read_units", prewarm_read_units, 0)
    params.check_int("prewarm_write_units", prewarm_write_units, 0)
    params.check_bool("journal", journal)
    params.check_bool("follow", follow)
    params.check_bool("split_hot_keys", split_hot_keys)
    if (prewarm_read_units or prewarm_write_units) and engine != "aws":
        raise InvalidParameterError(
            "prewarm_write_units" if prewarm_write_units else "prewarm_read_units",
            prewarm_write_units or prewarm_read_units,
            "0 unless engine='aws' (the local engine paces to the capacity the table has)",
        )
    if version_attribute and write_mode != "conditional":
        raise InvalidParameterError(
            "version_attribute", version_attribute, "'' unless write_mode='conditional' (batch writes take no guard)"
        )
    if destination_table_name:
        params.check_table_name("destination_table_name", destination_table_name)
    if engine == "aws" and not stack_name:
        raise InvalidParameterError("stack_name", stack_name, "the stack 01_deploy created, for engine='aws'")
    load_transform(transform)
    facts = describe_table(table_name, boto3_session)
    destination = (
        describe_table(destination_table_name, boto3_session, parameter="destination_table_name")
        if destination_table_name
        else None
    )
    stream = Stream(facts.name, facts.stream_arn, facts.stream_view_type)
    problem = stream_problems(facts.name, stream, copy=destination is not None)
    if follow and problem:
        raise StreamRequiredError(facts.name, *problem)
    if version_attribute in facts.key_names:
        raise InvalidParameterError("version_attribute", version_attribute, "an attribute that is not part of the key")
    reserved = 0
    if engine == "aws":
        outputs = stack_outputs(stack_name, boto3_session)  # StackNotFoundError names 01_deploy
        reserved = int(outputs.get("ReservedConcurrency") or 0)
    reasons: list[str] = []
    chosen = tuple(
        name for name, value in (("total_segments", total_segments), ("max_concurrency", max_concurrency)) if not value
    )
    if not total_segments:
        total_segments, why = choose_segments(facts, engine, max_concurrency)
        reasons.append(why)
    if not max_concurrency:
        max_concurrency, why = choose_concurrency(engine)
        reasons.append(why)
    if reserved and max_concurrency > reserved:
        reasons.append(f"max_concurrency lowered to {reserved}: the stack reserves (and allows) {reserved} workers")
        max_concurrency = reserved
    if max_concurrency > total_segments:
        reasons.append(f"max_concurrency lowered to {total_segments}: no more at a time than there are segments")
        max_concurrency = total_segments
    target = destination or facts
    reasons += prewarm_reasons(facts, target, prewarm_read_units, prewarm_write_units)
    raised_source = after_prewarm(facts, prewarm_read_units, 0 if destination else prewarm_write_units)
    raised_target = after_prewarm(target, 0, prewarm_write_units) if destination else raised_source
    read_budget, write_budget, limits_why = capacity_limits(
        raised_source, raised_target, share, float(max_read_units), float(max_write_units)
    )
    reasons += limits_why
    hot_items, why = choose_hot_items(facts, engine, total_segments, split_hot_keys)
    if why:
        reasons.append(why)
    if not problem:
        reasons.append(
            f"stream {facts.stream_view_type}: its position is recorded before the first read, so "
            "ddbnb.follow(run_dir) can replay every change made during and after the run; DynamoDB keeps "
            "records 24 hours from the run's start, so the run and the first follow must end within a day"
        )
    return Plan(
        table=facts,
        transform=transform,
        engine=engine,
        total_segments=total_segments,
        max_concurrency=max_concurrency,
        write_mode=write_mode,
        rate_limit=rate,
        destination=destination_table_name or None,
        version_attribute=version_attribute,
        destination_table=destination,
        read_units_per_s=read_budget,
        write_units_per_s=write_budget,
        page_size=page_size_for(facts, read_budget, write_budget, max_concurrency),
        stack_name=stack_name,
        prewarm_read_units=prewarm_read_units,
        prewarm_write_units=prewarm_write_units,
        journal=journal,
        capacity_share=share,
        max_read_units=float(max_read_units),
        max_write_units=float(max_write_units),
        split_hot_keys=split_hot_keys,
        hot_items=hot_items,
        chosen=chosen,
        reasons=reasons,
    )
