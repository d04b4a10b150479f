"""The worker's JSON encoder: orjson where installed, the standard library otherwise, the same values either way."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ddbnb.worker import jsontext
from ddbnb.worker.journal import Encoded
from tests.unit.test_journal import EDGE_PAGE

#: Wire values at the edges of what either encoder takes: text beyond ASCII and the line separators JSON
#: leaves unescaped, 38 digits, empty values, names that need escapes, and a payload's own integers.
VALUES: list[Any] = [
    EDGE_PAGE,
    {"RequestItems": {"tä ble": [{"PutRequest": {"Item": {'q"\\': {"S": "\u2028\u2029\u0085\x00\x1f"}}}}]}},
    {"TableName": "t", "Segment": 3, "TotalSegments": 2**31, "Limit": 0, "ConsistentRead": True},
    {"Statements": [{"Statement": 'UPDATE "t" SET "a" = ?', "Parameters": [{"N": "-0.000"}, {"NULL": True}]}]},
    [],
    {},
    "",
    None,
]


@pytest.mark.parametrize("value", VALUES)
def test_orjson_and_the_standard_library_write_the_same_values(value, monkeypatch):
    assert jsontext._orjson is not None  # installed with ddbnb: the worker's CPU depends on it
    fast_bytes, fast_text = jsontext.to_json_bytes(value), jsontext.to_json_text(value)
    monkeypatch.setattr(jsontext, "_orjson", None)  # as in the Lambda package
    plain_bytes, plain_text = jsontext.to_json_bytes(value), jsontext.to_json_text(value)

    assert plain_text == json.dumps(value, separators=(",", ":"))  # the spelling the worker always had
    assert plain_bytes == plain_text.encode()
    assert fast_bytes == fast_text.encode()
    assert json.loads(fast_bytes) == json.loads(plain_bytes) == value


def test_text_beyond_ascii_is_written_as_utf_8_by_orjson():
    value = {"S": "zürich \U0001f389 日本"}
    assert jsontext.to_json_bytes(value) == '{"S":"zürich \U0001f389 日本"}'.encode()
    assert json.loads(jsontext.to_json_text(value)) == value


@pytest.mark.parametrize(
    "value",
    [{"S": "lone \ud800 surrogate"}, {"n": 2**70}, {1: "a key that is not a string"}],
    ids=["lone surrogate", "int beyond 64 bits", "int key"],
)
def test_what_orjson_refuses_the_standard_library_encodes_as_it_always_did(value):
    expected = json.dumps(value, separators=(",", ":"))
    assert jsontext.to_json_text(value) == expected
    assert jsontext.to_json_bytes(value) == expected.encode()


def test_binary_is_written_as_base64_by_both(monkeypatch):
    value = {"B": b"\x00\xff", "BS": [bytearray(b"\x01")]}
    assert json.loads(jsontext.to_json_bytes(value)) == {"B": "AP8=", "BS": ["AQ=="]}
    monkeypatch.setattr(jsontext, "_orjson", None)
    assert json.loads(jsontext.to_json_bytes(value)) == {"B": "AP8=", "BS": ["AQ=="]}


def test_a_value_json_has_no_type_for_is_refused_by_both(monkeypatch):
    for orjson in (jsontext._orjson, None):
        monkeypatch.setattr(jsontext, "_orjson", orjson)
        with pytest.raises(TypeError, match="not JSON serializable"):
            jsontext.to_json_bytes({"S": object()})


def test_a_string_subclass_is_written_as_its_text():
    assert jsontext.to_json_text({"b": Encoded("x")}) == '{"b":"x"}'
