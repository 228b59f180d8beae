"""The `ledgershare` command: local stack, walkthrough, client commands, operator tools."""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import datetime
from typing import Any, NoReturn

import nats
from rich.console import Console
from rich.markup import escape

from cli import agency as agency_cli
from cli import client
from cli import sync as sync_cli
from contracts.errors import BadRequest, LedgerError
from contracts.http import gateway_base
from runtime.settings import Settings, load_settings

# The operator, stack and walkthrough modules load only when their command runs: a
# client command (an upload, a download) starts ~70 ms sooner without them.


class Parser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line on stderr and exit status 2."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"error: {self.prog}: {message} (see --help)\n")
        raise SystemExit(2)


def when(text: str) -> datetime:
    """An ISO date-time with a time zone, for --expires."""
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} needs a time zone, e.g. +08:00 or Z")
    return value


def gateway_url(text: str) -> str:
    """A gateway's URL, for --gateway ("" keeps the bus)."""
    try:
        return gateway_base(text) if text else ""
    except BadRequest as err:
        raise argparse.ArgumentTypeError(err.message) from None


def parser() -> Parser:
    p = Parser(prog="ledgershare", description="account-set cloud sharing: stack and tools")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--gateway", metavar="URL", type=gateway_url,
                   help="send the member commands (member, friend, drive, backup, share, "
                        "cloudshare, device, sync, agency) through the gateway's desktop API "
                        "at URL, e.g. http://127.0.0.1:8080, instead of over NATS (default: "
                        "$LEDGERSHARE_GATEWAY_URL); commands that need the bus (status, "
                        "run, demo, events, replay, services, member bind) then refuse")
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)
    _stack_commands(sub)
    _member_commands(sub)
    _drive_commands(sub)
    _share_commands(sub)
    sync_cli.commands(sub, Parser)
    agency_cli.commands(sub, Parser)
    _operator_commands(sub)
    _json_everywhere(p)
    return p


def _json_everywhere(p: argparse.ArgumentParser) -> None:
    """Accept --json after any command too (without overriding one given before it)."""
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in set(action.choices.values()):
                child.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                                   help="machine-readable output")
                _json_everywhere(child)


def _stack_commands(sub: Any) -> None:
    sub.add_parser("up", help="start NATS, PostgreSQL and S3 under .ledgershare/")
    sub.add_parser("down", help="stop what `up` started")
    sub.add_parser("status", help="each part's health and endpoint")
    sub.add_parser("run", help="stack + services + the walkthrough; Ctrl-C stops everything")
    sub.add_parser("demo", help="the guide's walkthrough against the running services")
    cat = sub.add_parser("catalogue", help="print the event catalogue (markdown) from contracts/")
    cat.add_argument("--operations", action="store_true",
                     help="the operations and their error codes instead")


def _group(sub: Any, name: str, help_text: str) -> Any:
    return sub.add_parser(name, help=help_text).add_subparsers(
        dest="action", required=True, parser_class=Parser)


def _member_commands(sub: Any) -> None:
    m = _group(sub, "member", "register, bind WeChat, log in, member info")
    r = m.add_parser("register", help="register a member")
    r.add_argument("account")
    r.add_argument("--nickname", required=True)
    r.add_argument("--password", help="else $LEDGERSHARE_PASSWORD or a prompt")
    b = m.add_parser("bind", help="bind a WeChat user to an account (through the local "
                     "WeChat stand-in; members bind in the Member Center)")
    b.add_argument("--wechat-user", required=True,
                   help="who you are in the stand-in's WeChat (any name)")
    b.add_argument("--account", required=True)
    b.add_argument("--nickname", required=True)
    b.add_argument("--password")
    lg = m.add_parser("login", help="log in and keep the session token (0600 file)")
    lg.add_argument("account")
    lg.add_argument("--password")
    m.add_parser("logout", help="end the kept session, everywhere at once")
    dl = m.add_parser("delete", help="delete your account for good: backups, shares, "
                      "friends, names (the password once more, as proof)")
    dl.add_argument("--password")
    dl.add_argument("--yes", action="store_true", help="do not ask to confirm")
    m.add_parser("me", help="member info")
    f = _group(sub, "friend", "add, list, remove friends")
    fa = f.add_parser("add", help="add a friend by account and nickname")
    fa.add_argument("account")
    fa.add_argument("--nickname", required=True)
    f.add_parser("list", help="your friends")
    fr = f.add_parser("remove", help="end a friendship (and every share between you)")
    fr.add_argument("account")


def _drive_commands(sub: Any) -> None:
    d = _group(sub, "drive", "the cloud-drive password")
    dp = d.add_parser("password", help="set, verify, reset").add_subparsers(
        dest="step", required=True, parser_class=Parser)
    ds = dp.add_parser("set", help="set it with a security question (first use)")
    ds.add_argument("--question", required=True)
    ds.add_argument("--answer")
    ds.add_argument("--password")
    dv = dp.add_parser("verify", help="unlock cloud share (keeps the drive token)")
    dv.add_argument("--password")
    dr = dp.add_parser("reset", help="reset it with the security answer")
    dr.add_argument("--answer")
    dr.add_argument("--new-password")
    bk = _group(sub, "backup", "your cloud backups (the owner's side)")
    up = bk.add_parser("upload", help="upload one fiscal year of an account set")
    _upload_args(up)
    bk.add_parser("list", help="the drive list: sets, years, latest versions, quota")
    bv = bk.add_parser("versions", help="versions of one set-year")
    _set_year(bv)
    bd = bk.add_parser("download", help="download one fiscal year")
    _set_year(bd)
    bd.add_argument("--version")
    bd.add_argument("-o", "--output")
    bx = bk.add_parser("delete", help="delete a version")
    bx.add_argument("version")


def _set_year(p: Any) -> None:
    p.add_argument("--set", required=True, help="account set id")
    p.add_argument("--year", required=True, type=int)


def _upload_args(p: Any) -> None:
    p.add_argument("file")
    _set_year(p)
    p.add_argument("--period", required=True, type=int, help="closed to period 1..12")
    p.add_argument("--name", help="account set name (default: the id)")
    p.add_argument("--remark", help="default: <year>年<period>期")
    p.add_argument("--base", help="the version this file was based on")


def _share_commands(sub: Any) -> None:
    s = _group(sub, "share", "share your account sets with friends")
    g = s.add_parser("grant", help="share a set with friends")
    g.add_argument("--set", required=True)
    g.add_argument("friends", nargs="+", help="friend accounts")
    g.add_argument("--read-only", action="store_true")
    g.add_argument("--years", help="comma-separated fiscal years (default: all)")
    g.add_argument("--expires", type=when, help="ISO time with zone, e.g. 2027-01-01T00:00Z")
    rv = s.add_parser("revoke", help="cancel a share (one friend or everyone)")
    rv.add_argument("--set", required=True)
    rv.add_argument("friend", nargs="?")
    s.add_parser("list", help="the share list")
    c = _group(sub, "cloudshare", "sets friends share with you (the sharee's side)")
    c.add_parser("list", help="my cloud shares")
    cd = c.add_parser("download", help="download one fiscal year of a shared set")
    cd.add_argument("--owner", required=True, help="the sharer's account")
    _set_year(cd)
    cd.add_argument("--version")
    cd.add_argument("-o", "--output")
    cu = c.add_parser("upload", help="upload one fiscal year back into the sharer's drive")
    cu.add_argument("--owner", required=True)
    _upload_args(cu)


def _operator_commands(sub: Any) -> None:
    e = _group(sub, "events", "read the event log")
    t = e.add_parser("tail", help="the newest events")
    t.add_argument("--context", help="one context's events only (identity, social, …)")
    t.add_argument("-n", "--count", type=int, default=20)
    t.add_argument("-f", "--follow", action="store_true")
    sh = e.add_parser("show", help="every event of one aggregate")
    sh.add_argument("subject", help="e.g. evt.identity.member.<id>.*")
    rp = sub.add_parser("replay", help="rebuild a read model from the log and verify it")
    rp.add_argument("service", help="the service whose read model to rebuild, e.g. sharing")
    rp.add_argument("--swap", action="store_true", help="make the rebuilt one live")
    rp.add_argument("--timeout", type=float, default=3600.0,
                    help="seconds to wait for the service to finish (default 3600)")
    sub.add_parser("services", help="running service instances ($SRV.PING/STATS)")
    lg = _group(sub, "log", "the event log as a whole")
    rw = lg.add_parser("rewrite", help="copy the log into a new stream without the secrets, "
                       "base64 claim subjects and plain personal data older events hold")
    rw.add_argument("--into", required=True, metavar="NEWSTREAM", help="the new stream")
    rw.add_argument("--no-switch", action="store_true",
                    help="copy only (a trial); the old stream keeps the log's subjects")


CLIENT: dict[tuple[str, ...], client.Handler] = {
    ("member", "register"): client.member_register, ("member", "login"): client.member_login,
    ("member", "bind"): client.member_bind, ("member", "me"): client.member_me,
    ("member", "logout"): client.member_logout,
    ("member", "delete"): client.member_delete,
    ("friend", "add"): client.friend_add, ("friend", "list"): client.friend_list,
    ("friend", "remove"): client.friend_remove,
    ("drive", "password", "set"): client.drive_set,
    ("drive", "password", "verify"): client.drive_verify,
    ("drive", "password", "reset"): client.drive_reset,
    ("backup", "upload"): client.backup_upload, ("backup", "list"): client.backup_list,
    ("backup", "versions"): client.backup_versions,
    ("backup", "download"): client.backup_download,
    ("backup", "delete"): client.backup_delete,
    ("share", "grant"): client.share_grant, ("share", "revoke"): client.share_revoke,
    ("share", "list"): client.share_list,
    ("cloudshare", "list"): client.cloudshare_list,
    ("cloudshare", "download"): client.cloudshare_download,
    ("cloudshare", "upload"): client.cloudshare_upload,
}
CLIENT.update(sync_cli.CLIENT)
CLIENT.update(agency_cli.CLIENT)


# What reaches the system only over the bus, and why the gateway cannot stand in for it.
BUS_ONLY: dict[tuple[str, ...], str] = {
    ("member", "bind"): "it drives the WeChat login, which only WeChat's edge may call",
    ("events",): "it reads the event log on the bus",
    ("replay",): "it is an operators' operation on the bus",
    ("services",): "it asks every instance on the bus",
    ("log",): "it copies the event log on the bus",
    ("status",): "it asks the stack's NATS and PostgreSQL",
    ("run",): "it starts the system and walks through it on the bus",
    ("demo",): "it walks through the guide on the bus",
}
# Commands that do not reach the system: the same with or without a gateway.
OFFLINE = ("up", "down", "catalogue")


def dispatch(args: argparse.Namespace, console: Console) -> int:
    key = tuple(v for v in (args.command, getattr(args, "action", None),
                            getattr(args, "step", None)) if v)
    if args.command in OFFLINE:
        return local(args, console)
    settings = with_gateway(load_settings(), args.gateway)
    if settings.gateway_url and (why := BUS_ONLY.get(key[:2], BUS_ONLY.get(key[:1]))):
        return fail(f"`ledgershare {' '.join(key)}` is not available through the gateway "
                    f"({why}); run it without --gateway and $LEDGERSHARE_GATEWAY_URL",
                    status=2)
    if key in CLIENT:
        return asyncio.run(client.run(CLIENT[key], args, settings, console))
    if args.command in ("status", "run", "demo"):
        return local(args, console)
    return asyncio.run(operator(args, console))


def with_gateway(settings: Settings, option: str | None) -> Settings:
    """The settings with --gateway, when given, over $LEDGERSHARE_GATEWAY_URL."""
    return settings if option is None else settings.with_overrides(gateway_url=option)


def local(args: argparse.Namespace, console: Console) -> int:
    """The commands about this machine's stack; a StackError is one line."""
    from cli import catalogue, demo, stackcmds
    from cli import run as runcmd
    from deploy.stack import StackError

    try:
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
            case _:
                print(catalogue.render_operations() if args.operations else catalogue.render(),
                      end="")
                return 0
    except StackError as err:
        return fail(str(err))


async def operator(args: argparse.Namespace, console: Console) -> int:
    from cli import operate

    settings = load_settings()
    nc = await client.connect(settings)
    try:
        match args.command, getattr(args, "action", None):
            case "events", "tail":
                await operate.events_tail(nc, console, args)
            case "events", "show":
                await operate.events_show(nc, console, args)
            case "replay", _:
                return await operate.replay(nc, console, args)
            case "services", _:
                await operate.services(nc, console, args)
            case "log", "rewrite":
                from cli import rewrite
                return await rewrite.command(nc, console, args, settings)
        return 0
    finally:
        await nc.close()


def main(argv: list[str] | None = None) -> int:
    """Parse, run, and turn known errors into one line on stderr and a non-zero exit."""
    args = parser().parse_args(argv)
    console = Console()
    try:
        return dispatch(args, console)
    except LedgerError as err:
        return fail(f"{err.message} [{err.code}]")
    except KeyboardInterrupt:
        return 130
    except (OSError, nats.errors.NoServersError) as err:
        return fail(f"cannot reach the system ({err}); is it running? try `ledgershare status`")
    except Exception as err:
        return fail(f"{type(err).__name__}: {err}")


def fail(message: str, *, status: int = 1) -> int:
    """One line on stderr and a non-zero exit status (1 unless told): never a traceback."""
    # Escaped: "[code]" at its end would otherwise be read as markup and vanish.
    Console(stderr=True, highlight=False, soft_wrap=True).print(
        f"[red]error:[/] {escape(message)}", markup=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
