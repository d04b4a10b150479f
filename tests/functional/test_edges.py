"""Conditional writes at the edges, against DynamoDB Local: names PartiQL cannot carry, statements over its
limits, a response lost after DynamoDB applied the write, deletes that must see what they delete, guards on
NULL, refused writes, and a journal that holds every applied write (so the rollback is exact).

Faults DynamoDB Local cannot produce (a lost response, AccessDenied, throttling) are injected through
botocore hooks on the session the worker uses; everything else is real.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterable
from decimal import Decimal
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ReadTimeoutError
from botocore.httpsession import URLLib3Session

from ddbnb.exceptions import WriteRefusedError
from ddbnb.worker import journal
from ddbnb.worker.clients import client
from ddbnb.worker.items import deserialize
from ddbnb.worker.lambda_entry import run_event
from ddbnb.worker.segment import process_segment
from tests.conftest import create_table, put_items, spec
from tests.fixtures import transforms

B64 = base64.b64encode(b"\x00\xffbin").decode()
VALUES: list[dict[str, Any]] = [
    {"S": "text"},
    {"N": "12345678901234567890123456789012345678"},
    {"B": B64},
    {"BOOL": True},
    {"NULL": True},
    {"SS": ["a", "b"]},
    {"NS": ["1", "-0.5", "99999999999999999999999999999999999999"]},
    {"BS": [B64, base64.b64encode(b"x").decode()]},
    {"M": {}},
    {"L": []},
    {"S": ""},
    {"M": {"deep": {"L": [{"NULL": True}, {"B": B64}, {"M": {"#in": {"S": "x"}}}]}}},
    # beyond ASCII (one key, and a list: '#h' is rewritten from this value's repr, which a set or two keys
    # would spell in whatever order DynamoDB returns them)
    {
        "M": {
            "ü\u2028": {"L": [{"S": "\U0001f600"}, {"S": "日本"}, {"S": "é"}, {"S": "e\u0301"}, {"S": "\u0085\u2029"}]}
        }
    },
]


def odd_item(i: int) -> dict[str, Any]:
    """An item whose attributes have odd names, holding every type (empty strings, lists and maps too)."""
    item: dict[str, Any] = {
        "pk": {"S": f"p{i % 5}"},
        "sk": {"S": f"s{i:04d}"},
        "kind": {"S": ("change", "change", "delete", "keep")[i % 4]},
        "n": {"N": str(i)},
    }
    for j, name in enumerate(transforms.ODD_NAMES):
        item[name] = VALUES[(i + j) % len(VALUES)]
    return item


def odd_names_applied(items: Iterable[dict[str, Any]]) -> dict[tuple[Any, ...], dict[str, Any]]:
    """What the odd_names transform leaves of wire-format ``items``, in Python values by key, as table_items gives."""
    expected = {}
    for raw in items:
        after = transforms.odd_names(deserialize(raw))
        if after is not None:
            expected[(after["pk"], after["sk"])] = after
    return expected


def event(table: str, transform: str, **extra: Any) -> dict[str, Any]:
    return {
        "table": table,
        "segment": 0,
        "total_segments": 1,
        "transform": spec(transform),
        "write_mode": "conditional",
        "rate_limit": 0,
        "page_size": 25,
        **extra,
    }


def run(event: dict[str, Any], session: boto3.Session | None = None) -> dict[str, Any]:
    """A segment (a migration's or a rollback's) to its end, looping on its cursor as both engines do."""
    current = dict(event)
    while True:
        result = run_event(current, boto3_session=session)
        if result["cursor"] is None:
            return result
        current = {**event, "cursor": result["cursor"], "totals": result}


def roll_back(table: str, journal_dir: Path, session: boto3.Session | None = None) -> dict[str, Any]:
    rollback = {
        "operation": "rollback",
        "table": table,
        "segment": 0,
        "total_segments": 1,
        "write_mode": "conditional",
        "rate_limit": 0,
        "journal": {"from": str(journal_dir), "execute": True},
    }
    return run(rollback, session)


def table_items(table: str, keys: tuple[str, ...] = ("pk", "sk")) -> dict[tuple[Any, ...], dict[str, Any]]:
    """Every item, in Python values, by key."""
    found = {}
    for page in client("dynamodb").get_paginator("scan").paginate(TableName=table, ConsistentRead=True):
        for raw in page["Items"]:
            item = deserialize(raw)
            found[tuple(item[k] for k in keys)] = item
    return found


def after_scan(session: boto3.Session, act: Callable[[dict[str, Any]], None]) -> None:
    """Let the "application" act on each item of a page right after the worker read it, before it writes."""

    def hook(parsed: dict[str, Any], **_: Any) -> None:
        for raw in parsed.get("Items", []):
            act(raw)

    session.events.register("after-call.dynamodb.Scan", hook)


def set_attribute(table: str, key: dict[str, Any], name: str, value: dict[str, Any] | None) -> None:
    """The application sets (or, with None, removes) one attribute of one item."""
    names = {"#a": name}
    if value is None:
        client("dynamodb").update_item(
            TableName=table, Key=key, UpdateExpression="REMOVE #a", ExpressionAttributeNames=names
        )
        return
    client("dynamodb").update_item(
        TableName=table,
        Key=key,
        UpdateExpression="SET #a = :v",
        ExpressionAttributeNames=names,
        ExpressionAttributeValues={":v": value},
    )


def test_odd_names_and_every_type_migrate_while_the_application_writes_and_roll_back_exactly(session, tmp_path):
    table = create_table(client("dynamodb"))
    originals = [odd_item(i) for i in range(48)]
    put_items(client("dynamodb"), table, originals)
    touched: dict[str, dict[str, Any]] = {}  # sk -> the item as the application left it

    def application(raw: dict[str, Any]) -> None:
        number, key = int(raw["n"]["N"]), {"pk": raw["pk"], "sk": raw["sk"]}
        if raw["sk"]["S"] in touched:
            return
        if number % 4 == 1:  # a guarded attribute, named '#h', changes under the worker
            set_attribute(table, key, "#h", {"S": "app"})
            touched[raw["sk"]["S"]] = {**raw, "#h": {"S": "app"}}
        elif number % 4 == 2:  # an item the transform deletes gains an attribute after the read
            set_attribute(table, key, "it's new", {"S": "added"})
            touched[raw["sk"]["S"]] = {**raw, "it's new": {"S": "added"}}

    after_scan(session, application)
    result = run(event(table, "odd_names", journal={"to": str(tmp_path)}), session)

    assert result["failed"] == 0, result["failures"]
    seen = {sk: touched.get(sk, raw) for sk, raw in ((o["sk"]["S"], o) for o in originals)}
    assert table_items(table) == odd_names_applied(seen.values())
    assert result["conflicts"] == len(touched) > 0
    assert result["deleted"] == sum(1 for o in originals if o["kind"]["S"] == "delete")

    undone = roll_back(table, tmp_path)
    assert undone["failed"] == 0 and undone["conflicts"] == 0
    # Exact: every item as it was before the migration wrote it (the application's own writes kept).
    assert table_items(table) == {(r["pk"]["S"], r["sk"]["S"]): deserialize(r) for r in seen.values()}


def test_text_beyond_ascii_in_keys_names_and_values_migrates_in_batch_mode_and_rolls_back_exactly(session, tmp_path):
    # The write calls' bodies carry it as UTF-8 (ADR 0025), the journal as DynamoDB sent it.
    table = create_table(client("dynamodb"))
    originals = [{**odd_item(i), "sk": {"S": f"s{i:04d} ☃\u2028é"}} for i in range(24)]
    put_items(client("dynamodb"), table, originals)

    result = run(event(table, "odd_names", write_mode="batch", journal={"to": str(tmp_path)}), session)

    assert result["failed"] == 0, result["failures"]
    expected = odd_names_applied(originals)
    assert table_items(table) == expected
    assert any("naïve ☃" in item and "#done" in item for item in expected.values())
    undone = roll_back(table, tmp_path, session)
    assert undone["failed"] == 0 and undone["conflicts"] == 0
    assert table_items(table) == {(r["pk"]["S"], r["sk"]["S"]): deserialize(r) for r in originals}


def test_statements_over_partiqls_limit_go_through_the_item_api(session, tmp_path):
    dynamodb = client("dynamodb")
    table = create_table(dynamodb)
    put_items(dynamodb, table, [{"pk": {"S": "p"}, "sk": {"S": f"s{i}"}, "n": {"N": str(i)}} for i in range(30)])
    result = run(event(table, "wide", journal={"to": str(tmp_path)}), session)
    assert result["failed"] == 0 and result["written"] == 30
    names = [f"attribute_with_a_forty_character_name_{i:02d}" for i in range(100)]
    assert all(all(item[name] == f"value {i}" for i, name in enumerate(names)) for item in table_items(table).values())

    wide_items = [
        {"pk": {"S": "p"}, "sk": {"S": f"w{i}"}, **{f"attribute_{j:03d}": {"N": str(j)} for j in range(480)}}
        for i in range(3)
    ]
    source = create_table(dynamodb)
    put_items(dynamodb, source, wide_items)
    destination = create_table(dynamodb, ("id",))
    copied = run(event(source, "rekey", destination=destination), session)
    assert copied["failed"] == 0 and copied["written"] == 3
    assert {k[0]: len(v) for k, v in table_items(destination, ("id",)).items()} == {f"p#w{i}": 483 for i in range(3)}

    assert roll_back(table, tmp_path)["written"] == 30
    assert all(set(item) == {"pk", "sk", "n"} for item in table_items(table).values())


def test_a_write_too_large_for_either_form_fails_alone_and_names_version_attribute(session):
    dynamodb = client("dynamodb")
    table = create_table(dynamodb)
    wide = {"pk": {"S": "p"}, "sk": {"S": "wide"}, "kind": {"S": "delete"}}
    wide.update({f"a{j}": {"S": "x"} for j in range(200)})
    narrow = [{"pk": {"S": "p"}, "sk": {"S": f"n{i}"}, "kind": {"S": "delete"}} for i in range(10)]
    put_items(dynamodb, table, [wide, *narrow])

    result = run(event(table, "by_kind"), session)
    assert result["deleted"] == 10 and result["failed"] == 1
    (failure,) = result["failures"]
    assert failure["key"] == {"pk": "p", "sk": "wide"} and "version_attribute" in failure["error"]
    assert list(table_items(table)) == [("p", "wide")]

    versioned = run(event(table, "by_kind", version_attribute="v"), session)
    assert versioned["deleted"] == 1 and versioned["failed"] == 0 and not table_items(table)


def test_a_response_lost_after_dynamodb_applied_the_write_is_journaled_and_rolled_back(session, tmp_path):
    dynamodb = client("dynamodb")
    table = create_table(dynamodb)
    originals = [
        {"pk": {"S": "p"}, "sk": {"S": f"s{i:03d}"}, "kind": {"S": ("change", "delete")[i % 2]}} for i in range(40)
    ]
    put_items(dynamodb, table, originals)
    http = URLLib3Session()
    lost = []

    def lose_the_response(request: Any, **_: Any) -> None:
        if len(lost) < 2:  # the first two calls reach DynamoDB, which applies them; their answers never arrive
            lost.append(http.send(request).status_code)
            raise ReadTimeoutError(endpoint_url=request.url)

    session.events.register("before-send.dynamodb.BatchExecuteStatement", lose_the_response)
    result = run(event(table, "by_kind", journal={"to": str(tmp_path)}), session)

    assert lost == [200, 200]
    assert result["failed"] == 0 and result["conflicts"] == 0  # the re-sent writes were found applied
    assert result["written"] == 20 and result["deleted"] == 20
    entries = [
        e for name in journal.object_names(str(tmp_path), 0) for e in journal.read_object(str(tmp_path), 0, name)
    ]
    assert len(entries) == 40  # every applied write has its entry, deletes included
    undone = roll_back(table, tmp_path)
    assert undone["failed"] == 0 and undone["conflicts"] == 0
    assert table_items(table) == {("p", o["sk"]["S"]): deserialize(o) for o in originals}


def test_a_delete_never_removes_what_the_application_added_after_the_read(session, tmp_path):
    dynamodb = client("dynamodb")
    table = create_table(dynamodb)
    put_items(dynamodb, table, [{"pk": {"S": "p"}, "sk": {"S": f"s{i:02d}"}, "n": {"N": str(i)}} for i in range(20)])

    def application(raw: dict[str, Any]) -> None:
        if int(raw["n"]["N"]) % 5 == 0:
            set_attribute(table, {"pk": raw["pk"], "sk": raw["sk"]}, "keep", {"BOOL": True})

    after_scan(session, application)
    result = run(event(table, "delete_unless_kept", journal={"to": str(tmp_path)}), session)
    assert result["failed"] == 0
    assert result["deleted"] == 16 and result["conflicts"] == 4
    assert sorted(item["n"] for item in table_items(table).values()) == [0, 5, 10, 15]
    assert all(item["keep"] is True for item in table_items(table).values())
    assert roll_back(table, tmp_path)["written"] == 16  # the put-back deletes left no entry to undo


def test_a_delete_of_an_item_the_application_deleted_first_is_no_delete_of_ours(session, tmp_path):
    dynamodb = client("dynamodb")
    table = create_table(dynamodb)
    put_items(dynamodb, table, [{"pk": {"S": "p"}, "sk": {"S": f"s{i:02d}"}, "n": {"N": str(i)}} for i in range(10)])

    def application(raw: dict[str, Any]) -> None:
        if int(raw["n"]["N"]) < 3:
            client("dynamodb").delete_item(TableName=table, Key={"pk": raw["pk"], "sk": raw["sk"]})

    after_scan(session, application)
    result = run(event(table, "delete_unless_kept", journal={"to": str(tmp_path)}), session)
    assert result["deleted"] == 7 and result["conflicts"] == 3
    undone = roll_back(table, tmp_path)
    # The rollback re-creates what the run deleted, never what the application deleted.
    assert sorted(item["n"] for item in table_items(table).values()) == list(range(3, 10))
    assert undone["recreated"] == 7


def test_a_null_guard_fails_when_the_application_removed_the_attribute(session):
    dynamodb = client("dynamodb")
    table = create_table(dynamodb)
    put_items(dynamodb, table, [{"pk": {"S": "p"}, "sk": {"S": f"s{i}"}, "n": {"NULL": True}} for i in range(6)])

    def application(raw: dict[str, Any]) -> None:
        if raw["sk"]["S"] in ("s0", "s1") and "n" in raw:
            set_attribute(table, {"pk": raw["pk"], "sk": raw["sk"]}, "n", None)

    after_scan(session, application)
    result = run(event(table, "set_null_to_text"), session)
    assert result["failed"] == 0 and result["conflicts"] == 2
    found = table_items(table)
    assert all("n" not in found[("p", sk)] for sk in ("s0", "s1"))  # the removal stands: no "was null" over it
    assert all(found[("p", f"s{i}")]["n"] == "was null" for i in range(2, 6))


def test_two_sources_on_one_destination_key_in_one_page_leave_the_winners_entry(session, tmp_path):
    dynamodb = client("dynamodb")
    source = create_table(dynamodb)
    put_items(dynamodb, source, [{"pk": {"S": "same"}, "sk": {"S": f"s{i}"}} for i in range(2)])
    destination = create_table(dynamodb, ("id",))
    result = run(event(source, "by_pk", destination=destination, journal={"to": str(tmp_path)}), session)
    assert result["written"] == 1 and result["failed"] == 1
    entries = [
        e for name in journal.object_names(str(tmp_path), 0) for e in journal.read_object(str(tmp_path), 0, name)
    ]
    assert [e["k"] for e in entries] == [{"id": {"S": "same"}}]
    assert roll_back(destination, tmp_path)["removed"] == 1 and not table_items(destination, ("id",))


def test_a_batch_copy_journals_what_the_destination_held_so_the_rollback_puts_it_back(session, tmp_path):
    dynamodb = client("dynamodb")
    source = create_table(dynamodb)
    put_items(dynamodb, source, [{"pk": {"S": f"p{i}"}, "sk": {"S": "s"}} for i in range(5)])
    destination = create_table(dynamodb, ("id",))
    there_before = {"id": {"S": "p0#s"}, "owner": {"S": "someone else"}}
    put_items(dynamodb, destination, [there_before])
    result = run(event(source, "rekey", destination=destination, write_mode="batch", journal={"to": str(tmp_path)}))
    assert result["written"] == 5
    roll_back(destination, tmp_path)
    assert table_items(destination, ("id",)) == {("p0#s",): deserialize(there_before)}


def test_a_38_digit_change_in_the_last_digit_is_a_change(tmp_path):
    low, high = {"N": "12345678901234567890123456789012345678"}, {"N": "12345678901234567890123456789012345679"}
    assert journal.value_digest(low) != journal.value_digest(high)
    assert journal.value_digest({"N": "1.50"}) == journal.value_digest({"N": "1.5"})
    assert journal.value_digest({"NS": ["1E+2", "3"]}) == journal.value_digest({"NS": ["3", "100"]})


def test_a_version_that_is_not_a_whole_number_fails_its_item_alone(session):
    dynamodb = client("dynamodb")
    table = create_table(dynamodb)
    put_items(
        dynamodb,
        table,
        [{"pk": {"S": "p"}, "sk": {"S": f"s{i}"}, "v": {"N": "1.5" if i == 0 else "1E+2"}} for i in range(4)],
    )
    result = run(event(table, "set_flag", version_attribute="v"), session)
    assert result["written"] == 3 and result["failed"] == 1
    assert "version_attribute 'v'" in result["failures"][0]["error"] and "1.5" in result["failures"][0]["error"]
    assert sorted(item["v"] for item in table_items(table).values()) == [Decimal("1.5"), 101, 101, 101]


def _answer(statements: int, code: str) -> Callable[..., Any]:
    def hook(params: dict[str, Any], **_: Any) -> Any:
        count = len(json.loads(params["body"])["Statements"])
        body = {"Responses": [{"Error": {"Code": code, "Message": "not allowed"}}] * count}
        return AWSResponse("http://fault", 200, {}, None), {**body, "ResponseMetadata": {"HTTPStatusCode": 200}}

    return hook


def test_a_statement_refused_for_access_stops_the_segment_at_once(session):
    dynamodb = client("dynamodb")
    table = create_table(dynamodb)
    put_items(dynamodb, table, [{"pk": {"S": "p"}, "sk": {"S": f"s{i}"}} for i in range(60)])
    session.events.register("before-call.dynamodb.BatchExecuteStatement", _answer(25, "AccessDenied"))  # no IAM locally
    with pytest.raises(WriteRefusedError, match="AccessDenied"):
        run(event(table, "set_flag"), session)


def test_a_destination_deleted_during_the_run_stops_it_at_once(session):
    dynamodb = client("dynamodb")
    source = create_table(dynamodb)
    put_items(dynamodb, source, [{"pk": {"S": f"p{i}"}, "sk": {"S": "s"}} for i in range(30)])
    destination = create_table(dynamodb, ("id",))
    after_scan(session, lambda raw: dynamodb.delete_table(TableName=destination) if raw["pk"]["S"] == "p0" else None)
    with pytest.raises(WriteRefusedError, match="ResourceNotFound"):
        run(event(source, "rekey", destination=destination), session)


def test_a_throttled_read_after_a_conflict_stalls_the_page_instead_of_failing(session, monkeypatch):
    monkeypatch.setattr("ddbnb.worker.writes.Backoff.wait", lambda self, attempt: None)  # no real sleeping
    dynamodb = client("dynamodb")
    table = create_table(dynamodb)
    put_items(dynamodb, table, [{"pk": {"S": "p"}, "sk": {"S": f"s{i}"}, "status": {"S": "new"}} for i in range(5)])
    changed: set[str] = set()

    def application(raw: dict[str, Any]) -> None:
        if raw["sk"]["S"] == "s1" and "s1" not in changed:
            changed.add("s1")
            set_attribute(table, {"pk": raw["pk"], "sk": raw["sk"]}, "status", {"S": "app"})

    throttled = []

    def throttle(**_: Any) -> Any:
        if len(throttled) < 30:
            throttled.append(1)
            body = {"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "slow down"}}
            return AWSResponse("http://fault", 400, {}, None), {**body, "ResponseMetadata": {"HTTPStatusCode": 400}}
        return None

    after_scan(session, application)
    session.events.register("before-call.dynamodb.GetItem", throttle)
    first = process_segment(event(table, "shout"), boto3_session=session)
    assert first["failed"] == 0 and first["stalls"] == 1 and first["cursor"] == {}  # read again, not failed
    rest = run({**event(table, "shout"), "cursor": first["cursor"], "totals": first}, session)
    assert rest["failed"] == 0
    assert {item["sk"]: item["status"] for item in table_items(table).values()}["s1"] == "APP"


def test_a_copy_that_lacks_the_destinations_key_fails_that_item_alone(session):
    dynamodb = client("dynamodb")
    source = create_table(dynamodb)
    put_items(
        dynamodb,
        source,
        [{"pk": {"S": f"p{i}"}, "sk": {"S": "s"}, "kind": {"S": "raise" if i == 0 else "x"}} for i in range(5)],
    )
    destination = create_table(dynamodb, ("id",))
    result = run(event(source, "rekey", destination=destination), session)  # rekey leaves 'raise' items without id
    assert (result["written"], result["failed"]) == (4, 1)
    assert (
        result["failures"][0]["key"] == {"pk": "p0", "sk": "s"} and "ValidationError" in result["failures"][0]["error"]
    )
