"""One batch of stream records, as a Lambda event source mapping hands it to the aws engine's follower.

Only the standard library and boto3: this module ships inside the Lambda package.

``ddbnb follow`` writes the follower's settings (the run's transform, tables,
limits, journal and where to report) to the results bucket before it enables
the mapping; the function finds them through the :data:`SETTINGS_VARIABLE`
environment variable the stack sets. Each batch is applied by the same
:class:`~ddbnb.worker.follower.Follower` as the local engine's, then reported
(``<run>/follow/batches/<time>-<tag>.json``: the sequence numbers it handled and
its counts), which is how ``follow`` on the operator's machine knows the lag.

What goes back to the mapping (``ReportBatchItemFailures``):

- a record that is not a DynamoDB stream record of the followed table's keys
  is a *bad record*: every other record is applied, and the first bad one is
  reported, so the mapping retries from it (bisecting) and, after its maximum
  retries, sends the range to the stack's on-failure queue, where ``follow``
  finds it and says which keys it skipped;
- reads or writes throttled throughout: the whole batch is reported, to come
  again (every record is re-read, so applying one twice changes nothing);
- an item the transform fails on is logged with its key (the follower's
  failure log), and the batch goes on.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import boto3

from ddbnb.exceptions import DdbnbError, FollowSettingsError, ThrottledError
from ddbnb.worker.clients import client, split_s3
from ddbnb.worker.follower import Follower
from ddbnb.worker.streams import changes, created_at

#: The environment variable that holds the S3 location of the follower's settings.
SETTINGS_VARIABLE = "DDBNB_FOLLOW_SETTINGS"
#: The counts a batch report carries.
COUNTS = ("scanned", "written", "deleted", "unchanged", "failed", "gone", "conflicts", "write_units", "read_units")


def handle_records(event: Mapping[str, Any], boto3_session: boto3.Session | None = None) -> dict[str, Any]:
    """The follower Lambda's work: apply one batch of stream records; the records to hand back again."""
    location = os.environ.get(SETTINGS_VARIABLE, "")
    if not location.startswith("s3://"):
        raise FollowSettingsError(location, f"are not named: {SETTINGS_VARIABLE} is not an s3:// location")
    bucket, key = split_s3(location)
    s3 = client("s3", boto3_session)
    try:
        settings = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    except s3.exceptions.NoSuchKey:
        raise FollowSettingsError(location, "do not exist") from None
    return follow_batch(event.get("Records") or [], settings, boto3_session)


def follow_batch(
    records: Sequence[Mapping[str, Any]], settings: Mapping[str, Any], boto3_session: boto3.Session | None = None
) -> dict[str, Any]:
    """Apply ``records`` with the follower ``settings`` describe; report the batch; the records to retry."""
    table = settings["event"]["table"]
    follower = Follower(settings["event"], boto3_session)
    names = list(follower.work.writer.keys)
    good: list[Mapping[str, Any]] = []
    first_bad: str | None = None
    floor = float(settings.get("floor") or 0)
    try:
        for record in records:
            problem = record_problem(record, table, names)
            if problem is None:
                good.append(record)
            elif first_bad is None:
                first_bad = _sequence(record, problem)
                print(json.dumps({"bad_record": first_bad, "problem": problem}))
        fresh = [record for record in good if created_at(record) >= floor]
        try:
            if fresh:
                follower.apply(changes(fresh, names))
        except ThrottledError:
            return {"batchItemFailures": [{"itemIdentifier": records[0]["dynamodb"]["SequenceNumber"]}]}
    finally:
        follower.close()
    _report(settings["reports_to"], good, follower.result, floor, boto3_session)
    return {"batchItemFailures": [{"itemIdentifier": first_bad}] if first_bad else []}


def record_problem(record: Mapping[str, Any], table: str, key_names: Sequence[str]) -> str | None:
    """Why ``record`` is not a stream record of ``table`` with its key, or None."""
    if record.get("eventSource") != "aws:dynamodb":
        return f"its eventSource is {record.get('eventSource')!r}, not 'aws:dynamodb'"
    arn = str(record.get("eventSourceARN") or "")
    if f":table/{table}/stream/" not in arn:
        raise FollowSettingsError(
            "", f"follow table {table!r}, but the mapping hands the follower records of {arn or 'no stream'}"
        )
    body = record.get("dynamodb") or {}
    keys = body.get("Keys") or {}
    missing = [name for name in key_names if not isinstance(keys.get(name), dict) or len(keys[name]) != 1]
    if missing:
        return f"its Keys lack {', '.join(missing)}"
    return None


def _sequence(record: Mapping[str, Any], problem: str) -> str:
    """A bad record's sequence number, which the mapping retries from; a record without one fails the batch."""
    number = (record.get("dynamodb") or {}).get("SequenceNumber")
    if not isinstance(number, str) or not number:
        raise DdbnbError(f"A stream record without a sequence number ({problem}): the whole batch goes back.")
    return number


def _report(
    to: str, records: Sequence[Mapping[str, Any]], result: Mapping[str, Any], floor: float, session: Any
) -> None:
    """Write the batch's report: the sequence numbers handled (at or after the floor) and its counts."""
    handled = [
        [record["dynamodb"]["SequenceNumber"], created_at(record)] for record in records if created_at(record) >= floor
    ]
    now = time.time()
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + f"{now % 1:.6f}"[1:]
    body = {"handled": handled, "finished_at": now, **{name: result.get(name, 0) for name in COUNTS}}
    bucket, prefix = split_s3(to)
    client("s3", session).put_object(
        Bucket=bucket, Key=f"{prefix}/{stamp}-{uuid.uuid4().hex[:8]}.json", Body=json.dumps(body).encode()
    )
