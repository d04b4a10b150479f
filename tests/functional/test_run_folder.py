"""The run folder never lies, against DynamoDB Local: one run at a time, a journal found or refused, an
append-only record, a status that tells the whole story, and charts whose data show whether the cap held."""

from __future__ import annotations

import json
import os
import shutil
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
from ddbnb.cli import main
from ddbnb.exceptions import JournalMissingError, RunFolderBusyError
from ddbnb.insight.charts import plot_run_throughput
from ddbnb.runfolder import RunFolder
from ddbnb.status import run_status
from ddbnb.worker import journal
from tests.conftest import ROOT, scan_all, simple_item, spec


def migrated(table: str, run_dir: Path, transform: str = "by_kind", **plan: object) -> dict[str, object]:
    planned = ddbnb.plan_migration(table, spec(transform), total_segments=2, max_concurrency=2, **plan)
    summary = ddbnb.migrate(planned, execute=True, run_dir=run_dir, require_dry_run=False, progress=False)
    assert summary is not None
    return summary


def test_a_moved_run_folder_rolls_back_exactly_and_a_lost_journal_is_refused(make_table, dynamodb, tmp_path):
    items = [simple_item(i, ("change", "delete", "keep")[i % 3]) for i in range(90)]
    table = make_table(items)
    before = scan_all(dynamodb, table)
    migrated(table, tmp_path / "first")
    assert json.loads((tmp_path / "first" / "plan.json").read_text())["journal_to"] == "journal"  # relative
    shutil.move(str(tmp_path / "first"), str(tmp_path / "moved"))
    summary = ddbnb.rollback(tmp_path / "moved", execute=True, progress=False)
    assert (summary["restored"], summary["recreated"], summary["conflicts"]) == (30, 30, 0)
    assert scan_all(dynamodb, table) == before

    migrated(table, tmp_path / "again")
    shutil.rmtree(tmp_path / "again" / journal.FOLDER)  # the journal is gone: nothing can be undone
    with pytest.raises(JournalMissingError, match="wrote 60 item"):
        ddbnb.rollback(tmp_path / "again", execute=True, progress=False)
    assert not list((tmp_path / "again").glob("rollback-*"))  # refused before anything was made or written


@contextmanager
def live_run(
    table: str, run_dir: Path, tmp_path: Path, rate: int, held: bool = False
) -> Iterator[subprocess.Popen[bytes]]:
    """A run paced to ``rate`` items/s in its own process, as a second terminal would start it; yielded
    once it holds the folder and has checkpointed a page, and gone when the block ends. A ``held`` run
    writes pages of 25 items and stops transforming after its first checkpoint until the block ends, so
    the block sees it live however slow the machine is."""
    hold = tmp_path / "hold"
    transform = "set_flag_held" if held else "set_flag"
    script = textwrap.dedent(f"""
        import dataclasses
        import ddbnb
        if __name__ == "__main__":
            plan = ddbnb.plan_migration({table!r}, {spec(transform)!r}, total_segments=2, max_concurrency=2,
                                        rate_limit={rate})
            plan = dataclasses.replace(plan, page_size={25 if held else 0})
            ddbnb.migrate(plan, execute=True, run_dir={str(run_dir)!r}, require_dry_run=False, progress=False)
    """)
    (tmp_path / "slow.py").write_text(script)
    if held:
        hold.write_text("")
    child = subprocess.Popen(
        [sys.executable, str(tmp_path / "slow.py")],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "DDBNB_TEST_HOLD": str(hold), "DDBNB_TEST_RUN_DIR": str(run_dir)},
    )
    try:
        deadline = time.monotonic() + 60
        while RunFolder(run_dir).holder() is None or not RunFolder(run_dir).checkpoints():
            assert child.poll() is None and time.monotonic() < deadline, child.stderr and child.stderr.read()
            time.sleep(0.05)
        yield child
    finally:
        hold.unlink(missing_ok=True)
        if child.poll() is None:
            child.kill()


def journal_keys(run_dir: Path) -> list[str]:
    source = str(run_dir / journal.FOLDER)
    return [
        json.dumps(entry["k"], sort_keys=True)
        for segment in journal.segments(source)
        for name in journal.object_names(source, segment)
        for entry in journal.read_object(source, segment, name)
    ]


def test_one_run_at_a_time_and_the_status_of_a_live_run(make_table, dynamodb, tmp_path):
    table = make_table([simple_item(i) for i in range(500)])
    run_dir = tmp_path / "run"
    with live_run(table, run_dir, tmp_path, rate=150, held=True) as child:
        live = run_status(run_dir)
        assert (
            "migration: RUNNING" in live and f"by pid {child.pid}" in live and "so far (checkpoints): scanned" in live
        )
        # A second run, a retry and a rollback of the same folder are refused while it runs.
        plan = ddbnb.plan_migration(table, spec("set_flag"), total_segments=2, max_concurrency=2, rate_limit=150)
        with pytest.raises(RunFolderBusyError, match=f"pid {child.pid}"):
            ddbnb.migrate(plan, execute=True, run_dir=run_dir, require_dry_run=False, progress=False)
        with pytest.raises(RunFolderBusyError):
            ddbnb.rollback(run_dir, execute=True, progress=False)
        with pytest.raises(RunFolderBusyError):
            ddbnb.retry_failed(run_dir, require_dry_run=False, progress=False)
        (tmp_path / "hold").unlink()  # let it finish
        assert child.wait(timeout=60) == 0
    keys = journal_keys(run_dir)
    assert len(keys) == len(set(keys)) == 500  # each item written once: one run, one journal entry a key
    assert RunFolder(run_dir).summary()["status"] == "SUCCEEDED" and RunFolder(run_dir).holder() is None


def test_ddbnb_stop_leaves_a_resumable_run_whose_status_says_how_to_go_on(make_table, dynamodb, tmp_path):
    table = make_table([simple_item(i) for i in range(400)])
    run_dir = tmp_path / "run"
    with live_run(table, run_dir, tmp_path, rate=100) as child:
        assert main(["stop", str(run_dir)]) == 0  # as Ctrl-C would, from another terminal
        child.wait(timeout=60)
    stopped = run_status(run_dir)
    assert "migration: INTERRUPTED" in stopped and "not live" in stopped and "ddbnb.resume(" in stopped
    assert "so far (checkpoints): scanned" in stopped
    resumed = ddbnb.resume(run_dir, progress=False)
    assert resumed["status"] == "SUCCEEDED" and resumed["scanned"] == 400
    assert {item["flag"] for item in scan_all(dynamodb, table).values()} == {"v2"}


def test_a_lock_whose_process_is_gone_is_taken_over(make_table, tmp_path):
    table = make_table([simple_item(i) for i in range(20)])
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = {"pid": int(dead.stdout), "host": os.uname().nodename, "started_at": "2026-01-01T00:00:00+00:00"}
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "run.lock").write_text(json.dumps(stale))
    assert migrated(table, tmp_path, "set_flag")["status"] == "SUCCEEDED"
    assert not (tmp_path / "run.lock").exists()


def test_previews_and_refusals_never_overwrite_the_record_of_an_executed_run(make_table, tmp_path, capsys):
    table = make_table([simple_item(i) for i in range(40)])
    mine = tmp_path / "mine.py"
    mine.write_text("def fn(item):\n    item['flag'] = 'v2'\n    return item\n")
    run_dir = tmp_path / "run"
    args = [table, f"{mine}:fn", "--run-dir", str(run_dir)]
    assert main(["dry-run", *args]) == 0
    assert main(["migrate", *args, "--execute"]) == 0
    record = {path: path.read_bytes() for path in [run_dir / "summary.json", *(run_dir / "attempts").iterdir()]}
    assert main(["migrate", *args]) == 0  # a preview
    mine.write_text("def fn(item):\n    item['flag'] = 'v3'\n    return item\n")  # edited, not previewed
    capsys.readouterr()
    assert main(["migrate", *args, "--execute"]) == 2
    said = capsys.readouterr().err
    assert "the code of" in said and "--no-require-dry-run" in said and "require_dry_run=" not in said
    assert {path: path.read_bytes() for path in record} == record  # nothing of the executed run was replaced
    assert sorted(p.name for p in (run_dir / "attempts").iterdir()) == sorted(
        p.name for p in record if p.parent.name == "attempts"
    )


def test_status_after_a_retry_and_after_a_rollback(make_table, dynamodb, tmp_path):
    table = make_table([simple_item(i, "raise" if i % 10 == 0 else "change") for i in range(50)])
    planned = ddbnb.plan_migration(table, spec("by_kind"), total_segments=2)
    with pytest.raises(ddbnb.exceptions.RunIncompleteError, match="retry_failed"):
        ddbnb.migrate(
            planned, execute=True, run_dir=tmp_path, require_dry_run=False, progress=False, max_failed_share=0.5
        )
    assert "INCOMPLETE" in run_status(tmp_path) and "failures/ (5 item(s) logged)" in run_status(tmp_path)
    for i in range(0, 50, 10):  # the operator fixes those items
        key = {"pk": {"S": f"p{i % 17:02d}"}, "sk": {"S": f"s{i:06d}"}}
        dynamodb.update_item(
            TableName=table,
            Key=key,
            UpdateExpression="SET kind = :k",
            ExpressionAttributeValues={":k": {"S": "change"}},
        )
    ddbnb.retry_failed(tmp_path, require_dry_run=False, progress=False)
    after_retry = run_status(tmp_path)
    assert "retry " in after_retry and "written 5" in after_retry and "now: SUCCEEDED" in after_retry
    assert "retry-" in after_retry.splitlines()[-1]  # its folder is listed
    ddbnb.rollback(tmp_path, execute=True, progress=False)
    after_rollback = run_status(tmp_path)
    assert "rollback " in after_rollback and "restored 50" in after_rollback and "now: ROLLED_BACK" in after_rollback


def test_the_chart_of_a_capped_run_stays_under_its_cap(make_table, tmp_path):
    table = make_table([simple_item(i, pad=1_500) for i in range(800)])  # 2 write units an item
    migrated(table, tmp_path, "set_flag", max_write_units=600, max_read_units=2_000)
    results = ddbnb.load_results(tmp_path)
    figure = plot_run_throughput(results, tmp_path)
    used, cap = figure.axes[1].lines[0].get_ydata(), figure.axes[1].lines[1].get_ydata()[0]
    assert cap == 600 and (tmp_path / "run_throughput.png").is_file()
    assert used.max() <= 600 * 1.1, used  # per second, from each page's own start and end
    assert used.sum() * (results["finished_at"].max() - results["started_at"].min()).total_seconds() / len(used) > 1_400
    title = figure.axes[0].get_title()
    assert title.startswith("The run over time") and table in title and tmp_path.name in title


def test_the_cli_speaks_cli(make_table, tmp_path, capsys):
    table = make_table([simple_item(i) for i in range(10)])
    bad = ["migrate", table, spec("set_flag"), "--run-dir", str(tmp_path / "never"), "--capacity-share", "2"]
    assert main(bad) == 2
    said = capsys.readouterr().err.strip().splitlines()
    assert said == ["ddbnb: error: Invalid --capacity-share 2.0: expected a share from 0 to 1 (0.25 means 25%)."]
    assert not (tmp_path / "never").exists()  # refused before a kernel started, and before any folder was made
    assert main(["dry-run", "no-such-table", spec("set_flag"), "--run-dir", str(tmp_path / "never")]) == 2
    assert "Check TABLE" in capsys.readouterr().err and not (tmp_path / "never").exists()


def test_ctrl_c_under_the_cli_stops_the_run_in_one_line_and_exits_130(make_table, tmp_path):
    table = make_table([simple_item(i) for i in range(600)])
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "ddbnb.cli", "migrate", table, spec("set_flag"), "--run-dir", str(run_dir)]
    command += ["--execute", "--no-require-dry-run", "--rate-limit", "100", "--total-segments", "2"]
    child = subprocess.Popen(command, cwd=ROOT, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 90
        while not RunFolder(run_dir).checkpoints():
            assert child.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        os.killpg(child.pid, signal.SIGINT)  # Ctrl-C in the terminal: the whole foreground group
        _, stderr = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
    lines = stderr.decode().strip().splitlines()
    assert child.returncode == 130, lines
    assert lines[-1] == f"ddbnb: stopped; go on with `ddbnb resume {run_dir}`"
    after = [line for line in lines[next(i for i, x in enumerate(lines) if x.startswith("stopping the run")) :] if line]
    assert not any("Traceback" in line for line in lines) and len(after) <= 8, lines
    assert any(line.startswith(f"stopped. To go on from here, run `ddbnb resume {run_dir}`") for line in after)
    assert RunFolder(run_dir).summary()["status"] == "INTERRUPTED"
