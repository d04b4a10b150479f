"""Diffs, transform loading, parameter checks and exceptions, with no network."""

from __future__ import annotations

import pickle
from decimal import Decimal

import pytest

from ddbnb import exceptions, params
from ddbnb.diff import diff_items
from ddbnb.transforms import load_transform
from tests.conftest import TRANSFORMS


def test_diff_reports_each_kind_of_change_with_paths():
    before = {"a": 1, "b": {"c": [1, 2], "d": "x"}, "gone": True, "n": Decimal(1)}
    after = {"a": "1", "b": {"c": [1, 3, 4], "d": "x"}, "new": {"k": 1}, "n": 1}
    changes = {(c.path, c.change) for c in diff_items(before, after)}
    assert changes == {
        ("a", "type_changed"),
        ("b.c[1]", "changed"),
        ("b.c[2]", "added"),
        ("gone", "removed"),
        ("new", "added"),
    }


def test_transforms_load_from_a_file_or_a_module():
    assert load_transform(f"{TRANSFORMS}:bump")({"visits": 1}) == {"visits": 2}
    assert load_transform("tests.fixtures.transforms:set_flag")({}) == {"flag": "v2"}


def test_a_transform_file_that_fails_to_import_names_the_error(tmp_path):
    broken = tmp_path / "broken.py"
    broken.write_text("import nowhere_to_be_found\n")
    with pytest.raises(exceptions.TransformLoadError, match="nowhere_to_be_found"):
        load_transform(f"{broken}:fn")


@pytest.mark.parametrize("value", [0, -1, 1_000_001, 1.5, "8", True, None])
def test_total_segments_outside_the_range_is_refused(value):
    with pytest.raises(exceptions.InvalidParameterError, match="total_segments"):
        params.check_total_segments(value)


@pytest.mark.parametrize("value", [1, 1_000_000])
def test_total_segments_bounds_are_accepted(value):
    assert params.check_total_segments(value) == value


@pytest.mark.parametrize(
    "error",
    [
        exceptions.InvalidParameterError("total_segments", 0, "a whole number"),
        exceptions.TableNotFoundError("t", "http://x"),
        exceptions.TransformLoadError("a:b", "reason"),
        exceptions.TransformRejectedError("a:b", {"pk": 1}, "raised"),
        exceptions.RunIncompleteError("/runs/x", 3, 1),
        exceptions.JavaNotFoundError("no java"),
        exceptions.ServerDiedError("DynamoDB Local", "exited", "tail"),
        exceptions.DdbnbError("plain"),
    ],
)
def test_exceptions_keep_their_fields_through_pickling(error):
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error) and str(copy) == str(error) and copy.fields == error.fields
    assert isinstance(copy, exceptions.DdbnbError)
    assert copy._render_traceback_() == [f"{type(error).__name__}: {error}"]


def test_specific_exceptions_end_in_error():
    names = [n for n in dir(exceptions) if isinstance(getattr(exceptions, n), type)]
    ours = [n for n in names if issubclass(getattr(exceptions, n), exceptions.DdbnbError)]
    assert ours and all(n.endswith("Error") for n in ours)
