"""Crash-proof local runs: checkpoints after every page, and a run that goes on where it was killed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import ddbnb
from ddbnb.engines.checkpoints import load_all
from tests.conftest import ROOT, scan_all, simple_item, spec

ITEMS = 1_500


def scanned_so_far(run_dir: Path) -> int:
    try:
        return sum(int(c["scanned"]) for c in load_all(run_dir).values())
    except (OSError, ValueError):
        return 0


@contextmanager
def slow_run(table: str, run_dir: Path, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A run paced to about 8 seconds, in its own process group, as a user's script would start it.

    Whatever the test does to it, the whole group is gone when the block ends.
    """
    script = textwrap.dedent(f"""
        import ddbnb
        if __name__ == "__main__":
            plan = ddbnb.plan_migration({table!r}, {spec("set_flag")!r}, total_segments=4, max_concurrency=2,
                                        rate_limit=250)
            ddbnb.migrate(plan, execute=True, run_dir={str(run_dir)!r}, require_dry_run=False, progress=False)
    """)
    (tmp_path / "run_it.py").write_text(script)
    child = subprocess.Popen(
        [sys.executable, str(tmp_path / "run_it.py")],
        cwd=ROOT,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        yield child
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)


def wait_for(run_dir: Path, child: subprocess.Popen[bytes], share: float) -> None:
    deadline = time.monotonic() + 120
    while scanned_so_far(run_dir) < share * ITEMS and time.monotonic() < deadline and child.poll() is None:
        time.sleep(0.05)
    assert child.poll() is None, "the run ended before it could be stopped"


def test_a_sigkilled_run_goes_on_from_its_checkpoints(make_table, dynamodb, tmp_path):
    table = make_table([simple_item(i, pad=200) for i in range(ITEMS)])
    run_dir = tmp_path / "run"
    with slow_run(table, run_dir, tmp_path) as child:
        wait_for(run_dir, child, 0.4)
        os.killpg(child.pid, signal.SIGKILL)  # the engine and every worker, at once
        child.wait()
    killed_at = scanned_so_far(run_dir)
    assert 0.4 * ITEMS <= killed_at < ITEMS
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "RUNNING"

    # Going on with other parameters (no rate limit) is refused, and says what differs.
    faster = ddbnb.plan_migration(table, spec("set_flag"), total_segments=4, max_concurrency=2)
    with pytest.raises(ddbnb.exceptions.PlanChangedError, match=r"rate_limit: 250\.0 when the run started, 0\.0 now"):
        ddbnb.migrate(faster, execute=True, run_dir=run_dir, require_dry_run=False, progress=False)
    plan = ddbnb.plan_migration(table, spec("set_flag"), total_segments=4, max_concurrency=2, rate_limit=250)
    summary = ddbnb.migrate(plan, execute=True, run_dir=run_dir, require_dry_run=False, progress=False)
    assert summary is not None and summary["status"] == "SUCCEEDED"
    assert summary["scanned"] == ITEMS and summary["failed"] == 0
    this_run = summary["scanned"] - summary["resumed"]["scanned_before"]
    print(f"killed after {killed_at} of {ITEMS} scanned; the second run scanned {this_run}")
    assert this_run <= 0.7 * ITEMS, summary["resumed"]
    final = scan_all(dynamodb, table)
    assert len(final) == ITEMS and {item["flag"] for item in final.values()} == {"v2"}
    assert all(c["cursor"] is None for c in load_all(run_dir).values())


def test_resume_reads_the_plan_from_the_run_folder(make_table, dynamodb, tmp_path):
    table = make_table([simple_item(i) for i in range(400)])
    plan = ddbnb.plan_migration(table, spec("set_flag"), total_segments=4, max_concurrency=2)
    first = ddbnb.migrate(plan, execute=True, run_dir=tmp_path, require_dry_run=False, progress=False)
    assert first is not None
    # As if the run had died with two segments done: their checkpoints stay, the others go back.
    for segment in (2, 3):
        (tmp_path / "checkpoints" / f"segment-{segment}.json").unlink()
    summary_path = tmp_path / "summary.json"
    summary_path.write_text(json.dumps({**json.loads(summary_path.read_text()), "status": "RUNNING"}))
    resumed = ddbnb.resume(tmp_path, progress=False)
    assert resumed["resumed"]["segments_done"] == 2 and resumed["scanned"] == 400
    assert resumed["written"] == 400 - resumed["unchanged"] and resumed["status"] == "SUCCEEDED"


def test_a_finished_run_folder_starts_over_and_a_different_plan_is_refused(make_table, tmp_path):
    table = make_table([simple_item(i) for i in range(100)])
    plan = ddbnb.plan_migration(table, spec("set_flag"), total_segments=2, max_concurrency=2)
    ddbnb.migrate(plan, execute=True, run_dir=tmp_path, require_dry_run=False, progress=False)
    again = ddbnb.migrate(plan, execute=True, run_dir=tmp_path, require_dry_run=False, progress=False)
    assert again is not None and (again["scanned"], again["unchanged"]) == (100, 100)  # not "resumed"
    summary_path = tmp_path / "summary.json"
    summary_path.write_text(json.dumps({**json.loads(summary_path.read_text()), "status": "RUNNING"}))
    other = ddbnb.plan_migration(table, spec("set_flag"), total_segments=3, max_concurrency=2)
    with pytest.raises(ddbnb.exceptions.PlanChangedError, match="total_segments: 2 when the run started, 3 now"):
        ddbnb.migrate(other, execute=True, run_dir=tmp_path, require_dry_run=False, progress=False)
    # So is another destination, transform, write mode or engine, on a finished folder too.
    summary_path.write_text(json.dumps({**json.loads(summary_path.read_text()), "status": "SUCCEEDED"}))
    batch = ddbnb.plan_migration(table, spec("bump"), total_segments=2, max_concurrency=2, write_mode="batch")
    with pytest.raises(ddbnb.exceptions.PlanChangedError) as refused:
        ddbnb.migrate(batch, execute=True, run_dir=tmp_path, require_dry_run=False, progress=False)
    assert [line.split(":")[0] for line in refused.value.differences] == ["transform", "write_mode"]


def test_a_resume_keeps_the_capacity_share_the_run_started_with(dynamodb, tmp_path, capsys):
    from tests.conftest import create_table, put_items

    table = create_table(dynamodb, throughput=100)  # provisioned: 1,000 read and 100 write units
    put_items(dynamodb, table, [simple_item(i) for i in range(60)])
    plan = ddbnb.plan_migration(table, spec("set_flag"), total_segments=2, max_concurrency=2, capacity_share=0.25)
    assert (plan.read_units_per_s, plan.write_units_per_s) == (250, 25)
    ddbnb.migrate(plan, execute=True, run_dir=tmp_path, require_dry_run=False, progress=False)
    recorded = json.loads((tmp_path / "plan.json").read_text())
    assert (recorded["capacity_share"], recorded["max_write_units"]) == (0.25, 0)
    summary_path = tmp_path / "summary.json"
    summary_path.write_text(json.dumps({**json.loads(summary_path.read_text()), "status": "INTERRUPTED"}))
    capsys.readouterr()
    resumed = ddbnb.resume(tmp_path, progress=False)
    said = capsys.readouterr().out
    assert resumed["status"] == "SUCCEEDED"
    assert "write limit 25 units/s: capacity_share 0.25 of 100" in said and "read limit 250 units/s" in said
