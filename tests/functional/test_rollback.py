"""Rolling a migration back from its journal, against DynamoDB Local: exact restores, conflicts left alone,
previews that write nothing, copies, and a journal that a SIGKILL cannot get ahead of."""

from __future__ import annotations

import base64
import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import ddbnb
from ddbnb.exceptions import DdbnbError, RunIncompleteError
from ddbnb.worker import journal
from ddbnb.worker.rollback import RACED, rollback_segment
from ddbnb.worker.segment import process_segment
from tests.conftest import ROOT, create_table, put_items, simple_item, spec


def every_type_item(i: int) -> dict[str, Any]:
    """An item holding every DynamoDB type; every fifth is big (about 300 KB)."""
    kind = ("change", "change", "delete", "keep")[i % 4]
    item: dict[str, Any] = {
        "pk": {"S": f"p{i % 7}"},
        "sk": {"S": f"s{i:05d}"},
        "kind": {"S": kind},
        "n": {"N": str(i)},
        "price": {"N": "12.50"},
        "tiny": {"N": "-1E-30"},
        "raw": {"B": base64.b64encode(bytes([i % 256, 0, 255])).decode()},
        "ok": {"BOOL": i % 2 == 0},
        "nothing": {"NULL": True},
        "names": {"SS": ["b", "a", f"n{i}"]},
        "scores": {"NS": ["1", "2.5", str(i + 10)]},
        "blobs": {"BS": [base64.b64encode(b"\x01").decode(), base64.b64encode(b"\x02\x03").decode()]},
        "doc": {"M": {"inner": {"L": [{"S": "x"}, {"N": "3"}, {"M": {"deep": {"NULL": True}}}]}}},
        "list": {"L": [{"BOOL": False}, {"SS": ["z"]}]},
    }
    if i % 5 == 0:
        item["blob"] = {"S": "b" * 300_000}
    return item


def snapshot(dynamodb: Any, table: str) -> dict[str, dict[str, str]]:
    """Every item by key, each attribute as its digest: equal snapshots hold equal values of equal types."""
    found = {}
    for page in dynamodb.get_paginator("scan").paginate(TableName=table, ConsistentRead=True):
        for raw in page["Items"]:
            wire = _wire(raw)
            found[wire["pk"]["S"] + "/" + wire["sk"]["S"]] = journal.item_digest(wire)
    return found


def _wire(value: Any) -> Any:
    """boto3's client values, with binary as base64 as the wire carries it."""
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, dict):
        return {k: _wire(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_wire(v) for v in value]
    return value


def set_attribute(client: Any, table: str, key: dict[str, Any], name: str, value: dict[str, Any]) -> None:
    """What the application does: set one attribute of one item."""
    client.update_item(
        TableName=table,
        Key=key,
        UpdateExpression="SET #a = :v",
        ExpressionAttributeNames={"#a": name},
        ExpressionAttributeValues={":v": value},
    )


def migrate(table: str, run_dir: Path, mode: str = "batch", transform: str = "reshape", **plan: Any) -> dict[str, Any]:
    planned = ddbnb.plan_migration(table, spec(transform), write_mode=mode, **{"total_segments": 3, **plan})
    summary = ddbnb.migrate(planned, execute=True, run_dir=run_dir, require_dry_run=False, progress=False)
    assert summary is not None and summary["status"] == "SUCCEEDED"
    return summary


@pytest.mark.parametrize("mode", ["batch", "conditional"])
def test_a_rollback_gives_back_the_table_exactly_every_type_and_big_item_included(dynamodb, tmp_path, mode):
    table = create_table(dynamodb)
    put_items(dynamodb, table, [every_type_item(i) for i in range(120)])
    original = snapshot(dynamodb, table)
    report = ddbnb.dry_run(table, spec("reshape"), 40)  # binary values too, as boto3's own client reads them
    assert report.estimate.journal_bytes > 0
    summary = migrate(table, tmp_path, mode)
    assert (summary["written"], summary["deleted"]) == (60, 30)
    assert summary["journal"]["objects"] >= 3 and summary["journal"]["bytes"] > 0
    migrated = snapshot(dynamodb, table)
    assert migrated != original and len(migrated) == 90

    preview = ddbnb.rollback(tmp_path, progress=False)
    assert snapshot(dynamodb, table) == migrated  # execute=False writes nothing
    assert (preview["restored"], preview["recreated"], preview["removed"], preview["conflicts"]) == (60, 30, 0, 0)
    assert (preview["written"], preview["deleted"], preview["execute"]) == (0, 0, False)

    done = ddbnb.rollback(tmp_path, execute=True, write_mode=mode, progress=False)
    assert (done["restored"], done["recreated"], done["written"], done["conflicts"], done["failed"]) == (
        60,
        30,
        90,
        0,
        0,
    )
    assert snapshot(dynamodb, table) == original
    results = ddbnb.load_results(done["run_dir"])  # the ResultWriter layout 04 reads
    assert int(results["scanned"].sum()) == 90 and set(results["status"]) == {"SUCCEEDED"}

    again = ddbnb.rollback(tmp_path, execute=True, progress=False)  # harmless: everything is back already
    assert (again["written"], again["unchanged"], again["conflicts"]) == (0, 90, 0)
    assert snapshot(dynamodb, table) == original


def test_items_the_application_changed_since_are_left_as_it_wrote_them_and_reported(dynamodb, tmp_path):
    table = create_table(dynamodb)
    put_items(dynamodb, table, [simple_item(i, ("change", "delete")[i % 2 == 0 and i % 10 == 0]) for i in range(200)])
    original = snapshot(dynamodb, table)
    migrate(table, tmp_path, "conditional", "by_kind")
    key = {"pk": {"S": "p01"}, "sk": {"S": "s000001"}}
    set_attribute(dynamodb, table, key, "kind", {"S": "app"})
    gone = {"pk": {"S": "p02"}, "sk": {"S": "s000002"}}
    dynamodb.delete_item(TableName=table, Key=gone)  # the application deleted a migrated item
    back = {"pk": {"S": "p10"}, "sk": {"S": "s000010"}}  # the migration deleted it; the application put it back
    dynamodb.put_item(TableName=table, Item={**back, "kind": {"S": "new"}})
    app_state = snapshot(dynamodb, table)

    summary = ddbnb.rollback(tmp_path, execute=True, progress=False)
    assert summary["conflicts"] == 3 and summary["status"] == "SUCCEEDED"
    now = snapshot(dynamodb, table)
    for name in ("p01/s000001", "p10/s000010"):
        assert now[name] == app_state[name]  # as the application wrote it
    assert "p02/s000002" not in now
    untouched = {k: v for k, v in original.items() if k not in ("p01/s000001", "p10/s000010", "p02/s000002")}
    assert {k: now[k] for k in untouched} == untouched  # every other item is back
    conflicts = ddbnb.load_conflicts(summary["run_dir"]).set_index("key")["conflict"]
    assert set(conflicts.index) == {
        json.dumps({"pk": "p01", "sk": "s000001"}),
        json.dumps({"pk": "p02", "sk": "s000002"}),
        json.dumps({"pk": "p10", "sk": "s000010"}),
    }
    assert "changed since the migration wrote it: kind" in conflicts[json.dumps({"pk": "p01", "sk": "s000001"})]
    assert "deleted since" in conflicts[json.dumps({"pk": "p02", "sk": "s000002"})]
    assert "re-created since" in conflicts[json.dumps({"pk": "p10", "sk": "s000010"})]


def test_a_change_racing_with_the_rollback_is_left_alone(dynamodb, session, tmp_path):
    table = create_table(dynamodb)
    put_items(dynamodb, table, [simple_item(i) for i in range(60)])
    migrate(table, tmp_path, "conditional", "set_flag")
    raced = {"pk": {"S": "p05"}, "sk": {"S": "s000005"}}

    raced_once: list[bool] = []

    def application_writes(params: dict[str, Any], **_: Any) -> None:  # between the rollback's read and its write
        if b"s000005" in params["body"] and not raced_once:
            raced_once.append(True)
            session.client("dynamodb").update_item(
                TableName=table,
                Key=raced,
                UpdateExpression="SET flag = :f",
                ExpressionAttributeValues={":f": {"S": "v3"}},
            )

    session.events.register("before-call.dynamodb.BatchExecuteStatement", application_writes)
    source = str(tmp_path / journal.FOLDER)
    totals: dict[str, int] = {"written": 0, "conflicts": 0}
    for segment in journal.segments(source):
        event = {
            "operation": "rollback",
            "table": table,
            "segment": segment,
            "total_segments": 3,
            "write_mode": "conditional",
            "rate_limit": 0,
            "journal": {"from": source, "execute": True},
        }
        result = rollback_segment(event, boto3_session=session)
        totals["written"] += result["written"]
        totals["conflicts"] += result["conflicts"]
        if result["conflicts"]:
            assert [(c["key"], c["error"]) for c in result["conflicted"]] == [
                ({"pk": "p05", "sk": "s000005"}, "conflict: " + RACED)
            ]
    assert totals == {"written": 59, "conflicts": 1}
    item = dynamodb.get_item(TableName=table, Key=raced, ConsistentRead=True)["Item"]
    assert item["flag"] == {"S": "v3"}  # the application's write stands


def test_a_copy_is_rolled_back_by_deleting_what_it_wrote_that_is_still_as_written(dynamodb, tmp_path):
    source = create_table(dynamodb)
    put_items(dynamodb, source, [simple_item(i) for i in range(90)])
    before_source = snapshot(dynamodb, source)
    destination = create_table(dynamodb, ("id",))
    dynamodb.put_item(TableName=destination, Item={"id": {"S": "theirs"}})  # was there before the copy
    planned = ddbnb.plan_migration(source, spec("rekey"), destination_table_name=destination, total_segments=2)
    ddbnb.migrate(planned, execute=True, run_dir=tmp_path, require_dry_run=False, progress=False)
    changed = {"id": {"S": "p03#s000003"}}
    set_attribute(dynamodb, destination, changed, "n", {"N": "7"})
    summary = ddbnb.rollback(tmp_path, execute=True, progress=False)
    assert (summary["removed"], summary["deleted"], summary["conflicts"]) == (89, 89, 1)
    left = {item["id"]["S"] for item in dynamodb.scan(TableName=destination)["Items"]}
    assert left == {"theirs", "p03#s000003"}
    assert snapshot(dynamodb, source) == before_source  # the source is never touched
    conflicts = ddbnb.load_conflicts(summary["run_dir"])
    assert list(conflicts["key"]) == [json.dumps({"id": "p03#s000003"})]
    assert conflicts["conflict"][0].startswith("conflict: changed since the migration wrote it: n")


def test_a_run_without_a_journal_cannot_be_rolled_back_and_says_so(make_table, tmp_path):
    table = make_table([simple_item(i) for i in range(10)])
    migrate(table, tmp_path, journal=False, transform="set_flag")
    assert not (tmp_path / journal.FOLDER).exists()
    with pytest.raises(DdbnbError, match="journal=False"):
        ddbnb.rollback(tmp_path, execute=True, progress=False)
    with pytest.raises(DdbnbError, match=r"plan\.json is missing"):
        ddbnb.rollback(tmp_path / "nothing", progress=False)


def test_a_sigkill_after_a_journal_write_leaves_no_written_item_without_its_before_image(dynamodb, tmp_path):
    table = create_table(dynamodb)
    put_items(dynamodb, table, [simple_item(i) for i in range(400)])
    original = snapshot(dynamodb, table)
    run_dir = tmp_path / "run"
    # The worker in its own process (pages of 100, 4 write calls each). The second page's first write call
    # goes through; the process is killed when that call has returned and before any other call is sent.
    script = textwrap.dedent(f"""
        import os, signal, threading, boto3
        from ddbnb.worker.segment import process_segment
        session = boto3.Session()
        lock, calls, fifth, fifth_done = threading.Lock(), [], [], threading.Event()
        def before(**_):
            with lock:
                calls.append(1)
                n = len(calls)
            if n == 5:
                fifth.append(threading.get_ident())
            elif n > 5:
                fifth_done.wait(30)
                os.kill(os.getpid(), signal.SIGKILL)
        def after(**_):
            if fifth and fifth[0] == threading.get_ident():
                fifth_done.set()
        session.events.register("before-call.dynamodb.BatchWriteItem", before)
        session.events.register("after-call.dynamodb.BatchWriteItem", after)
        event = {{"table": {table!r}, "segment": 0, "total_segments": 1, "transform": {spec("set_flag")!r},
                  "write_mode": "batch", "rate_limit": 0, "page_size": 100,
                  "journal": {{"to": {str(run_dir / journal.FOLDER)!r}}}}}
        process_segment(event, boto3_session=session)
    """)
    (tmp_path / "kill_me.py").write_text(script)
    child = subprocess.run([sys.executable, str(tmp_path / "kill_me.py")], cwd=ROOT, capture_output=True, timeout=120)
    assert child.returncode == -signal.SIGKILL, child.stderr.decode()[-2000:]
    now = snapshot(dynamodb, table)
    changed = {key for key in original if now[key] != original[key]}
    assert len(changed) == 125  # the first page, and one write call of the second
    source = str(run_dir / journal.FOLDER)
    before_images = {}
    for name in journal.object_names(source, 0):
        for record in journal.read_object(source, 0, name):
            before_images[record["k"]["pk"]["S"] + "/" + record["k"]["sk"]["S"]] = journal.item_digest(record["b"])
    assert len(before_images) == 200  # two pages journaled, the second before any of its writes
    assert changed <= set(before_images)
    assert all(before_images[key] == original[key] for key in changed)

    # The run goes on in the same folder, cut the same way (it journals beside the first), then it is rolled
    # back whole: newest first, so each item goes back to what it was before either run.
    (run_dir / "plan.json").write_text(json.dumps({"engine": "local", "total_segments": 1, "journal_to": source}))
    with pytest.raises(
        DdbnbError, match="total_segments: 1 when the run started, 3 now"
    ):  # the undo order would not hold
        migrate(table, run_dir, transform="set_flag")
    migrate(table, run_dir, transform="set_flag", total_segments=1)
    summary = ddbnb.rollback(run_dir, execute=True, progress=False)
    assert summary["written"] == 400 and summary["conflicts"] == 0
    assert snapshot(dynamodb, table) == original


def test_a_retry_journals_into_the_runs_journal_so_the_rollback_undoes_it(dynamodb, tmp_path):
    table = create_table(dynamodb)
    put_items(dynamodb, table, [simple_item(i, "raise" if i % 10 == 0 else "change") for i in range(50)])
    original = snapshot(dynamodb, table)
    planned = ddbnb.plan_migration(table, spec("by_kind"), total_segments=2)
    with pytest.raises(RunIncompleteError):
        ddbnb.migrate(
            planned, execute=True, run_dir=tmp_path, require_dry_run=False, progress=False, max_failed_share=0.5
        )
    for i in range(0, 50, 10):  # the operator fixes the items the transform failed on
        key = {"pk": {"S": f"p{i % 17:02d}"}, "sk": {"S": f"s{i:06d}"}}
        set_attribute(dynamodb, table, key, "kind", {"S": "change"})
    fixed = snapshot(dynamodb, table)
    retried = ddbnb.retry_failed(tmp_path, require_dry_run=False, progress=False)
    assert retried["written"] == 5
    summary = ddbnb.rollback(tmp_path, execute=True, progress=False)
    assert (summary["written"], summary["conflicts"]) == (50, 0)
    after = snapshot(dynamodb, table)
    retried_keys = {f"p{i % 17:02d}/s{i:06d}" for i in range(0, 50, 10)}
    assert {k: after[k] for k in retried_keys} == {k: fixed[k] for k in retried_keys}  # back as the operator fixed them
    assert {k: v for k, v in after.items() if k not in retried_keys} == {
        k: v for k, v in original.items() if k not in retried_keys
    }


def test_a_conditional_runs_journal_keeps_the_write_it_made_after_a_conflict_not_the_refused_one(
    make_table, dynamodb, session, tmp_path
):
    table = make_table([simple_item(i) for i in range(40)])
    original = snapshot(dynamodb, table)
    key = {"pk": {"S": "p07"}, "sk": {"S": "s000007"}}
    raced: list[bool] = []

    def application_writes(params: dict[str, Any], **_: Any) -> None:  # between the migration's read and write
        if b"s000007" in params["body"] and not raced:
            raced.append(True)
            set_attribute(session.client("dynamodb"), table, key, "flag", {"S": "app"})

    session.events.register("before-call.dynamodb.BatchExecuteStatement", application_writes)
    source = str(tmp_path / journal.FOLDER)
    event = {
        "table": table,
        "segment": 0,
        "total_segments": 1,
        "transform": spec("set_flag"),
        "write_mode": "conditional",
        "rate_limit": 0,
        "journal": {"to": source},
    }
    migrated = process_segment(event, boto3_session=session)
    assert (migrated["written"], migrated["conflicts"], migrated["journal_objects"]) == (40, 1, 2)  # rewritten once
    (name,) = journal.object_names(source, 0)
    records = {r["k"]["sk"]["S"]: r for r in journal.read_object(source, 0, name)}
    assert len(records) == 40 and records["s000007"]["b"]["flag"] == {"S": "app"}  # the item as read again
    undo = {**event, "operation": "rollback", "journal": {"from": source, "execute": True}}
    result = rollback_segment(undo, boto3_session=session)
    assert (result["written"], result["conflicts"]) == (40, 0)
    now = snapshot(dynamodb, table)
    app_version = journal.item_digest({**key, "kind": {"S": "change"}, "n": {"N": "7"}, "flag": {"S": "app"}})
    assert now.pop("p07/s000007") == app_version  # the application's write survives the rollback
    assert now == {k: v for k, v in original.items() if k != "p07/s000007"}


def test_the_cli_previews_and_rolls_back_through_the_notebook(make_table, dynamodb, tmp_path):
    table = make_table([simple_item(i) for i in range(50)])
    original = snapshot(dynamodb, table)
    migrate(table, tmp_path, transform="set_flag")
    ddbnb_cli = str(ROOT / ".venv/bin/ddbnb")
    preview = subprocess.run([ddbnb_cli, "rollback", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert preview.returncode == 0, preview.stderr[-2000:]
    assert "would restore 50" in preview.stderr and snapshot(dynamodb, table) != original
    done = subprocess.run(
        [ddbnb_cli, "rollback", str(tmp_path), "--execute", "--max-write-units", "500"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert snapshot(dynamodb, table) == original
    assert len([p for p in (tmp_path / "attempts").iterdir() if p.name.endswith("-05_rollback.ipynb")]) == 2
    nowhere = subprocess.run([ddbnb_cli, "rollback", str(tmp_path / "nowhere")], capture_output=True, text=True)
    assert nowhere.returncode == 2 and nowhere.stderr.count("\n") == 1 and "is not a folder" in nowhere.stderr
    assert not (tmp_path / "nowhere").exists()


def test_a_rollback_under_throttling_and_unprocessed_keys_still_restores_every_item(
    make_table, dynamodb, session, tmp_path
):
    from tests.functional.test_faults import PartialWrites, Throttle, _response

    table = make_table([simple_item(i) for i in range(120)])
    original = snapshot(dynamodb, table)
    migrate(table, tmp_path, transform="set_flag")
    unprocessed = {"calls": 0}

    def nothing_processed(params: dict[str, Any], **_: Any) -> Any:  # DynamoDB read none of the keys this time
        unprocessed["calls"] += 1
        if unprocessed["calls"] > 2:
            return None
        ((name, wanted),) = json.loads(params["body"])["RequestItems"].items()
        return _response(200, {"Responses": {name: []}, "UnprocessedKeys": {name: wanted}})

    session.events.register("before-call.dynamodb.BatchGetItem", Throttle(times=2))
    session.events.register("before-call.dynamodb.BatchGetItem", nothing_processed)
    session.events.register("before-call.dynamodb.BatchExecuteStatement", Throttle(times=3))
    session.events.register("before-call.dynamodb.BatchWriteItem", PartialWrites(times=3))
    source = str(tmp_path / journal.FOLDER)
    throttled = written = 0
    for mode, segments in (("conditional", journal.segments(source)[:2]), ("batch", journal.segments(source)[2:])):
        for segment in segments:
            event = {
                "operation": "rollback",
                "table": table,
                "segment": segment,
                "total_segments": 3,
                "write_mode": mode,
                "rate_limit": 0,
                "journal": {"from": source, "execute": True},
            }
            result = rollback_segment(event, boto3_session=session)
            assert result["cursor"] is None and result["failed"] == 0
            throttled += result["throttled"]
            written += result["written"]
    assert written == 120 and throttled >= 5
    assert snapshot(dynamodb, table) == original
