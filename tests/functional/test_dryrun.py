"""The dry run: findings for every rule, spread and cost of the sample, plan, estimate, verdict."""

from __future__ import annotations

import itertools
import json

import pytest

import ddbnb
from tests.conftest import scan_all, simple_item, spec

RULES = {
    "raise": "raised",
    "rekey": "key_changed",
    "huge": "too_large",
    "near": "near_limit",
    "float": "invalid_type",
    "clock": "not_idempotent",
}


def test_each_rule_is_found_with_the_item_key_and_the_fix(make_table, dynamodb, tmp_path):
    kinds = [*RULES, "delete", "keep", "keep"]
    table = make_table([simple_item(i, kind) for i, kind in enumerate(kinds)])
    before = scan_all(dynamodb, table)
    report = ddbnb.dry_run(table, spec("break_rules"), 50, run_dir=tmp_path)
    assert scan_all(dynamodb, table) == before  # nothing written
    found = {f["rule"]: f for f in report.findings}
    # the delete: a hint, not an item's fault; no stream: nothing written meanwhile could be replayed
    assert set(found) == {*RULES.values(), "deletes_without_version", "stream_off"}
    assert (
        found["deletes_without_version"]["key"] == {}
        and "version_attribute" in found["deletes_without_version"]["message"]
    )
    for i, kind in enumerate(kinds[: len(RULES)]):
        finding = found[RULES[kind]]
        assert finding["key"] == {"pk": f"p{i % 17:02d}", "sk": f"s{i:06d}"}
        assert finding["message"]
    assert "destination_table_name" in found["key_changed"]["message"]
    assert "Decimal" in found["invalid_type"]["message"]
    assert "StreamEnabled" in found["stream_off"]["message"] and found["stream_off"]["key"] == {}
    assert (
        "applies it twice" in found["not_idempotent"]["message"]
        and "allow_non_idempotent=True" in found["not_idempotent"]["message"]
    )
    assert report.counts == {"changed": 4, "unchanged": 0, "deleted": 1, "failed": 4}
    assert not report.safe and report.verdict.startswith("NOT SAFE")
    saved = json.loads((tmp_path / "dry_run.json").read_text())
    assert {"findings", "plan", "estimate"} <= set(saved)
    assert {f["rule"] for f in saved["findings"]} == set(found)


def test_a_clean_transform_is_safe_with_plan_and_estimate(make_table):
    table = make_table([simple_item(i, "change", pad=900) for i in range(300)])
    report = ddbnb.dry_run(table, spec("set_flag"), 100)
    assert report.safe and report.verdict.startswith("Safe to run")
    assert report.counts == {"changed": 100, "unchanged": 0, "deleted": 0, "failed": 0}
    assert report.plan.total_segments >= 1 and report.plan.table.name == table
    estimate = report.estimate
    assert estimate.items == 300 and estimate.changed_share == 1.0
    assert estimate.write_units == 300  # about 1 KB each: one unit per item
    assert 0 < estimate.read_units < 300 and estimate.on_demand_cost > 0 and estimate.state_transitions > 0
    assert "2025, us-east-1" in str(report)
    # The journal keeps each before-image (about 1 KB here, compressed) in one object per page that writes.
    assert 0 < estimate.journal_bytes < 300 * 1_000 and estimate.journal_objects >= 1 and estimate.journal_cost > 0
    assert "The journal (for rollback; journal=False in 03 skips it) takes" in str(report)
    assert set(report.summary()["path"]) == {"flag"}
    assert "background-color: #e6f4ea" in report.styled().to_html()  # "added" rows are green


def test_the_sample_is_spread_reproducible_and_cheap(make_table, dynamodb):
    table = make_table([{**simple_item(i), "pk": {"S": f"user{i:05d}"}} for i in range(4000)])
    first = ddbnb.dry_run(table, spec("set_flag"), 100, seed=7)
    again = ddbnb.dry_run(table, spec("set_flag"), 100, seed=7)
    other = ddbnb.dry_run(table, spec("set_flag"), 100, seed=8)
    keys = [c["key"] for c in first.changes]
    assert keys == [c["key"] for c in again.changes]
    assert keys != [c["key"] for c in other.changes]
    assert first.sampled == 100
    assert first.items_read <= 3 * 100
    # Where the sampled items sit in the table's scan order: all over it, not one run of neighbours.
    order = {json.dumps({"pk": pk, "sk": sk}): n for n, (pk, sk) in enumerate(scan_all(dynamodb, table))}
    positions = sorted(order[key] for key in keys)
    assert len({p * 10 // 4000 for p in positions}) >= 8  # most tenths of the table
    assert max(b - a for a, b in itertools.pairwise(positions)) < 4000 / 4


def test_a_table_of_few_partition_keys_is_still_sampled_across_them_in_few_reads(make_table, dynamodb):
    from ddbnb.insight.sample import sample_items

    # 2,000 items under 40 partition keys: segments cut by item count are nearly all empty.
    table = make_table([{**simple_item(i), "pk": {"S": f"tenant{i % 40:02d}"}} for i in range(2000)])
    calls = []

    class Counting:  # the real client; counts the Scans the sample sends
        def scan(self, **kwargs):
            calls.append(kwargs)
            return dynamodb.scan(**kwargs)

    stats: dict[str, int] = {}
    found = sample_items(Counting(), table, 25, item_count=2000, key_names=("pk", "sk"), seed=3, stats=stats)
    assert len(found) == 25
    assert len({item["pk"]["S"] for item in found}) >= 15  # across the keys, not one run from the table's start
    assert len(calls) <= 2 * 25 and stats["items_read"] <= 2 * 25


def test_point_in_time_recovery_off_is_a_finding_with_the_command_that_turns_it_on(make_table, session):
    from botocore.awsrequest import AWSResponse

    table = make_table([simple_item(i) for i in range(20)])
    # DynamoDB Local has no backups (UnknownOperationException): the dry run cannot tell, and says nothing.
    quiet = ddbnb.dry_run(table, spec("set_flag"), 20, boto3_session=session)
    assert not [f for f in quiet.findings if f["rule"] == "pitr_off"] and quiet.safe
    status = {"value": "DISABLED"}

    def backups(**_: object) -> tuple[AWSResponse, dict[str, object]]:  # what DynamoDB Local cannot answer
        description = {"PointInTimeRecoveryDescription": {"PointInTimeRecoveryStatus": status["value"]}}
        return AWSResponse("", 200, {}, None), {"ContinuousBackupsDescription": description}

    session.events.register("before-call.dynamodb.DescribeContinuousBackups", backups)
    report = ddbnb.dry_run(table, spec("set_flag"), 20, boto3_session=session)
    (finding,) = [f for f in report.findings if f["rule"] == "pitr_off"]
    assert (
        f"--table-name {table} --point-in-time-recovery-specification PointInTimeRecoveryEnabled=true"
        in (finding["message"])
    )
    assert report.safe  # a warning, not a blocker
    status["value"] = "ENABLED"
    again = ddbnb.dry_run(table, spec("set_flag"), 20, boto3_session=session).findings
    assert [f["rule"] for f in again] == ["stream_off"]  # the table has no stream: the other warning


def test_the_estimate_times_the_transform_and_a_slow_one_sets_the_pace(make_table, tmp_path):
    slow = tmp_path / "slow.py"
    slow.write_text("import time\n\ndef fn(item):\n    time.sleep(0.02)\n    item['flag'] = 'v2'\n    return item\n")
    table = make_table([simple_item(i) for i in range(200)])
    report = ddbnb.dry_run(table, f"{slow}:fn", 20)
    assert report.estimate.transform_ms >= 20 and report.estimate.bound_by == "transform"
    workers = report.plan.max_concurrency
    assert report.estimate.duration_s == pytest.approx(200 * report.estimate.transform_ms / 1000 / workers)
    assert "the transform takes" in str(report.estimate) and "on demand, it costs" in str(report.estimate)


def test_a_transform_that_is_not_idempotent_is_not_safe_unless_allowed(make_table):
    table = make_table([simple_item(i, "clock") for i in range(10)])
    report = ddbnb.dry_run(table, spec("break_rules"), 10)
    assert {f["rule"] for f in report.findings} == {"not_idempotent", "stream_off"} and not report.safe
    allowed = ddbnb.dry_run(table, spec("break_rules"), 10, allow_non_idempotent=True)
    assert allowed.safe and allowed.verdict.startswith("Safe to run, with warnings: 10 not_idempotent")
