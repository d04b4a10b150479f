"""The ``ddbnb`` command: ``sandbox up|down|env`` and ``demo``."""

from __future__ import annotations

import argparse
import sys

from ddbnb import servers
from ddbnb.exceptions import DdbnbError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ddbnb", description="Mass migrations of DynamoDB tables.")
    commands = parser.add_subparsers(dest="command", required=True)
    box = commands.add_parser("sandbox", help="DynamoDB Local + moto server on 127.0.0.1")
    box.add_argument("action", choices=["up", "down", "env"])
    box.add_argument("--dynamodb-port", type=int, default=0, help="0 picks a free port")
    box.add_argument("--moto-port", type=int, default=0, help="0 picks a free port")
    demo = commands.add_parser("demo", help="seed a demo table in a fresh sandbox and run the notebooks")
    demo.add_argument("--items", type=int, default=100_000)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; errors print one clear line and exit with status 2."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "demo":
            from ddbnb.demo import run_demo

            run_demo(items=args.items)
        elif args.action == "up":
            running = servers.up(args.dynamodb_port, args.moto_port)
            print(running.exports())
            print(
                f'# started; logs in {running.dynamodb.log.parent}. Load with: eval "$(ddbnb sandbox env)"',
                file=sys.stderr,
            )
        elif args.action == "env":
            print(servers.current().exports())
        elif not servers.down():
            print("no sandbox was running", file=sys.stderr)
    except DdbnbError as exc:
        print(f"ddbnb: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ddbnb: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
