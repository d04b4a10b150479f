"""The ``ddbnb`` command: the whole flow without opening a notebook.

``deploy``, ``dry-run``, ``migrate``, ``results`` and ``rollback`` execute the
same notebooks with papermill into the run folder (each attempt's executed
notebook under ``attempts/``), so every path leaves the same audit record.
``resume``, ``retry-failed``, ``redrive``, ``stop``, ``status``, ``follow`` and
``verify`` work on a run folder (``verify`` exits with 1 when the target differs);
``sandbox``, ``seed``, ``demo`` and ``lab`` manage the embedded sandbox. Errors
print one line that names the flag or command to use, and exit with status 2;
Ctrl-C stops the run cleanly (resumable) and exits with 130.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ddbnb.control.deploy import AWS_CONCURRENCY
from ddbnb.emulation import servers
from ddbnb.exceptions import CLI_ENV, DdbnbError
from ddbnb.lab import LAB_DEMO_ITEMS, LAB_PORT

EPILOG = """The flow: ddbnb sandbox up; eval "$(ddbnb sandbox env)"; ddbnb seed; ddbnb dry-run TABLE TRANSFORM
--run-dir D; ddbnb migrate TABLE TRANSFORM --run-dir D --execute; ddbnb results D; ddbnb status D. Errors print
one line and exit with status 2; Ctrl-C stops a run so that `ddbnb resume D` goes on, and exits with 130."""


def _absolute_transform(spec: str) -> str:
    """A ``path.py:function`` spec made absolute, since the notebooks run in their own folder."""
    target, sep, attr = spec.rpartition(":")
    if sep and target.endswith(".py"):
        return f"{Path(target).expanduser().resolve()}:{attr}"
    return spec


def _version() -> str:
    from ddbnb import __version__

    return __version__


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ddbnb", description="Mass migrations of DynamoDB tables.", epilog=EPILOG)
    parser.add_argument("--version", action="version", version=f"ddbnb {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    talk = argparse.ArgumentParser(add_help=False)
    talk.add_argument(
        "--verbose", action="store_true", help="also show papermill's cell-by-cell log and the kernel's warnings"
    )

    box = commands.add_parser("sandbox", help="DynamoDB Local + moto server on 127.0.0.1")
    box.add_argument("action", choices=["up", "down", "env"], help="start, stop, or print the exports")
    box.add_argument("--dynamodb-port", type=int, default=0, help="port of DynamoDB Local (0 picks a free one)")
    box.add_argument("--moto-port", type=int, default=0, help="port of the moto server (0 picks a free one)")
    box.add_argument(
        "--write-units", type=float, default=0, help="emulate provisioned capacity: write units per table and second"
    )
    box.add_argument("--read-units", type=float, default=0, help="emulate provisioned capacity: read units per second")
    box.add_argument(
        "--key-range-write-units",
        type=float,
        default=0,
        help="emulate a hot partition: write units per partition key value and second",
    )
    box.add_argument(
        "--index-write-units",
        type=float,
        default=0,
        help="emulate provisioned GSIs: write units per global secondary index and second",
    )

    demo = commands.add_parser("demo", help="seed a demo table in a fresh sandbox and run notebooks 01 to 04")
    demo.add_argument("--items", type=int, default=100_000, help="items in the demo table (default 100,000)")

    seed = commands.add_parser("seed", help="create and fill a demo orders table (local endpoints only)")
    seed.add_argument("--table", default="demo-orders", help="table name (default demo-orders)")
    seed.add_argument("--items", type=int, default=100_000, help="items to write (default 100,000)")
    seed.add_argument("--seed", type=int, default=7, help="random seed: the same seed gives the same items")
    seed.add_argument("--replace", action="store_true", help="delete and re-create the table if it exists")

    deploy = commands.add_parser("deploy", parents=[talk], help="run 01_deploy: package the worker, deploy the stack")
    deploy.add_argument("stack_name", help="the CloudFormation stack to create or update")
    deploy.add_argument("table", help="the table the migration reads")
    deploy.add_argument("transform", help="module:function or path/to/file.py:function")
    deploy.add_argument("--destination", default="", help="copy into this table instead of rewriting in place")
    deploy.add_argument("--lambda-memory-mb", type=int, default=1024, help="memory of the worker (default 1024)")
    deploy.add_argument(
        "--reserved-concurrency",
        type=int,
        default=AWS_CONCURRENCY,
        help="workers reserved for the run, and its ceiling (0: none)",
    )
    deploy.add_argument(
        "--follow", action="store_true", help="give the stack a follower on the table's stream (`ddbnb follow`)"
    )
    deploy.add_argument("--run-dir", default="", help="where the executed notebook goes (default runs/deploy-...)")

    dry = commands.add_parser(
        "dry-run", parents=[talk], help="run 02_dry_run: preview the transform on a sample, write nothing"
    )
    _table_and_transform(dry)
    dry.add_argument("--sample-size", type=int, default=100, help="items sampled across the key space")
    dry.add_argument("--seed", type=int, default=0, help="the same seed gives the same sample")
    dry.add_argument("--allow-unsafe", action="store_true", help="exit 0 even when the verdict is NOT SAFE")

    mig = commands.add_parser(
        "migrate", parents=[talk], help="run 03_migrate: print the plan, or run it with --execute"
    )
    _table_and_transform(mig)
    mig.add_argument("--execute", action="store_true", help="run the migration (without it: print the plan)")
    mig.add_argument("--total-segments", type=int, default=0, help="parallel-scan segments (0 chooses)")
    mig.add_argument("--max-concurrency", type=int, default=0, help="segments at once (0 chooses)")
    mig.add_argument("--max-failed-share", type=float, default=0.0, help="pre-flight failures tolerated (0 to 1)")
    mig.add_argument("--no-require-dry-run", action="store_true", help="run without a dry run in --run-dir")
    mig.add_argument(
        "--prewarm-write-units",
        type=int,
        default=0,
        help="aws engine: raise the written table to this many write units first",
    )
    mig.add_argument(
        "--prewarm-read-units", type=int, default=0, help="aws engine: raise the source to this many read units first"
    )
    mig.add_argument(
        "--allow-stale-stack", action="store_true", help="aws engine: run the deployed code even if it differs"
    )
    mig.add_argument(
        "--tolerated-failure-percentage", type=float, default=0.0, help="aws engine: %% of segments that may fail"
    )
    mig.add_argument(
        "--tolerated-failure-count", type=int, default=0, help="aws engine: number of segments that may fail"
    )
    mig.add_argument(
        "--no-journal", action="store_true", help="keep no before-images (then `ddbnb rollback` cannot undo the run)"
    )

    res = commands.add_parser(
        "results", parents=[talk], help="run 04_results: the segments, charts (PNG) and an HTML report in the folder"
    )
    res.add_argument("run_dir", help="the folder 03_migrate wrote")

    lab = commands.add_parser(
        "lab", help="JupyterLab on the notebooks, its kernels pointed at the sandbox (started and seeded if needed)"
    )
    lab.add_argument("--port", type=int, default=LAB_PORT, help="JupyterLab's port (make lab: LAB_PORT)")
    lab.add_argument("--no-browser", action="store_true", help="do not open a browser; just print the URL")
    lab.add_argument("--items", type=int, default=LAB_DEMO_ITEMS, help="demo items to seed when the table is missing")
    lab.add_argument("--notebooks", default="", help="the folder to serve (default: the kit's notebooks/)")
    status = commands.add_parser(
        "status", help="the whole story of a run folder: dry run, plan, run, retries, rollbacks, files"
    )
    status.add_argument("run_dir", help="a run folder")
    again = commands.add_parser(
        "redrive", help="aws engine: run a failed execution's failed segments again from their cursors"
    )
    again.add_argument("run_dir", help="the folder of the failed aws run")
    resume = commands.add_parser(
        "resume", help="go on with a stopped or killed local run, from its checkpoints and with its recorded plan"
    )
    resume.add_argument("run_dir", help="the folder of the run")
    retry = commands.add_parser(
        "retry-failed", help="read, transform and write exactly the items a run failed on (after a dry run)"
    )
    retry.add_argument("run_dir", help="the folder of the run")
    retry.add_argument("--max-failed-share", type=float, default=0.0, help="pre-flight failures tolerated (0 to 1)")
    retry.add_argument("--no-require-dry-run", action="store_true", help="retry without a dry run of the code")
    stop = commands.add_parser(
        "stop", help="stop the run that holds a folder (local: resumable, as Ctrl-C; aws: the execution)"
    )
    stop.add_argument("run_dir", help="the folder of the run")
    follow = commands.add_parser(
        "follow", help="keep the run's target in step with the live table from its stream (Ctrl-C: saved, resumable)"
    )
    follow.add_argument("run_dir", help="the folder of a finished run")
    follow.add_argument(
        "--until",
        default="caught_up",
        choices=["caught_up", "stopped"],
        help="caught_up (default): return once the lag is under --caught-up-s; stopped: until --for-s or Ctrl-C",
    )
    follow.add_argument("--for-s", type=float, default=0.0, help="stop after this many seconds (0: no bound)")
    follow.add_argument("--caught-up-s", type=float, default=2.0, help="the lag, in seconds, that counts as caught up")
    follow.add_argument(
        "--engine", choices=["local", "aws"], default="", help="who writes: this process, or the stack's follower"
    )
    follow.add_argument("--stop", action="store_true", help="stop the run's aws follower (the end of the cutover)")
    check = commands.add_parser(
        "verify", help="compare the run's target with the transform of its source now: missing, extra, different"
    )
    check.add_argument("run_dir", help="the folder of a run")
    check.add_argument("--sample", type=int, default=0, help="check about this many random items (0: every item)")
    undo = commands.add_parser(
        "rollback", parents=[talk], help="run 05_rollback: say what undoing a run would do, or do it with --execute"
    )
    undo.add_argument("run_dir", help="the folder 03_migrate wrote")
    undo.add_argument("--execute", action="store_true", help="write (without it: only say what it would do)")
    undo.add_argument("--engine", default="local", choices=["local", "aws"], help="where segments run")
    undo.add_argument("--stack-name", default="", help="aws engine: the stack the run used (default: the run's)")
    undo.add_argument(
        "--write-mode", default="conditional", choices=["batch", "conditional"], help="batch: unguarded, faster"
    )
    undo.add_argument("--max-concurrency", type=int, default=0, help="segments at once (0 chooses)")
    undo.add_argument("--capacity-share", type=float, default=0.0, help="share of the table's capacity (0 to 1)")
    undo.add_argument("--max-read-units", type=float, default=0.0, help="read units per second, whole rollback")
    undo.add_argument("--max-write-units", type=float, default=0.0, help="write units per second, whole rollback")
    undo.add_argument("--rate-limit", type=float, default=0.0, help="items per second, whole rollback")
    return parser


def _table_and_transform(command: argparse.ArgumentParser) -> None:
    command.add_argument("table", help="the table to migrate")
    command.add_argument("transform", help="module:function or path/to/file.py:function")
    command.add_argument("--run-dir", required=True, help="the run folder; dry-run and migrate must share it")
    command.add_argument("--destination", default="", help="copy into this table instead of rewriting in place")
    command.add_argument("--engine", default="local", choices=["local", "aws"], help="where segments run")
    command.add_argument("--stack-name", default="", help="aws engine: the stack 01_deploy created")
    command.add_argument(
        "--write-mode",
        default="conditional",
        choices=["batch", "conditional"],
        help="conditional (default): safe on a live table; batch: faster, overwrites concurrent writes",
    )
    command.add_argument("--version-attribute", default="", help="conditional: guard on this attribute, increment it")
    command.add_argument("--capacity-share", type=float, default=0.0, help="share of the tables' capacity (0 to 1)")
    command.add_argument("--max-read-units", type=float, default=0.0, help="read units per second for the whole run")
    command.add_argument("--max-write-units", type=float, default=0.0, help="write units per second for the whole run")
    command.add_argument("--rate-limit", type=float, default=0.0, help="items per second for the whole run (0: none)")
    command.add_argument(
        "--follow", action="store_true", help="the run will be followed (`ddbnb follow`): refuse a table with no stream"
    )
    command.add_argument(
        "--no-split-hot-keys",
        action="store_true",
        help="keep each partition key's items in one segment, however many (by default a hot key is cut into ranges)",
    )
    command.add_argument(
        "--allow-non-idempotent",
        action="store_true",
        help="dry run: a transform that changes its own result again is a warning, not NOT SAFE",
    )


def _common(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "table_name": args.table,
        "transform": _absolute_transform(args.transform),
        "run_dir": str(Path(args.run_dir).resolve()),
        "destination_table_name": args.destination,
        "engine": args.engine,
        "stack_name": args.stack_name,
        "write_mode": args.write_mode,
        "version_attribute": args.version_attribute,
        "capacity_share": args.capacity_share,
        "max_read_units": args.max_read_units,
        "max_write_units": args.max_write_units,
        "rate_limit": args.rate_limit,
        "follow": args.follow,
        "split_hot_keys": not args.no_split_hot_keys,
    }


def _checked_plan(parameters: dict[str, Any], **more: Any) -> Any:
    """Plan the run in this process first: bad parameters, a missing table, transform or stack are named
    before a kernel starts (and before any folder is made)."""
    from ddbnb.plan import plan_migration

    names = (
        "destination_table_name",
        "engine",
        "write_mode",
        "version_attribute",
        "capacity_share",
        "max_read_units",
        "max_write_units",
        "stack_name",
        "rate_limit",
        "follow",
        "split_hot_keys",
    )
    return plan_migration(
        parameters["table_name"], parameters["transform"], **{name: parameters[name] for name in names}, **more
    )


def _notebook(name: str, folder: str | Path, parameters: dict[str, Any], args: argparse.Namespace) -> Path:
    from ddbnb.execute import run_notebook

    with _forward_ctrl_c(folder):
        return run_notebook(name, folder, parameters, log_output=True, verbose=args.verbose)


@contextmanager
def _forward_ctrl_c(folder: str | Path) -> Iterator[None]:
    """On Ctrl-C, stop the run the way Ctrl-C in a notebook does: the kernel that holds ``folder`` gets it, marks
    the run INTERRUPTED and stops its workers; a second Ctrl-C stops waiting."""
    from ddbnb.runfolder import RunFolder

    previous = signal.getsignal(signal.SIGINT)
    pressed: list[int] = []

    def forward(signum: int, frame: Any) -> None:
        pressed.append(signum)
        held = RunFolder(folder).holder()
        if len(pressed) == 1 and held is not None and int(held["pid"]) != os.getpid():
            print("\nstopping the run (Ctrl-C again to stop waiting) ...", file=sys.stderr)
            os.kill(int(held["pid"]), signal.SIGINT)
            return
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, forward)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _deploy(args: argparse.Namespace) -> None:
    from ddbnb.runfolder import utc_stamp

    stamp = utc_stamp()
    out = Path(args.run_dir or f"runs/deploy-{args.stack_name}-{stamp}").resolve()
    parameters = {
        "stack_name": args.stack_name,
        "table_name": args.table,
        "transform": _absolute_transform(args.transform),
        "destination_table_name": args.destination,
        "lambda_memory_mb": args.lambda_memory_mb,
        "reserved_concurrency": args.reserved_concurrency,
        "follow": args.follow,
    }
    _notebook("01_deploy", out, parameters, args)


def _dry_run(args: argparse.Namespace) -> None:
    from ddbnb.worker import params

    parameters = {**_common(args), "sample_size": args.sample_size, "seed": args.seed}
    params.check_int("--sample-size", args.sample_size, 1, 1_000_000)
    params.check_int("--seed", args.seed, 0)
    _checked_plan(parameters)
    parameters.update(fail_on_unsafe=not args.allow_unsafe, allow_non_idempotent=args.allow_non_idempotent)
    _notebook("02_dry_run", parameters["run_dir"], parameters, args)


def _migrate(args: argparse.Namespace) -> None:
    from ddbnb.gate import check_dry_run
    from ddbnb.worker import params

    parameters = {
        **_common(args),
        "execute": args.execute,
        "total_segments": args.total_segments,
        "max_concurrency": args.max_concurrency,
        "max_failed_share": args.max_failed_share,
        "require_dry_run": not args.no_require_dry_run,
        "prewarm_write_units": args.prewarm_write_units,
        "prewarm_read_units": args.prewarm_read_units,
        "allow_stale_stack": args.allow_stale_stack,
        "tolerated_failure_percentage": args.tolerated_failure_percentage,
        "tolerated_failure_count": args.tolerated_failure_count,
        "journal": not args.no_journal,
    }
    params.check_share("--max-failed-share", args.max_failed_share)
    params.check_percentage("--tolerated-failure-percentage", args.tolerated_failure_percentage)
    params.check_int("--tolerated-failure-count", args.tolerated_failure_count, 0)
    plan = _checked_plan(
        parameters,
        total_segments=args.total_segments,
        max_concurrency=args.max_concurrency,
        prewarm_read_units=args.prewarm_read_units,
        prewarm_write_units=args.prewarm_write_units,
        journal=not args.no_journal,
    )
    if args.execute and not args.no_require_dry_run:
        check_dry_run(plan, parameters["run_dir"])  # refused here: no kernel, no folder, no notebook
    if not args.execute:
        print(plan)
        print("\nno --execute: nothing was run. Add --execute to migrate.")
        return
    _notebook("03_migrate", parameters["run_dir"], parameters, args)


def _results(args: argparse.Namespace) -> None:
    from ddbnb.execute import render_html
    from ddbnb.runfolder import SUMMARY

    folder = Path(args.run_dir).resolve()
    if not (folder / SUMMARY).is_file() and not (folder / "manifest.json").is_file():
        raise DdbnbError(f"{folder} holds no results: pass a folder `ddbnb migrate --execute` wrote.")
    executed = _notebook("04_results", folder, {"run_dir": str(folder)}, args)
    report = render_html(executed, folder / "results.html")
    charts = sorted(str(path) for path in folder.glob("*.png"))
    print(f"report: {report}\ncharts:\n  " + "\n  ".join(charts), file=sys.stderr)


def _rollback(args: argparse.Namespace) -> None:
    from ddbnb.runfolder import RunFolder

    folder = RunFolder(Path(args.run_dir).resolve())
    if not folder.path.is_dir():
        raise DdbnbError(f"{folder} is not a folder. Pass the run folder `ddbnb migrate` wrote.")
    if not folder.plan():
        raise DdbnbError(
            f"{folder} holds no migration (plan.json is missing). Pass the run folder `ddbnb migrate` wrote."
        )
    parameters = {
        "run_dir": str(folder),
        "execute": args.execute,
        "engine": args.engine,
        "stack_name": args.stack_name,
        "write_mode": args.write_mode,
        "max_concurrency": args.max_concurrency,
        "capacity_share": args.capacity_share,
        "max_read_units": args.max_read_units,
        "max_write_units": args.max_write_units,
        "rate_limit": args.rate_limit,
    }
    _notebook("05_rollback", folder.path, parameters, args)


def _resume(args: argparse.Namespace) -> None:
    from ddbnb.migrate import resume

    resume(args.run_dir)


def _retry(args: argparse.Namespace) -> None:
    from ddbnb.retry import retry_failed

    retry_failed(args.run_dir, require_dry_run=not args.no_require_dry_run, max_failed_share=args.max_failed_share)


def _follow(args: argparse.Namespace) -> None:
    from ddbnb.follow import follow, stop_following

    if args.stop:
        stop_following(args.run_dir)
        return
    follow(args.run_dir, until=args.until, for_s=args.for_s, caught_up_s=args.caught_up_s, engine=args.engine)


def _verify(args: argparse.Namespace) -> None:
    from ddbnb.verify import verify

    report = verify(args.run_dir, sample=args.sample)
    if not report["matches"]:
        raise SystemExit(1)


def _stop(args: argparse.Namespace) -> None:
    from ddbnb.runfolder import RunFolder, stop_local

    folder = RunFolder(args.run_dir)
    summary = folder.summary()
    if summary.get("execution_arn") and summary.get("status") == "RUNNING":
        from ddbnb.awsrun import stop_execution

        stop_execution(folder)
        return
    held = stop_local(folder)
    print(
        f"stopped the {held.get('operation', 'run')} of pid {held['pid']}: its status is now "
        f"{folder.summary().get('status', '?')}; go on with `ddbnb resume {folder}`",
        file=sys.stderr,
    )


def _status(args: argparse.Namespace) -> None:
    from ddbnb.status import run_status

    print(run_status(args.run_dir))


def _demo(args: argparse.Namespace) -> None:
    from ddbnb.execute import run_demo

    run_demo(items=args.items)


def _seed(args: argparse.Namespace) -> None:
    from ddbnb.emulation.demo import seed_demo_table

    seed_demo_table(args.table, args.items, seed=args.seed, replace=args.replace)
    print(f"seeded {args.items:,} items into {args.table}", file=sys.stderr)


def _lab(args: argparse.Namespace) -> None:
    from ddbnb.lab import run_lab

    served = Path(args.notebooks).resolve() if args.notebooks else None
    sys.exit(run_lab(args.port, open_browser=not args.no_browser, seed_items=args.items, notebooks=served))


def _redrive(args: argparse.Namespace) -> None:
    from ddbnb.awsrun import redrive

    redrive(args.run_dir)


def _sandbox(args: argparse.Namespace) -> None:
    if args.action == "up":
        running, started = servers.up(
            args.dynamodb_port,
            args.moto_port,
            write_units=args.write_units,
            read_units=args.read_units,
            key_range_write_units=args.key_range_write_units,
            index_write_units=args.index_write_units,
        )
        print(running.exports())
        what = "started" if started else "already running"
        print(
            f"# sandbox {what}: DynamoDB Local at {running.dynamodb.url}, moto at {running.moto.url}"
            + (f", capacity emulation at {running.proxy.url}" if running.proxy else "")
            + "; "
            f'logs in {running.dynamodb.log.parent}. Load with: eval "$(ddbnb sandbox env)"',
            file=sys.stderr,
        )
    elif args.action == "env":
        print(servers.current().exports())
    else:
        stopped = servers.down()
        if stopped is None:
            print("no sandbox was running", file=sys.stderr)
        else:
            print(
                f"stopped DynamoDB Local (port {stopped.dynamodb.port}, pid {stopped.dynamodb.pid}) and "
                f"the moto server (port {stopped.moto.port}, pid {stopped.moto.pid})",
                file=sys.stderr,
            )


COMMANDS: dict[str, Callable[[argparse.Namespace], None]] = {
    "demo": _demo,
    "seed": _seed,
    "deploy": _deploy,
    "dry-run": _dry_run,
    "migrate": _migrate,
    "results": _results,
    "status": _status,
    "lab": _lab,
    "redrive": _redrive,
    "resume": _resume,
    "retry-failed": _retry,
    "stop": _stop,
    "follow": _follow,
    "verify": _verify,
    "rollback": _rollback,
    "sandbox": _sandbox,
}


def main(argv: list[str] | None = None) -> int:
    """Run the command line; errors print one clear line and exit with status 2, Ctrl-C with 130."""
    args = _parser().parse_args(argv)
    saved = os.environ.get(CLI_ENV)
    os.environ[CLI_ENV] = "1"  # messages (here and in the kernels this starts) name flags and commands
    try:
        COMMANDS[args.command](args)
    except DdbnbError as exc:
        print(f"ddbnb: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        where = getattr(args, "run_dir", "")
        hint = f"; go on with `ddbnb resume {where}`" if where and args.command in ("migrate", "resume") else ""
        print(f"ddbnb: stopped{hint}", file=sys.stderr)
        return 130
    finally:
        if saved is None:
            os.environ.pop(CLI_ENV, None)
        else:
            os.environ[CLI_ENV] = saved
    return 0


if __name__ == "__main__":
    sys.exit(main())
