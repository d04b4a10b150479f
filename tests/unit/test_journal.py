"""The journal's digests and the rollback's decision for each entry, without a table."""

from __future__ import annotations

import base64
import gzip
import json

from ddbnb.worker import journal
from ddbnb.worker.rollback import decide

KEY = {"pk": {"S": "a"}}


def test_digests_see_values_and_types_not_how_dynamodb_spells_them():
    same = [
        ({"N": "1.50"}, {"N": "1.5"}),
        ({"N": "100"}, {"N": "1E+2"}),
        ({"N": "-0"}, {"N": "0.000"}),
        ({"SS": ["b", "a"]}, {"SS": ["a", "b"]}),
        ({"NS": ["2", "1.0"]}, {"NS": ["1", "2"]}),
        ({"B": base64.b64encode(b"\x00\xff").decode()}, {"B": b"\x00\xff"}),
        ({"BS": [b"\x02", b"\x01"]}, {"BS": [base64.b64encode(b).decode() for b in (b"\x01", b"\x02")]}),
        ({"M": {"b": {"N": "1"}, "a": {"S": "x"}}}, {"M": {"a": {"S": "x"}, "b": {"N": "1.0"}}}),
    ]
    for one, other in same:
        assert journal.value_digest(one) == journal.value_digest(other), (one, other)
    different = [
        ({"N": "1"}, {"S": "1"}),
        ({"SS": ["1"]}, {"NS": ["1"]}),
        ({"L": [{"N": "1"}, {"N": "2"}]}, {"L": [{"N": "2"}, {"N": "1"}]}),  # lists keep their order
        ({"NULL": True}, {"BOOL": False}),
        ({"M": {}}, {"L": []}),
    ]
    for one, other in different:
        assert journal.value_digest(one) != journal.value_digest(other), (one, other)


def test_differences_name_added_removed_and_changed_attributes():
    then = journal.item_digest({**KEY, "a": {"S": "1"}, "b": {"S": "2"}})
    now = journal.item_digest({**KEY, "a": {"S": "1"}, "b": {"S": "3"}, "c": {"S": "new"}})
    assert journal.differences(now, then) == ["b", "c"]
    assert journal.differences(None, then) == ["a", "b", "pk"]


def test_each_entry_is_restored_recreated_deleted_left_or_reported():
    before = {**KEY, "v": {"N": "1"}}
    after = {**KEY, "v": {"N": "2"}, "new": {"BOOL": True}}
    update = journal.entry(KEY, before, after)
    assert update["a"]["pk"] == journal.SAME and update["a"]["v"] != journal.SAME  # unchanged: digested at rollback
    assert decide(update, after).action == "restore"
    assert decide(update, before).action == "already"
    changed = decide(update, {**after, "v": {"N": "9"}})
    assert (changed.action, changed.reason) == ("conflict", "changed since the migration wrote it: v")
    assert decide(update, None).reason == "deleted since the migration wrote it"
    deleted = journal.entry(KEY, before, None)
    assert (decide(deleted, None).action, decide(deleted, None).before) == ("recreate", before)
    assert decide(deleted, after).reason == "re-created since the migration deleted it"
    copied = journal.entry(KEY, None, after)
    assert decide(copied, after).action == "delete"
    assert decide(copied, None).action == "already"


def test_an_object_is_gzipped_json_lines_that_read_back_in_order(tmp_path):
    writer = journal.JournalWriter(str(tmp_path), 3)
    names = [writer.new_name() for _ in range(3)]
    assert names == sorted(names) and len(set(names)) == 3
    entries = [journal.entry({"pk": {"S": str(i)}}, {"pk": {"S": str(i)}}, None) for i in range(5)]
    writer.write(names[0], entries)
    writer.write(names[0], entries[:2])  # rewritten after conflicts: the new content replaces the old
    writer.write(names[1], entries[2:])
    assert journal.segments(str(tmp_path)) == [3]
    assert journal.object_names(str(tmp_path), 3) == [names[1], names[0]]  # newest first
    assert journal.read_object(str(tmp_path), 3, names[0]) == entries[:2]
    raw = (tmp_path / "segment-3" / names[1]).read_bytes()
    assert [json.loads(line) for line in gzip.decompress(raw).splitlines()] == entries[2:]
    assert not list(tmp_path.glob("segment-3/*.tmp"))
    sizes = sum(path.stat().st_size for path in tmp_path.glob("segment-3/*"))
    assert journal.totals(str(tmp_path)) == {"objects": 2, "bytes": sizes}


def test_binary_from_boto3s_own_client_is_kept_as_the_wire_spells_it(tmp_path):
    read_by_boto3 = {"pk": {"S": "a"}, "raw": {"B": b"\x00\xff"}, "set": {"BS": [b"\x01"]}}
    wire = {"pk": {"S": "a"}, "raw": {"B": "AP8="}, "set": {"BS": ["AQ=="]}}
    body = journal.encode([journal.entry({"pk": {"S": "a"}}, read_by_boto3, None)])
    (decoded,) = [json.loads(line) for line in gzip.decompress(body).splitlines()]
    assert decoded["b"] == wire and journal.item_digest(read_by_boto3) == journal.item_digest(wire)
