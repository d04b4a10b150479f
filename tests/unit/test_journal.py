"""The journal's digests and the rollback's decision for each entry, without a table."""

from __future__ import annotations

import base64
import gzip
import importlib.util
import json
import sys

import pytest

from ddbnb.worker import journal
from ddbnb.worker.rollback import decide
from ddbnb.worker.wire import ITEM_TEXTS, item_texts, parse_page

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


def test_isal_and_the_standard_librarys_gzip_read_each_others_journals(tmp_path, monkeypatch):
    """The client compresses with ISA-L; the Lambda package, without it, with zlib: a rollback reads both."""
    assert journal._gzip.__name__ == "isal.igzip"  # installed with ddbnb: the journal's CPU depends on it
    entries = [
        journal.entry({"pk": {"S": str(i)}}, {"pk": {"S": str(i)}, "n": {"N": "1" * 38}}, None) for i in range(50)
    ]
    fast = journal.encode(entries)
    assert [json.loads(line) for line in gzip.decompress(fast).splitlines()] == entries
    folder = tmp_path / "segment-0"
    folder.mkdir()
    (folder / ("a" + journal.SUFFIX)).write_bytes(gzip.compress(b"".join(journal._line(e).encode() for e in entries)))
    assert journal.read_object(str(tmp_path), 0, "a" + journal.SUFFIX) == entries

    monkeypatch.setitem(sys.modules, "isal", None)  # as in the Lambda package: a copy of the module, loaded so
    monkeypatch.delitem(sys.modules, "isal.igzip", raising=False)
    spec = importlib.util.spec_from_file_location("journal_without_isal", journal.__file__)
    assert spec is not None and spec.loader is not None
    without = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(without)
    assert without._gzip is gzip
    assert [json.loads(line) for line in gzip.decompress(without.encode(entries)).splitlines()] == entries
    (folder / ("b" + journal.SUFFIX)).write_bytes(fast)
    assert without.read_object(str(tmp_path), 0, "b" + journal.SUFFIX) == entries


def test_binary_from_boto3s_own_client_is_kept_as_the_wire_spells_it(tmp_path):
    read_by_boto3 = {"pk": {"S": "a"}, "raw": {"B": b"\x00\xff"}, "set": {"BS": [b"\x01"]}}
    wire = {"pk": {"S": "a"}, "raw": {"B": "AP8="}, "set": {"BS": ["AQ=="]}}
    body = journal.encode([journal.entry({"pk": {"S": "a"}}, read_by_boto3, None)])
    (decoded,) = [json.loads(line) for line in gzip.decompress(body).splitlines()]
    assert decoded["b"] == wire and journal.item_digest(read_by_boto3) == journal.item_digest(wire)


#: A read's response at the edges: every type, 38 digits, empty values, names and text JSON escapes or not.
EDGE_PAGE = {
    "Count": 3,
    "Items": [
        {
            "pk": {"S": 'q"uo\\te\u2028line\u0085'},
            "n": {"N": "-1.2345678901234567890123456789012345678E+125"},
            "b": {"B": "AP8="},
            "bs": {"BS": ["AQ==", "Ag=="]},
            "ns": {"NS": ["1", "99999999999999999999999999999999999999"]},
            "ss": {"SS": ["", "ü", "日本"]},
            "empty": {"M": {"": {"S": ""}, "l": {"L": []}, "m": {"M": {}}}},
            "Items": {"L": [{"NULL": True}, {"BOOL": False}]},
        },
        {"pk": {"S": "two"}},
        {"pk": {"S": "three"}, "emoji": {"S": "\U0001f600"}},
    ],
    "LastEvaluatedKey": {"pk": {"S": "three"}},
    "ScannedCount": 3,
    "ConsumedCapacity": {"TableName": "t", "CapacityUnits": 1.5},
}


def test_a_page_parses_as_json_loads_does_and_keeps_each_items_own_text():
    for spelled in (
        json.dumps(EDGE_PAGE),  # ASCII, escaped
        json.dumps(EDGE_PAGE, ensure_ascii=False, separators=(",", ":")),  # raw UTF-8, compact
        json.dumps(EDGE_PAGE, indent=2),  # whitespace everywhere
        json.dumps({"Count": 0, "Items": [], "ScannedCount": 0}),
    ):
        page = parse_page(spelled.encode())
        texts = page.pop(ITEM_TEXTS)
        assert page == json.loads(spelled)
        assert [json.loads(text) for text in texts] == page["Items"]
        assert item_texts({**page, ITEM_TEXTS: texts}) == {
            id(i): (i, t) for i, t in zip(page["Items"], texts, strict=True)
        }


def test_a_body_the_page_parser_does_not_expect_is_parsed_or_refused_as_json_loads_does():
    assert parse_page(b'{"Table": {"Items": [1]}}') == {"Table": {"Items": [1]}}  # no texts: not a page
    assert ITEM_TEXTS not in parse_page(b'{"Items": "not a list"}')
    for bad in (b'{"Items":[1,]}', b'{"a":1,}', b'{"Items":[1]} x', b'{"a" 1}', b"[1]{"):
        with pytest.raises(json.JSONDecodeError):
            parse_page(bad)


def test_a_journal_line_written_from_the_items_text_reads_back_as_the_item(tmp_path):
    spelled = json.dumps(EDGE_PAGE, ensure_ascii=False, separators=(",", ":"))
    page = parse_page(spelled.encode())
    texts = item_texts(page)
    after = [{**item, "flag": {"S": "new"}} for item in page["Items"]]
    from_text = [
        journal.entry_for(i, a, ["pk"], ["pk"], True, texts[id(i)][1])
        for i, a in zip(page["Items"], after, strict=True)
    ]
    encoded = [journal.entry_for(i, a, ["pk"], ["pk"], True) for i, a in zip(page["Items"], after, strict=True)]
    writer = journal.JournalWriter(str(tmp_path), 0)
    writer.write("a" + journal.SUFFIX, from_text)
    writer.write("b" + journal.SUFFIX, encoded)
    assert journal.read_object(str(tmp_path), 0, "a" + journal.SUFFIX) == journal.read_object(
        str(tmp_path), 0, "b" + journal.SUFFIX
    )
    (first, *_) = journal.read_object(str(tmp_path), 0, "a" + journal.SUFFIX)
    assert first["b"] == EDGE_PAGE["Items"][0] and journal.after_digest(first) == journal.item_digest(after[0])
    assert "\u2028" in gzip.decompress((tmp_path / "segment-0" / ("a" + journal.SUFFIX)).read_bytes()).decode()
