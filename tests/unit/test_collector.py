"""The collector settings of a process that only runs segments, each checked in a fresh interpreter."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from ddbnb.worker.collector import YOUNG_THRESHOLD
from tests.conftest import ROOT


def _in_fresh_python(code: str) -> dict[str, object]:
    env = {**os.environ, "AWS_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "unit", "AWS_SECRET_ACCESS_KEY": "unit"}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    found: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return found


def test_a_settled_process_collects_young_objects_rarely_and_freezes_what_it_held_once():
    found = _in_fresh_python(
        """
import gc, json
from ddbnb.worker.collector import YOUNG_THRESHOLD, settle_collector
before = gc.get_threshold()
settle_collector()
frozen = gc.get_freeze_count()
kept = [[i] for i in range(1000)]
settle_collector()
print(json.dumps({"before": before, "after": gc.get_threshold(), "frozen": frozen, "again": gc.get_freeze_count(),
                  "young": YOUNG_THRESHOLD}))
"""
    )
    before, after = found["before"], found["after"]
    assert isinstance(before, list) and isinstance(after, list)
    assert before[0] < after[0] == found["young"]  # 700 on CPython 3.11 and 3.12
    assert after[1:] == before[1:]
    assert isinstance(found["frozen"], int) and found["frozen"] > 10_000  # the modules it imported
    assert found["again"] == found["frozen"]  # the second call froze nothing more


def test_a_collector_turned_off_stays_off():
    found = _in_fresh_python(
        """
import gc, json
from ddbnb.worker.collector import settle_collector
gc.set_threshold(0)
settle_collector()
print(json.dumps({"after": gc.get_threshold()}))
"""
    )
    after = found["after"]
    assert isinstance(after, list) and after[0] == 0


def test_the_lambda_handler_settles_its_process_on_its_first_call():
    found = _in_fresh_python(
        """
import gc, json
from ddbnb.worker.lambda_entry import handle

class Context:
    def get_remaining_time_in_millis(self):
        return 60_000

before = gc.get_threshold()[0]
assert handle({"action": "capacity_ready", "tables": []}, Context()) == {"ready": True}  # asks nothing
print(json.dumps({"before": before, "after": gc.get_threshold()[0], "frozen": gc.get_freeze_count()}))
"""
    )
    assert isinstance(found["before"], int) and found["before"] < found["after"] == YOUNG_THRESHOLD
    assert isinstance(found["frozen"], int) and found["frozen"] > 0
