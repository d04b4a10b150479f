"""Copies into a re-keyed table (collisions, the destination's key schema), every failed key kept
and retried, and worker credentials from any kind of session."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import boto3
import pytest

import ddbnb
from ddbnb.engines.local import session_args
from ddbnb.exceptions import DryRunRequiredError, RunIncompleteError, TransformRejectedError
from tests.conftest import create_table, put_items, scan_all, simple_item, spec


def keyed_by_id(dynamodb: Any, kind: str = "S") -> str:
    return create_table(dynamodb, ("id",), key_type=kind)


@pytest.mark.parametrize("mode", ["batch", "conditional"])
def test_two_sources_on_one_destination_key_are_reported_never_overwritten(make_table, dynamodb, tmp_path, mode):
    source = make_table([simple_item(i) for i in range(170)])  # 17 partition keys, 10 items each
    destination = keyed_by_id(dynamodb)
    plan = ddbnb.plan_migration(
        source, spec("by_pk"), destination_table_name=destination, write_mode=mode, total_segments=1
    )
    with pytest.raises(RunIncompleteError):
        ddbnb.migrate(plan, execute=True, run_dir=tmp_path, progress=False, require_dry_run=False)
    summary = json.loads((tmp_path / "summary.json").read_text())
    failures = ddbnb.load_failures(tmp_path)
    assert (summary["written"], summary["failed"]) == (17, 153)  # one per destination key, never two
    assert len(failures) == 153 and failures["error"].str.startswith("key_collision").all()
    copied = {item["id"]["S"]: item for item in dynamodb.scan(TableName=destination)["Items"]}
    assert len(copied) == 17


def test_a_conditional_copy_run_twice_is_unchanged_the_second_time(make_table, dynamodb, tmp_path):
    source = make_table([simple_item(i) for i in range(120)])
    destination = keyed_by_id(dynamodb)
    plan = ddbnb.plan_migration(
        source, spec("rekey"), destination_table_name=destination, write_mode="conditional", total_segments=2
    )
    first = ddbnb.migrate(plan, execute=True, run_dir=tmp_path / "1", progress=False, require_dry_run=False)
    again = ddbnb.migrate(plan, execute=True, run_dir=tmp_path / "2", progress=False, require_dry_run=False)
    assert first is not None and again is not None
    assert (first["written"], again["written"], again["unchanged"], again["failed"]) == (120, 0, 120, 0)


def test_the_dry_run_finds_collisions_in_its_sample(make_table, dynamodb):
    source = make_table([simple_item(i) for i in range(60)])
    report = ddbnb.dry_run(source, spec("by_pk"), 60, destination_table_name=keyed_by_id(dynamodb))
    collisions = [f for f in report.findings if f["rule"] == "key_collision"]
    assert len(collisions) == 60 - 17 and not report.safe
    assert "destination key" in collisions[0]["message"]


@pytest.mark.parametrize(("kind", "transform"), [("S", "set_flag"), ("N", "numeric_id")])
def test_a_destination_whose_key_the_transform_does_not_produce_is_refused_first(make_table, dynamodb, kind, transform):
    source = make_table([simple_item(i) for i in range(40)])
    destination = keyed_by_id(dynamodb, kind)
    plan = ddbnb.plan_migration(source, spec(transform), destination_table_name=destination)
    assert f"key id ({kind})" in str(plan)
    with pytest.raises(TransformRejectedError, match="destination's key attribute"):
        ddbnb.migrate(plan, execute=True, progress=False, require_dry_run=False)
    assert dynamodb.scan(TableName=destination, Select="COUNT")["Count"] == 0
    report = ddbnb.dry_run(source, spec(transform), 10, destination_table_name=destination)
    assert {f["rule"] for f in report.findings} == {"missing_key", "stream_off"} and not report.safe


def test_every_failed_key_is_kept_and_retry_failed_writes_exactly_those(make_table, dynamodb, tmp_path):
    mine = tmp_path / "mine.py"
    mine.write_text(
        "def fn(item):\n    if int(item['n']) % 3 == 0:\n        raise ValueError('not yet')\n"
        "    item['flag'] = 'v2'\n    return item\n"
    )
    source = make_table([simple_item(i) for i in range(450)])  # 150 fail: more than a result lists
    plan = ddbnb.plan_migration(source, f"{mine}:fn", total_segments=1)
    run = tmp_path / "run"
    with pytest.raises(RunIncompleteError):
        ddbnb.migrate(plan, execute=True, run_dir=run, progress=False, require_dry_run=False, max_failed_share=0.6)
    listed = json.loads(json.loads((run / "SUCCEEDED_0.json").read_text())[0]["Output"])["failures"]
    assert len(listed) == 100  # the bounded list in the result
    log = (run / "failures" / "segment-0.jsonl").read_text().splitlines()
    failures = ddbnb.load_failures(run)
    assert len(log) == len(failures) == 150
    assert {json.loads(k)["sk"] for k in failures["key"]} == {f"s{i:06d}" for i in range(0, 450, 3)}

    mine.write_text("def fn(item):\n    item['flag'] = 'v2'\n    return item\n")  # fixed
    before = scan_all(dynamodb, source)
    with pytest.raises(DryRunRequiredError):  # the same gate as a migration: nobody previewed the fix yet
        ddbnb.retry_failed(run, progress=False)
    assert scan_all(dynamodb, source) == before
    ddbnb.dry_run(source, f"{mine}:fn", 20, run_dir=run)
    retry = ddbnb.retry_failed(run, progress=False)
    assert (retry["scanned"], retry["written"], retry["failed"], retry["status"]) == (150, 150, 0, "SUCCEEDED")
    after = scan_all(dynamodb, source)
    changed = {key for key in after if after[key] != before[key]}
    assert len(changed) == 150 and all(after[k]["flag"] == "v2" for k in after)
    assert (run / retry["run_dir"].rsplit("/", 1)[-1] / "manifest.json").is_file()
    run_summary = json.loads((run / "summary.json").read_text())
    assert run_summary["status"] == "SUCCEEDED" and run_summary["retries"][0]["written"] == 150


def test_workers_get_the_credentials_of_a_session_made_from_keys(make_table, tmp_path, monkeypatch):
    table = make_table([simple_item(i) for i in range(80)])
    session = boto3.Session(aws_access_key_id="FromKeys1", aws_secret_access_key="secret", region_name="us-east-1")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    assert boto3.Session().get_credentials() is None  # the worker processes would find none of their own
    assert session_args(session)["aws_access_key_id"] == "FromKeys1"
    plan = ddbnb.plan_migration(table, spec("set_flag"), total_segments=2, boto3_session=session)
    summary = ddbnb.migrate(
        plan, execute=True, run_dir=tmp_path / "run", progress=False, require_dry_run=False, boto3_session=session
    )
    assert summary is not None and (summary["written"], summary["failed"]) == (80, 0)


def test_a_profile_session_is_rebuilt_from_its_profile(tmp_path, monkeypatch):
    (tmp_path / "credentials").write_text("[ops]\naws_access_key_id = a\naws_secret_access_key = b\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    args = session_args(boto3.Session(profile_name="ops", region_name="eu-west-1"))
    assert args == {"profile_name": "ops", "region_name": "eu-west-1"}


def test_a_retry_finds_numeric_keys_to_the_last_digit_and_reports_keys_that_are_gone(dynamodb, tmp_path):
    table = create_table(dynamodb, ("id",), key_type="N")
    keys = ["1234567890.123456789", "12345678901234567890123456789012345678", "-0.000000000000000000000000001", "7"]
    put_items(dynamodb, table, [{"id": {"N": key}, "kind": {"S": "raise"}} for key in keys])
    mine = tmp_path / "mine.py"
    mine.write_text(
        "def fn(item):\n    if item['kind'] == 'raise':\n        raise ValueError('not yet')\n    return item\n"
    )
    planned = ddbnb.plan_migration(table, f"{mine}:fn", total_segments=1)
    with pytest.raises(RunIncompleteError):
        ddbnb.migrate(planned, execute=True, run_dir=tmp_path / "run", require_dry_run=False, max_failed_share=1.0)
    logged = [json.loads(line) for line in (tmp_path / "run/failures/segment-0.jsonl").read_text().splitlines()]
    assert sorted(record["wire"]["id"]["N"] for record in logged) == sorted(keys)  # every digit, as DynamoDB spells it
    dynamodb.delete_item(TableName=table, Key={"id": {"N": "7"}})  # gone before the retry
    mine.write_text("def fn(item):\n    item['kind'] = 'fixed'\n    return item\n")
    ddbnb.dry_run(table, f"{mine}:fn", 10, run_dir=tmp_path / "run")
    retry = ddbnb.retry_failed(tmp_path / "run", progress=False)
    assert (retry["written"], retry["missing"], retry["failed"], retry["status"]) == (3, 1, 0, "SUCCEEDED")
    (missing,) = [
        json.loads(line) for line in Path(retry["run_dir"], "missing", "segment-0.jsonl").read_text().splitlines()
    ]
    assert missing["wire"] == {"id": {"N": "7"}} and missing["error"].startswith("missing")
    fixed = {item["id"]["N"]: item["kind"]["S"] for item in dynamodb.scan(TableName=table)["Items"]}
    assert fixed == {key: "fixed" for key in keys[:3]}
