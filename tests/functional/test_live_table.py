"""A live table: the application writes while the migration runs, against DynamoDB Local.

The deterministic race: a hook on the worker's Scan lets the "application" (its own
client) change items of each page right after the worker read them and before it
writes them, the window in which every bulk-update recipe loses updates. The free
race: application threads write while a whole local-engine run goes on.
"""

from __future__ import annotations

import random
import threading
from typing import Any

import boto3
import pytest

import ddbnb
from ddbnb import process_segment
from ddbnb.worker.clients import client
from tests.conftest import scan_all, simple_item, spec


def live_items(count: int) -> list[dict[str, Any]]:
    items = []
    for i in range(count):
        item = simple_item(i)
        item["status"] = {"S": f"new-{i}"}
        items.append(item)
    return items


class Application:
    """Right after each page is read: ADD to ``hits``, SET ``status``, or DELETE, by item number."""

    def __init__(self, table: str) -> None:
        self.table = table
        self.dynamodb = client("dynamodb")
        self.added: set[str] = set()
        self.set: set[str] = set()
        self.deleted: set[str] = set()

    def __call__(self, parsed: dict[str, Any], **_: Any) -> None:
        for raw in parsed.get("Items", []):
            key = {"pk": raw["pk"], "sk": raw["sk"]}
            number = int(raw["n"]["N"])
            sk = raw["sk"]["S"]
            if number % 7 == 0:
                self.dynamodb.delete_item(TableName=self.table, Key=key)
                self.deleted.add(sk)
            elif number % 3 == 0:
                self.dynamodb.update_item(
                    TableName=self.table,
                    Key=key,
                    UpdateExpression="ADD hits :one",
                    ExpressionAttributeValues={":one": {"N": "1"}},
                )
                self.added.add(sk)
            elif number % 3 == 1:
                self.dynamodb.update_item(
                    TableName=self.table,
                    Key=key,
                    UpdateExpression="SET #s = :v",
                    ExpressionAttributeNames={"#s": "status"},
                    ExpressionAttributeValues={":v": {"S": f"app-{number}"}},
                )
                self.set.add(sk)


def race(make_table: Any, mode: str) -> tuple[dict[str, Any], Application, dict[str, dict[str, Any]]]:
    table = make_table(live_items(300))
    session = boto3.Session()
    application = Application(table)
    session.events.register("after-call.dynamodb.Scan", application)
    event = {
        "table": table,
        "segment": 0,
        "total_segments": 1,
        "transform": spec("shout"),
        "write_mode": mode,
        "rate_limit": 0,
        "page_size": 40,
    }
    result = process_segment(event, boto3_session=session)
    final = {sk: item for (_, sk), item in scan_all(client("dynamodb"), table).items()}
    return result, application, final


def test_conditional_writes_lose_nothing_the_application_wrote(make_table):
    result, app, final = race(make_table, "conditional")
    assert result["failed"] == 0 and result["cursor"] is None
    assert app.added and app.set and app.deleted
    assert not set(final) & app.deleted  # nothing resurrected
    assert all(final[sk]["hits"] == 1 for sk in app.added - app.deleted)  # no increment lost
    for sk in app.set - app.deleted:  # no stale value: the application's value, migrated
        assert final[sk]["status"] == f"APP-{int(final[sk]['n'])}"
    assert all(item["migrated"] is True for item in final.values())  # every surviving item migrated
    assert all(item["status"] == item["status"].upper() for item in final.values())
    # Each SET or DELETE hit a guarded attribute (status, or the item itself); an ADD to hits did not.
    assert result["conflicts"] == len(app.set | app.deleted)
    assert result["written"] == 300 - len(app.deleted)


def test_batch_writes_lose_what_the_application_wrote(make_table):
    result, app, final = race(make_table, "batch")
    assert result["failed"] == 0
    lost_increments = [sk for sk in app.added - app.deleted if "hits" not in final.get(sk, {})]
    stale = [sk for sk in app.set - app.deleted if not final[sk]["status"].startswith("APP-")]
    resurrected = set(final) & app.deleted
    # Shown, not assumed: every change the application made in the window is gone.
    assert len(lost_increments) == len(app.added - app.deleted) > 0
    assert len(stale) == len(app.set - app.deleted) > 0
    assert len(resurrected) == len(app.deleted) > 0


def test_application_threads_during_a_conditional_run(make_table, dynamodb, tmp_path):
    items = live_items(1_500)
    table = make_table(items)
    plan = ddbnb.plan_migration(table, spec("shout"), write_mode="conditional", total_segments=6, max_concurrency=3)
    stop = threading.Event()
    hits: dict[str, int] = {}
    deleted: set[str] = set()
    lock = threading.Lock()

    def application(seed: int) -> None:
        app, rng = client("dynamodb"), random.Random(seed)
        while not stop.is_set():
            i = rng.randrange(len(items))
            key = {"pk": items[i]["pk"], "sk": items[i]["sk"]}
            sk = key["sk"]["S"]
            with lock:
                if sk in deleted:
                    continue
                if rng.random() < 0.05:
                    app.delete_item(TableName=table, Key=key)
                    deleted.add(sk)
                else:
                    app.update_item(
                        TableName=table,
                        Key=key,
                        UpdateExpression="ADD hits :one",
                        ExpressionAttributeValues={":one": {"N": "1"}},
                    )
                    hits[sk] = hits.get(sk, 0) + 1

    threads = [threading.Thread(target=application, args=(seed,)) for seed in range(3)]
    for thread in threads:
        thread.start()
    try:
        summary = ddbnb.migrate(plan, execute=True, run_dir=tmp_path, progress=False, require_dry_run=False)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert summary is not None and summary["failed"] == 0
    final = {sk: item for (_, sk), item in scan_all(dynamodb, table).items()}
    assert not set(final) & deleted
    assert {sk: int(final[sk].get("hits", 0)) for sk in hits if sk not in deleted} == {
        sk: n for sk, n in hits.items() if sk not in deleted
    }
    assert all(item["migrated"] is True and item["status"].startswith("NEW-") for item in final.values())
    assert len(final) == 1_500 - len(deleted) and sum(hits.values()) > 100


@pytest.mark.parametrize("mode", ["batch", "conditional"])
def test_a_rerun_writes_nothing_in_either_mode(make_table, tmp_path, mode):
    table = make_table(live_items(200))
    plan = ddbnb.plan_migration(table, spec("shout"), write_mode=mode, total_segments=2, max_concurrency=2)
    first = ddbnb.migrate(plan, execute=True, run_dir=tmp_path / "1", progress=False, require_dry_run=False)
    again = ddbnb.migrate(plan, execute=True, run_dir=tmp_path / "2", progress=False, require_dry_run=False)
    assert first is not None and again is not None
    assert (first["written"], again["written"], again["unchanged"]) == (200, 0, 200)
    assert first["write_mode"] == mode


def test_version_attribute_guards_and_increments(make_table, dynamodb, session):
    items = live_items(60)
    for i, item in enumerate(items):
        if i % 2:
            item["version"] = {"N": "4"}
    table = make_table(items)
    bumped: list[str] = []

    def application(parsed: dict[str, Any], **_: Any) -> None:
        raw = parsed["Items"][0]
        if not bumped:
            client("dynamodb").update_item(
                TableName=table,
                Key={"pk": raw["pk"], "sk": raw["sk"]},
                UpdateExpression="SET #v = :v, note = :n",
                ExpressionAttributeNames={"#v": "version"},
                ExpressionAttributeValues={":v": {"N": "9"}, ":n": {"S": "app"}},
            )
            bumped.append(raw["sk"]["S"])

    session.events.register("after-call.dynamodb.Scan", application)
    event = {
        "table": table,
        "segment": 0,
        "total_segments": 1,
        "transform": spec("shout"),
        "write_mode": "conditional",
        "version_attribute": "version",
        "rate_limit": 0,
    }
    result = process_segment(event, boto3_session=session)
    final = {sk: item for (_, sk), item in scan_all(dynamodb, table).items()}
    assert result["conflicts"] == 1 and result["failed"] == 0
    assert final[bumped[0]]["version"] == 10 and final[bumped[0]]["note"] == "app"
    others = [item for sk, item in final.items() if sk != bumped[0]]
    assert sorted({int(item["version"]) for item in others}) == [1, 5]
    assert all(item["migrated"] is True for item in final.values())
