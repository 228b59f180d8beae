"""The `ledgershare` command."""

from __future__ import annotations

import argparse
import sys

from rich.console import Console

from cli import catalogue, demo, stackcmds
from cli import run as runcmd
from deploy.stack import StackError


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ledgershare",
                                description="account-set cloud sharing: local stack and tools")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="start NATS, PostgreSQL and S3 under .ledgershare/")
    sub.add_parser("down", help="stop what `up` started")
    st = sub.add_parser("status", help="each part's health and endpoint")
    st.add_argument("--json", action="store_true", help="machine-readable endpoints and health")
    sub.add_parser("run", help="stack + services + a walkthrough; Ctrl-C stops everything")
    sub.add_parser("demo", help="the guide's walkthrough against the running services")
    sub.add_parser("catalogue", help="print the event catalogue (markdown) from contracts/")
    return p


def dispatch(args: argparse.Namespace, console: Console) -> int:
    match args.command:
        case "up":
            return stackcmds.up(console)
        case "down":
            return stackcmds.down(console)
        case "status":
            return stackcmds.status(console, as_json=args.json)
        case "run":
            return runcmd.run(console)
        case "demo":
            return demo.demo(console)
        case "catalogue":
            print(catalogue.render(), end="")
            return 0
    raise AssertionError(args.command)


def main(argv: list[str] | None = None) -> int:
    """Parse, run, and turn known errors into one line on stderr and a non-zero exit."""
    args = parser().parse_args(argv)
    console = Console()
    try:
        return dispatch(args, console)
    except StackError as err:
        return fail(str(err))
    except KeyboardInterrupt:
        return 130
    except Exception as err:
        return fail(f"{type(err).__name__}: {err}")


def fail(message: str) -> int:
    """One line on stderr, exit status 1: never a traceback."""
    Console(stderr=True, highlight=False).print(f"[red]error:[/] {message}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
