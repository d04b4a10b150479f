"""Every failed item's key, kept: a bounded list in the result, and all of them in a log.

Only the standard library and boto3: this module ships inside the Lambda package.

The result that Step Functions carries is capped at 256 KiB, so it lists at
most 100 failures (64 KiB); the ``failed`` count is always exact. Every failure
also goes to the run's failure log, one JSON line per item (with the key in
wire format too, so a retry reads exactly that item), written when an
invocation ends (an invocation that dies is run again from the same cursor, so
its items are failed and logged again):

- a folder (local engine): ``<folder>/segment-<n>.jsonl``, appended;
- ``s3://bucket/prefix`` (aws engine): one object per invocation under
  ``prefix/segment-<n>/``, fetched into the run folder after the run.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import boto3

from ddbnb.worker.clients import client, split_s3
from ddbnb.worker.items import deserialize, format_key

#: At most this many failures are listed per segment in its result.
MAX_FAILURES = 100
#: ...and they take at most this many bytes of JSON, so a result stays far below
#: Step Functions' 256 KiB state limit even with 2 KB keys.
MAX_FAILURE_BYTES = 64 * 1024
#: Longer error messages are cut to this many characters.
MAX_ERROR_CHARS = 400


def log_name(segment: int) -> str:
    """The file name of a segment's failure log in a folder."""
    return f"segment-{segment}.jsonl"


class FailureLog:
    """Failures of one invocation: listed (bounded) in the result, logged (all) at the end."""

    def __init__(
        self,
        result: dict[str, Any],
        target: str | None,
        boto3_session: boto3.Session | None = None,
        *,
        counter: str = "failed",
        listed: str = "failures",
    ) -> None:
        self.result = result
        self.target = target or ""
        self.session = boto3_session
        self.counter, self.listed = counter, listed  # the result's count and bounded list
        self.lines: list[str] = []
        result.setdefault(listed, [])
        self._listed_bytes = sum(len(json.dumps(f, default=str)) for f in result[listed])

    def entry(self, key: Mapping[str, Any], error: str) -> dict[str, Any]:
        """The JSON-safe record of one failure: the key (``key`` is in wire format) shown plainly, the key
        as DynamoDB spells it (``wire``: exact, so a retry finds the item), and the error."""
        return {"key": format_key(deserialize(key)), "wire": dict(key), "error": error[:MAX_ERROR_CHARS]}

    def add(self, entries: list[dict[str, Any]]) -> None:
        """Count, list (while there is room) and log ``entries``."""
        self.result[self.counter] += len(entries)
        failures = self.result[self.listed]
        for entry in entries:
            self.lines.append(json.dumps({"segment": self.result["segment"], **entry}, default=str))
            size = len(json.dumps(entry, default=str))
            if len(failures) < MAX_FAILURES and self._listed_bytes + size <= MAX_FAILURE_BYTES:
                failures.append(entry)
                self._listed_bytes += size

    def flush(self) -> None:
        """Write this invocation's failures to the log (nothing when there are none or no log)."""
        if not self.lines or not self.target:
            return
        body = ("\n".join(self.lines) + "\n").encode()
        segment = int(self.result["segment"])
        if self.target.startswith("s3://"):
            bucket, prefix = split_s3(self.target)
            stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
            key = f"{prefix}/segment-{segment}/{stamp}-{uuid.uuid4().hex[:8]}.jsonl"
            client("s3", self.session).put_object(Bucket=bucket, Key=key, Body=body)
        else:
            folder = Path(self.target)
            folder.mkdir(parents=True, exist_ok=True)
            with open(folder / log_name(segment), "ab") as out:
                out.write(body)
        self.lines = []
