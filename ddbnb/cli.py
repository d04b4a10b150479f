"""The ``ddbnb`` command: the whole flow without opening a notebook.

``seed``, ``deploy``, ``dry-run``, ``migrate`` and ``results`` execute the same
notebooks with papermill into the run folder, so every path leaves the same
audit record (executed notebooks, JSON, charts). ``status`` reads a run
folder; ``sandbox`` and ``demo`` manage the embedded sandbox.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ddbnb.control.deploy import AWS_CONCURRENCY
from ddbnb.emulation import servers
from ddbnb.exceptions import DdbnbError
from ddbnb.lab import LAB_DEMO_ITEMS, LAB_PORT

EPILOG = """The flow: ddbnb sandbox up; eval "$(ddbnb sandbox env)"; ddbnb seed; ddbnb dry-run TABLE TRANSFORM
--run-dir D; ddbnb migrate TABLE TRANSFORM --run-dir D --execute; ddbnb results D. Errors print one line
and exit with status 2."""


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

    box = commands.add_parser("sandbox", help="DynamoDB Local + moto server on 127.0.0.1")
    box.add_argument("action", choices=["up", "down", "env"], help="start, stop, or print the exports")
    box.add_argument("--dynamodb-port", type=int, default=0, help="port of DynamoDB Local (0 picks a free one)")
    box.add_argument("--moto-port", type=int, default=0, help="port of the moto server (0 picks a free one)")
    box.add_argument(
        "--write-units", type=float, default=0, help="emulate provisioned capacity: write units per table and second"
    )
    box.add_argument("--read-units", type=float, default=0, help="emulate provisioned capacity: read units per second")

    demo = commands.add_parser("demo", help="seed a demo table in a fresh sandbox and run notebooks 01 to 04")
    demo.add_argument("--items", type=int, default=100_000, help="items in the demo table (default 100,000)")

    seed = commands.add_parser("seed", help="create and fill a demo orders table (local endpoints only)")
    seed.add_argument("--table", default="demo-orders", help="table name (default demo-orders)")
    seed.add_argument("--items", type=int, default=100_000, help="items to write (default 100,000)")
    seed.add_argument("--seed", type=int, default=7, help="random seed: the same seed gives the same items")
    seed.add_argument("--replace", action="store_true", help="delete and re-create the table if it exists")

    deploy = commands.add_parser("deploy", help="run 01_deploy: package the worker and deploy the stack")
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
    deploy.add_argument("--run-dir", default="", help="where the executed notebook goes (default runs/deploy-...)")

    dry = commands.add_parser("dry-run", help="run 02_dry_run: preview the transform on a sample, write nothing")
    _table_and_transform(dry)
    dry.add_argument("--sample-size", type=int, default=100, help="items sampled across the key space")
    dry.add_argument("--seed", type=int, default=0, help="the same seed gives the same sample")
    dry.add_argument("--allow-unsafe", action="store_true", help="exit 0 even when the verdict is NOT SAFE")

    mig = commands.add_parser("migrate", help="run 03_migrate: print the plan, or run it with --execute")
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

    res = commands.add_parser("results", help="run 04_results: per-segment table and charts into the run folder")
    res.add_argument("run_dir", help="the folder 03_migrate wrote")

    lab = commands.add_parser(
        "lab", help="JupyterLab on the notebooks, its kernels pointed at the sandbox (started and seeded if needed)"
    )
    lab.add_argument("--port", type=int, default=LAB_PORT, help="JupyterLab's port (make lab: LAB_PORT)")
    lab.add_argument("--no-browser", action="store_true", help="do not open a browser; just print the URL")
    lab.add_argument("--items", type=int, default=LAB_DEMO_ITEMS, help="demo items to seed when the table is missing")
    lab.add_argument("--notebooks", default="", help="the folder to serve (default: the kit's notebooks/)")
    status = commands.add_parser("status", help="what a run folder holds: dry run verdict, run status, files")
    status.add_argument("run_dir", help="a run folder")
    again = commands.add_parser(
        "redrive", help="aws engine: run a failed execution's failed segments again from their cursors"
    )
    again.add_argument("run_dir", help="the folder of the failed aws run")
    undo = commands.add_parser(
        "rollback", help="run 05_rollback: say what undoing a run would do, or do it with --execute"
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
    }


def _run(args: argparse.Namespace) -> None:
    from ddbnb.execute import run_notebook

    if args.command == "demo":
        from ddbnb.execute import run_demo

        run_demo(items=args.items)
    elif args.command == "seed":
        from ddbnb.emulation.demo import seed_demo_table

        seed_demo_table(args.table, args.items, seed=args.seed, replace=args.replace)
        print(f"seeded {args.items:,} items into {args.table}", file=sys.stderr)
    elif args.command == "deploy":
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        out = Path(args.run_dir or f"runs/deploy-{args.stack_name}-{stamp}").resolve()
        parameters = {
            "stack_name": args.stack_name,
            "table_name": args.table,
            "transform": _absolute_transform(args.transform),
            "destination_table_name": args.destination,
            "lambda_memory_mb": args.lambda_memory_mb,
            "reserved_concurrency": args.reserved_concurrency,
        }
        run_notebook("01_deploy", out, parameters, log_output=True)
    elif args.command == "dry-run":
        parameters = {**_common(args), "sample_size": args.sample_size, "seed": args.seed}
        parameters["fail_on_unsafe"] = not args.allow_unsafe
        run_notebook("02_dry_run", parameters["run_dir"], parameters, log_output=True)
    elif args.command == "migrate":
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
        run_notebook("03_migrate", parameters["run_dir"], parameters, log_output=True)
    elif args.command == "results":
        folder = str(Path(args.run_dir).resolve())
        run_notebook("04_results", folder, {"run_dir": folder}, log_output=True)
    elif args.command == "status":
        from ddbnb.insight.results import run_status

        print(run_status(args.run_dir))
    elif args.command == "lab":
        from ddbnb.lab import run_lab

        served = Path(args.notebooks).resolve() if args.notebooks else None
        sys.exit(run_lab(args.port, open_browser=not args.no_browser, seed_items=args.items, notebooks=served))
    elif args.command == "redrive":
        from ddbnb.awsrun import redrive

        redrive(args.run_dir)
    elif args.command == "rollback":
        folder = str(Path(args.run_dir).resolve())
        if not Path(folder).is_dir():
            raise DdbnbError(f"{folder} is not a folder. Pass the run_dir 03_migrate wrote.")
        parameters = {
            "run_dir": folder,
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
        run_notebook("05_rollback", folder, parameters, log_output=True)
    else:
        _sandbox(args)


def _sandbox(args: argparse.Namespace) -> None:
    if args.action == "up":
        running, started = servers.up(
            args.dynamodb_port, args.moto_port, write_units=args.write_units, read_units=args.read_units
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


def main(argv: list[str] | None = None) -> int:
    """Run the command line; errors print one clear line and exit with status 2."""
    args = _parser().parse_args(argv)
    try:
        _run(args)
    except DdbnbError as exc:
        print(f"ddbnb: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ddbnb: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
