"""Wire-format conversion, sizes and the per-item verdict, with no network."""

from __future__ import annotations

from decimal import Decimal

import pytest
from boto3.dynamodb.types import Binary, TypeDeserializer, TypeSerializer

from ddbnb.worker.evaluate import DELETE, FAILED, PUT, UNCHANGED, evaluate
from ddbnb.worker.items import (
    ItemTypeError,
    attribute_size,
    deserialize,
    format_key,
    item_size,
    matches,
    serialize,
    serialize_changes,
)

PYTHON_ITEM = {
    "pk": "user#1",
    "n": Decimal("12.50"),
    "i": 7,
    "flag": True,
    "nothing": None,
    "blob": b"\x00\x01",
    "tags": {"b", "a"},
    "scores": {Decimal(1), Decimal("2.5")},
    "blobs": {b"x", b"y"},
    "nested": {"list": [Decimal(1), "two", {"deep": [b"z"]}], "empty": {}},
}


def test_serialize_matches_boto3_and_round_trips():
    wire = serialize(PYTHON_ITEM)
    boto = {k: TypeSerializer().serialize(v) for k, v in PYTHON_ITEM.items()}
    for name in ("pk", "n", "i", "flag", "nothing"):
        assert wire[name] == boto[name], name
    assert wire["blob"] == {"B": "AAE="}  # the JSON wire format carries binary as base64
    assert wire["nested"]["M"]["list"]["L"][2] == {"M": {"deep": {"L": [{"B": "eg=="}]}}}
    assert sorted(wire["tags"]["SS"]) == sorted(boto["tags"]["SS"])
    back = deserialize(wire)
    assert back == {**PYTHON_ITEM, "i": Decimal(7)}
    assert isinstance(back["blob"], bytes)
    boto_back = {k: TypeDeserializer().deserialize(v) for k, v in wire.items() if k in ("scores", "tags", "n")}
    assert (boto_back["scores"], boto_back["tags"], boto_back["n"]) == (back["scores"], back["tags"], back["n"])


def test_boto3_binary_values_are_accepted():
    assert serialize({"b": Binary(b"abc")}) == {"b": {"B": "YWJj"}}
    assert deserialize({"b": {"B": b"abc"}, "s": {"BS": ["YWJj"]}}) == {"b": b"abc", "s": {b"abc"}}


@pytest.mark.parametrize(
    ("item", "words"),
    [
        ({"a": {"b": [0.5]}}, ["a.b[0]", "Decimal"]),
        ({"s": set()}, ["s", "empty sets"]),
        ({"mixed": {1, "a"}}, ["mixed", "only strings"]),
        ({"obj": object()}, ["obj", "object"]),
    ],
)
def test_values_dynamodb_rejects_name_their_path(item, words):
    with pytest.raises(ItemTypeError) as info:
        serialize(item)
    for word in words:
        assert word in str(info.value)


def test_a_non_dict_result_is_rejected():
    with pytest.raises(ItemTypeError, match="list"):
        serialize([1, 2])  # type: ignore[arg-type]


def test_item_size_follows_dynamodb_rules():
    assert item_size({"ab": {"S": "xyz"}}) == 5
    assert item_size({"b": {"B": b"1234"}}) == 5
    assert item_size({"b": {"B": "MTIzNA=="}}) == 5
    assert item_size({"t": {"BOOL": True}, "z": {"NULL": True}}) == 4
    assert item_size({"m": {"M": {"k": {"S": "v"}}}}) == 1 + 3 + 1 + 1 + 1
    assert 300_000 < item_size(serialize({"big": "x" * 300_000})) < 300_010


@pytest.mark.parametrize(
    ("value", "size"),
    [
        ({"S": "é☃"}, 5),  # UTF-8 bytes, not characters
        ({"S": ""}, 0),
        ({"N": "-0.001"}, 3),  # one significant digit, and the sign
        ({"N": "1.0E+5"}, 2),  # the exponent is not a digit
        ({"N": "-7e-3"}, 3),
        ({"N": "9" * 38}, 20),  # 38 digits: 19 bytes, plus one
        ({"N": "0"}, 2),
        ({"N": ""}, 2),  # DynamoDB refuses it; sizing a request that carries it must not fail first
        ({"SS": ["a", "ü"]}, 3),
        ({"NS": ["1", "-22"]}, 2 + 3),
        ({"BS": [b"12", "MTIzNA=="]}, 2 + 4),
        ({"L": [{"S": "ab"}, {"NULL": True}]}, 3 + 1 + 2 + 1 + 1),
        ({"M": {"ñ": {"BOOL": False}}}, 3 + 2 + 1 + 1),
        ({"L": []}, 3),
        ({"M": {}}, 3),
    ],
)
def test_item_size_of_each_type(value, size):
    assert item_size({"a": value}) == 1 + size
    assert attribute_size("ä", value) == 2 + size


def test_format_key_is_json_safe():
    assert format_key({"pk": "a", "n": Decimal("3"), "f": Decimal("1.5"), "b": b"\x01"}) == {
        "pk": "a",
        "n": 3,
        "f": 1.5,
        "b": "01",
    }


def keep(item):
    return item


def add(item):
    item["x"] = 1
    return item


def mutate_key(item):
    item["pk"] = "other"
    return item


def huge(item):
    item["blob"] = b"x" * 500_000
    return item


RAW = {"pk": {"S": "k"}, "v": {"N": "1"}}


@pytest.mark.parametrize(
    ("transform", "in_place", "action", "rule"),
    [
        (keep, True, UNCHANGED, ""),
        (keep, False, PUT, ""),
        (add, True, PUT, ""),
        (lambda item: None, True, DELETE, ""),
        (mutate_key, True, FAILED, "key_changed"),
        (mutate_key, False, PUT, ""),
        (huge, True, FAILED, "too_large"),
        (lambda item: 1 / 0, True, FAILED, "raised"),
        (lambda item: "text", True, FAILED, "invalid_type"),
        (lambda item: {**item, "f": 1.0}, True, FAILED, "invalid_type"),
    ],
)
def test_evaluate_decides_each_outcome(transform, in_place, action, rule):
    verdict = evaluate(transform, RAW, ("pk",), in_place=in_place)
    assert (verdict.action, verdict.rule) == (action, rule)
    if action == PUT:
        assert verdict.wire is not None and verdict.wire["pk"] == (
            {"S": "other"} if transform is mutate_key else RAW["pk"]
        )


def test_a_transform_that_mutates_its_input_is_still_compared_to_the_original():
    verdict = evaluate(add, RAW, ("pk",))
    assert verdict.action == PUT and "x" not in verdict.before


@pytest.mark.parametrize(
    ("value", "wire", "same"),
    [
        ({"s": {"b", "a"}}, {"s": {"SS": ["a", "b"]}}, True),
        ({"n": 1}, {"n": {"N": "1.0"}}, True),
        ({"n": True}, {"n": {"N": "1"}}, False),
        ({"b": True}, {"b": {"N": "1"}}, False),
        ({"b": 1}, {"b": {"BOOL": True}}, False),
        ({"l": ("x",)}, {"l": {"L": [{"S": "x"}]}}, True),
        ({"l": ["x", "y"]}, {"l": {"L": [{"S": "x"}]}}, False),
        ({"m": {"k": b"x"}}, {"m": {"M": {"k": {"B": "eA=="}}}}, True),
        ({"a": "x"}, {"a": {"S": "x"}, "extra": {"S": "y"}}, False),
        ({"a": "x", "new": 1}, {"a": {"S": "x"}}, False),
        ({"z": None}, {"z": {"NULL": True}}, True),
        ({"ns": {1, 2}}, {"ns": {"NS": ["2", "1"]}}, True),
    ],
)
def test_matches_compares_values_and_types(value, wire, same):
    assert matches(value, wire) is same


def test_an_attribute_still_holding_the_object_read_is_unchanged_and_anything_else_is_compared():
    raw = {
        "pk": {"S": "a"},
        "n": {"N": "12345678901234567890123456789012345678"},
        "gone": {"NULL": True},
        "s": {"S": "x"},
        "b": {"B": "AAE="},
        "l": {"L": [{"N": "1"}]},
        "ss": {"SS": ["p", "q"]},
    }
    item = deserialize(raw)
    read = dict(item)
    # As read: every value the very object read, and nothing changed.
    wire, changed = serialize_changes(item, raw, read)
    assert not changed and all(wire[name] is raw[name] for name in raw)
    # Equal values that are other objects are compared, and still unchanged.
    same = {**item, "s": "".join(["x"]), "n": Decimal("12345678901234567890123456789012345678"), "b": bytes([0, 1])}
    assert serialize_changes(same, raw, read) == (raw, False)
    # Containers changed in place are the same objects, and are compared: changed.
    item["l"].append(Decimal(2))
    item["ss"].add("r")
    wire, changed = serialize_changes(item, raw, read)
    assert changed and wire["l"] == {"L": [{"N": "1"}, {"N": "2"}]} and sorted(wire["ss"]["SS"]) == ["p", "q", "r"]
    # None where the item held a string is a change, with or without the values read (no shortcut by absence).
    for values in (read, None):
        wire, changed = serialize_changes({**deserialize(raw), "s": None}, raw, values)
        assert changed and wire["s"] == {"NULL": True}
    # A value as read under another name is compared as a value of that name.
    wire, changed = serialize_changes({**deserialize(raw), "s": read["pk"]}, raw, read)
    assert changed and wire["s"] == {"S": "a"}


def test_maps_and_lists_compared_by_wire_form_are_unchanged_however_their_wire_is_spelled():
    raw = {
        "pk": {"S": "a"},
        # Sets in any order, numbers spelled as DynamoDB might not, binary and booleans, nested.
        "m": {"M": {"ss": {"SS": ["q", "p"]}, "n": {"N": "1.0"}, "b": {"B": "AAE="}, "t": {"BOOL": True}}},
        "l": {"L": [{"M": {"ns": {"NS": ["2", "10"]}}}, {"N": "1E+3"}, {"NULL": True}, {"L": []}, {"M": {}}]},
    }
    item = deserialize(raw)
    wire, changed = serialize_changes(item, raw, dict(item))
    assert not changed and wire["m"] is raw["m"] and wire["l"] is raw["l"]
    # Equal values of other types are the same DynamoDB value; a number for a boolean is not.
    item["m"]["n"], item["l"][1] = 1, Decimal("1000")
    assert serialize_changes(item, raw, dict(item)) == (raw, False)
    item["m"]["t"] = 1
    wire, changed = serialize_changes(item, raw, dict(item))
    assert changed and wire["m"]["M"]["t"] == {"N": "1"} and wire["l"] is raw["l"]
    # A change deep in a list is seen, and a value DynamoDB rejects there names its path.
    item = deserialize(raw)
    item["l"][0]["ns"].add(Decimal(3))
    wire, changed = serialize_changes(item, raw, dict(item))
    assert changed and sorted(wire["l"]["L"][0]["M"]["ns"]["NS"]) == ["10", "2", "3"] and wire["m"] is raw["m"]
    item["l"][3].append(1.5)
    with pytest.raises(ItemTypeError, match=r"l\[3\]\[0\]: float"):
        serialize_changes(item, raw, dict(item))
