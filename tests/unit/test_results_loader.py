"""The results loader reads ResultWriter files shaped as AWS documents them."""

from __future__ import annotations

import json

import pytest

from ddbnb import load_failures, load_results
from ddbnb.exceptions import DdbnbError

MAP_RUN = "arn:aws:states:us-east-1:123456789012:mapRun:ddbnb/Map:ad9b5f27-090b-3ac6-9beb-243cd77144a7"
PREFIX = "runs/ad9b5f27-090b-3ac6-9beb-243cd77144a7"


def output(segment: int, scanned: int, failures: list) -> str:
    return json.dumps(
        {
            "segment": segment,
            "total_segments": 3,
            "cursor": None,
            "scanned": scanned,
            "written": scanned - 1,
            "unchanged": 1,
            "deleted": 0,
            "failed": len(failures),
            "conflicts": 0,
            "read_units": 10.5,
            "write_units": 20.0,
            "pages": 2,
            "invocations": 3,
            "started_at": "2026-11-01T10:00:00.000+00:00",
            "finished_at": f"2026-11-01T10:00:{10 + segment:02d}.000+00:00",
            "failures": failures,
        }
    )


@pytest.fixture
def aws_run(tmp_path):
    succeeded = [
        {
            "ExecutionArn": f"arn:aws:states:us-east-1:123456789012:execution:ddbnb/Map:{i}",
            "Input": json.dumps({"table": "t", "segment": i, "total_segments": 3}),
            "InputDetails": {"Included": True},
            "Name": f"child-{i}",
            "Output": output(i, 100 * (i + 1), [{"key": {"pk": "a"}, "error": "raised: boom"}] if i else []),
            "OutputDetails": {"Included": True},
            "RedriveCount": 0,
            "RedriveStatus": "NOT_REDRIVABLE",
            "RedriveStatusReason": "Execution is SUCCEEDED and cannot be redriven",
            "StartDate": "2026-11-01T10:00:00.000Z",
            "StateMachineArn": "arn:aws:states:us-east-1:123456789012:stateMachine:ddbnb/Map",
            "Status": "SUCCEEDED",
            "StopDate": "2026-11-01T10:00:12.000Z",
        }
        for i in (0, 1)
    ]
    failed = [
        {
            "Cause": "Lambda timed out",
            "Error": "States.Timeout",
            "ExecutionArn": "arn:aws:states:us-east-1:123456789012:execution:ddbnb/Map:2",
            "Input": json.dumps({"table": "t", "segment": 2, "total_segments": 3}),
            "InputDetails": {"Included": True},
            "Name": "child-2",
            "RedriveCount": 0,
            "RedriveStatus": "REDRIVABLE",
            "StartDate": "2026-11-01T10:00:00.000Z",
            "StateMachineArn": "arn:aws:states:us-east-1:123456789012:stateMachine:ddbnb/Map",
            "Status": "FAILED",
            "StopDate": "2026-11-01T10:15:00.000Z",
        }
    ]
    (tmp_path / "SUCCEEDED_0.json").write_text(json.dumps(succeeded))
    (tmp_path / "FAILED_0.json").write_text(json.dumps(failed))
    (tmp_path / "manifest.json").write_text(
        json.dumps(
            {
                "DestinationBucket": "results-bucket",
                "MapRunArn": MAP_RUN,
                "ResultFiles": {
                    "FAILED": [{"Key": f"{PREFIX}/FAILED_0.json", "Size": 1}],
                    "PENDING": [],
                    "SUCCEEDED": [{"Key": f"{PREFIX}/SUCCEEDED_0.json", "Size": 1}],
                },
            }
        )
    )
    return tmp_path


def test_one_row_per_segment_with_rates_and_failures(aws_run):
    frame = load_results(aws_run)
    assert list(frame["segment"]) == [0, 1, 2]
    assert list(frame["status"]) == ["SUCCEEDED", "SUCCEEDED", "FAILED"]
    assert list(frame["scanned"]) == [100, 200, 0]
    assert list(frame["duration_s"]) == [10.0, 11.0, 900.0]
    assert frame.loc[1, "items_per_s"] == pytest.approx(200 / 11)
    assert frame.loc[2, "error"] == "States.Timeout: Lambda timed out"
    failures = load_failures(aws_run)
    assert failures.to_dict("records") == [{"segment": 1, "key": '{"pk": "a"}', "error": "raised: boom"}]


def test_a_folder_without_results_says_what_to_set(tmp_path):
    with pytest.raises(DdbnbError, match="run_dir"):
        load_results(tmp_path)


def test_a_result_file_missing_from_the_folder_is_named(aws_run):
    (aws_run / "FAILED_0.json").unlink()
    with pytest.raises(DdbnbError, match=r"FAILED_0\.json"):
        load_results(aws_run)
