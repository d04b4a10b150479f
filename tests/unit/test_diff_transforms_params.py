"""Diffs, transform loading, parameter checks and exceptions, with no network."""

from __future__ import annotations

import pickle
from decimal import Decimal

import pytest

from ddbnb import exceptions
from ddbnb.insight.diff import diff_items
from ddbnb.worker import params
from ddbnb.worker.transforms import load_transform, transform_digest
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


def test_an_edited_transform_file_is_loaded_again(tmp_path):
    path = tmp_path / "mine.py"
    path.write_text("def fn(item):\n    return {**item, 'v': 1}\n")
    first = transform_digest(f"{path}:fn")
    assert load_transform(f"{path}:fn")({})["v"] == 1
    path.write_text("def fn(item):\n    return {**item, 'v': 2}\n")  # same size, same second
    assert load_transform(f"{path}:fn")({})["v"] == 2
    assert transform_digest(f"{path}:fn") != first


def test_an_edited_transform_module_is_reloaded(tmp_path, monkeypatch):
    (tmp_path / "edited_mod.py").write_text("def fn(item):\n    return 'old'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert load_transform("edited_mod:fn")({}) == "old"
    (tmp_path / "edited_mod.py").write_text("def fn(item):\n    return 'new'\n")
    assert load_transform("edited_mod:fn")({}) == "new"


@pytest.mark.parametrize("value", ["False", "false", "True", 0, 1, None, "no"])
def test_a_boolean_parameter_must_be_a_real_bool(value):
    with pytest.raises(exceptions.InvalidParameterError, match="-p execute True"):
        params.check_bool("execute", value)


@pytest.mark.parametrize("value", [True, False])
def test_real_bools_pass(value):
    assert params.check_bool("execute", value) is value


@pytest.mark.parametrize("value", ["ab", "x" * 256, "has space", "a/b", "", None, 12, "ünï"])
def test_table_names_follow_dynamodbs_rules(value):
    with pytest.raises(exceptions.InvalidParameterError, match="3 to 255 characters"):
        params.check_table_name("table_name", value)


@pytest.mark.parametrize(
    "value", ["abc", "demo-orders", "A_b.c-9", "x" * 255, "arn:aws:dynamodb:eu-west-1:123456789012:table/orders"]
)
def test_valid_table_names_and_arns_pass(value):
    assert params.check_table_name("table_name", value) == value


@pytest.mark.parametrize("value", [-0.1, 1.5, "0.2", True])
def test_shares_are_from_0_to_1(value):
    with pytest.raises(exceptions.InvalidParameterError, match="share from 0 to 1"):
        params.check_share("max_failed_share", value)


@pytest.mark.parametrize("value", [-1, 100.5, "5", True, None])
def test_percentages_are_from_0_to_100(value):
    with pytest.raises(exceptions.InvalidParameterError, match="percentage from 0 to 100"):
        params.check_percentage("tolerated_failure_percentage", value)
    assert params.check_percentage("tolerated_failure_percentage", 12.5) == 12.5


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
        exceptions.TransformRejectedError("a:b", 7, 25, 0.0, {"pk": 1}, "raised"),
        exceptions.DryRunRequiredError("/runs/x", "dry_run.json is missing"),
        exceptions.UnsafeDryRunError("NOT SAFE to run", "/runs/x"),
        exceptions.StackNotFoundError("s", "http://x"),
        exceptions.EndpointUnreachableError("http://127.0.0.1:1", "start it"),
        exceptions.NotLocalEndpointError("Seeding", "https://dynamodb.us-east-1.amazonaws.com"),
        exceptions.TableExistsError("t"),
        exceptions.RunIncompleteError("/runs/x", 3, 1),
        exceptions.JavaNotFoundError("no java"),
        exceptions.ServerDiedError("DynamoDB Local", "exited", "tail"),
        exceptions.UnguardedMainError("/jobs/run.py", 3),
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
