"""Sizing of guarded writes: what an endpoint that reports no capacity is charged by."""

from __future__ import annotations

import pytest

from ddbnb.worker.conditional import delete_write, insert_write, update_write
from ddbnb.worker.items import item_size

KEYS = ["pk", "sk"]
RAW = {
    "pk": {"S": "p"},
    "sk": {"N": "1"},
    "name": {"S": "naïve ☃"},
    "tags": {"SS": ["a", "b"]},
    "doc": {"M": {"n": {"N": "12345678901234567890123456789012345678"}, "l": {"L": []}}},
    "v": {"N": "7"},
}


@pytest.mark.parametrize(
    "new",
    [
        {**RAW, "flag": {"S": "ddbnb"}},  # an attribute added
        {**RAW, "name": {"S": "x" * 3000}},  # a value grown past a write unit
        {**RAW, "name": {"S": ""}},  # a value shrunk
        {k: v for k, v in RAW.items() if k not in ("doc", "tags")},  # attributes removed
        {**{k: v for k, v in RAW.items() if k != "doc"}, "doc2": RAW["doc"], "tags": {"SS": ["ü"]}},  # all three
    ],
)
@pytest.mark.parametrize("version_attribute", ["", "v"])
def test_an_update_is_sized_as_the_larger_of_before_and_after(new, version_attribute):
    write = update_write("t", KEYS, RAW, new, version_attribute)
    assert write is not None and write.new is not None
    assert write.written_size() == max(item_size(RAW), item_size(write.new))


def test_inserts_and_deletes_are_sized_whole():
    bigger = {**RAW, "extra": {"B": "MTIzNA=="}}
    assert insert_write("t", KEYS, bigger, RAW).written_size() == item_size(bigger)
    assert insert_write("t", KEYS, RAW, bigger).written_size() == item_size(bigger)
    assert delete_write("t", KEYS, RAW).written_size() == item_size(RAW)
