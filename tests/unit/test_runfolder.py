"""The run folder's own rules, without servers: the recorded plan and its differences, where the journal
is once the folder moved, attempts that never overwrite, and the lock."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from ddbnb.exceptions import RunFolderBusyError
from ddbnb.runfolder import RunFolder

PLAN = {
    "table": "orders",
    "destination": None,
    "transform": "t.py:fn",
    "transform_sha256": "abc",
    "write_mode": "conditional",
    "engine": "local",
    "total_segments": 8,
    "capacity_share": 0.25,
    "journal": True,
}


def test_a_plan_that_differs_in_anything_that_decides_the_writes_or_their_pace_is_named(tmp_path):
    folder = RunFolder(tmp_path)
    assert folder.differences({**PLAN, "engine": "aws"}) == []  # nothing recorded yet
    folder.record_plan({**PLAN, "journal_to": "journal"})
    assert folder.differences({**PLAN}) == []
    assert folder.differences({**PLAN, "total_segments": 8.0, "destination": ""}) == []  # the same values
    changed = folder.differences({**PLAN, "engine": "aws", "capacity_share": 0, "journal": False})
    assert changed == [
        "engine: 'local' when the run started, 'aws' now",
        "capacity_share: 0.25 when the run started, 0 now",
        "journal: True when the run started, False now",
    ]
    # A folder recorded by an older ddbnb: only what it recorded is compared.
    (tmp_path / "plan.json").write_text(json.dumps({"table": "orders", "total_segments": 8}))
    assert folder.differences({**PLAN, "capacity_share": 0.5}) == []


def test_the_journal_is_found_where_the_folder_is_now(tmp_path):
    first = RunFolder(tmp_path / "first")
    first.record_plan({**PLAN, "journal_to": "journal"})
    (first / "journal").mkdir()
    (tmp_path / "first").rename(tmp_path / "moved")
    assert RunFolder(tmp_path / "moved").journal_location() == str((tmp_path / "moved" / "journal").resolve())
    # An older folder recorded the path as it was written; once that is gone, its own journal/ is used.
    old = RunFolder(tmp_path / "moved")
    old.update_plan(journal_to=str(tmp_path / "first" / "journal"))
    assert old.journal_location() == str((tmp_path / "moved" / "journal").resolve())
    old.update_plan(journal_to="s3://bucket/runs/x/journal")
    assert old.journal_location() == "s3://bucket/runs/x/journal"


def test_attempts_never_overwrite_each_other(tmp_path):
    folder = RunFolder(tmp_path)
    paths = [folder.attempt_path("03_migrate.ipynb") for _ in range(3)]
    for path in paths:
        path.write_text("x")
    assert len(set(paths)) == 3 and all(p.parent == tmp_path / "attempts" for p in paths)


def test_one_holder_at_a_time_and_a_refused_start_leaves_no_folder(tmp_path):
    folder = RunFolder(tmp_path / "new")
    with folder.lock("migrate"):
        held = folder.holder()
        assert held is not None and held["pid"] == os.getpid() and held["operation"] == "migrate"
        with pytest.raises(RunFolderBusyError, match=f"pid {os.getpid()}"), folder.lock("rollback"):
            pass
    assert folder.holder() is None and not (tmp_path / "new").exists()  # made for the lock, left empty: gone
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / "run.lock").write_text(json.dumps({"pid": int(gone.stdout), "host": os.uname().nodename}))
    assert RunFolder(tmp_path).holder() is None  # its process is gone: stale
    other_host = {"pid": os.getpid(), "host": "elsewhere", "operation": "migrate"}
    (tmp_path / "run.lock").write_text(json.dumps(other_host))
    with pytest.raises(RunFolderBusyError, match="on elsewhere"), RunFolder(tmp_path).lock("migrate"):
        pass


def test_the_gate_says_what_the_dry_run_previewed(tmp_path):
    from ddbnb.exceptions import DryRunRequiredError
    from ddbnb.gate import check_dry_run
    from ddbnb.plan import Plan
    from ddbnb.worker.tables import TableFacts

    for name in ("purge.py", "other.py"):
        (tmp_path / name).write_text("def fn(item):\n    return None\n")
    facts = TableFacts("orders", 10, 1_000, "PAY_PER_REQUEST", 0, 0, ("pk",))
    previewed = {
        "table": "orders",
        "destination": None,
        "transform": f"{tmp_path}/other.py:fn",
        "transform_sha256": "x",
    }
    (tmp_path / "dry_run.json").write_text(json.dumps(previewed))
    copy = Plan(facts, f"{tmp_path}/purge.py:fn", "local", 1, 1, destination="orders-v2")
    with pytest.raises(
        DryRunRequiredError, match="previewed table 'orders' in place, not table 'orders' into 'orders-v2'"
    ):
        check_dry_run(copy, str(tmp_path))
    other = Plan(facts, f"{tmp_path}/purge.py:fn", "local", 1, 1)
    with pytest.raises(DryRunRequiredError, match=r"it previewed .*other\.py:fn, not .*purge\.py:fn"):
        check_dry_run(other, str(tmp_path))
