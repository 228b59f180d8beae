"""Client commands: a gateway client in a terminal, through the typed clients of contracts/.

Each command prints a table (or JSON with ``--json``), keeps the session and the newest
consistency token in the session file, and raises typed errors that `cli.main` turns
into one line on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import nats
from nats.aio.client import Client as NATS
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from cli import session as saved_session
from cli import wechat
from cli.session import Saved
from contracts import identity as idc
from contracts import sharing as shc
from contracts import social as soc
from contracts import storage as stc
from contracts.errors import BadRequest, NotFound
from contracts.http import (
    IdentityOverHttp,
    SharingOverHttp,
    SocialOverHttp,
    StorageOverHttp,
    gateway_http,
)
from contracts.transfer import download, sha256_file, upload
from runtime.settings import Settings, as_stack_user

Handler = Callable[["Client", argparse.Namespace], Awaitable[Any]]


def new_id() -> str:
    return uuid.uuid4().hex


def secret(value: str | None, prompt: str, env: str) -> str:
    """A password from the option, the environment, or a prompt (never echoed)."""
    if value:
        return value
    if os.environ.get(env):
        return os.environ[env]
    return getpass.getpass(f"{prompt}: ")


def confirm(question: str) -> bool:
    """A yes from the terminal (no terminal: no)."""
    if not sys.stdin.isatty():
        return False
    return input(f"{question} [y/N] ").strip().lower() in {"y", "yes"}


@dataclass(frozen=True)
class Contexts:
    """The typed clients of the four contexts, over NATS or through the gateway."""

    identity: idc.IdentityClient
    social: soc.SocialClient
    storage: stc.StorageClient
    sharing: shc.SharingClient


class Client:
    """Connections, the saved session, and output for one command."""

    def __init__(self, contexts: Contexts, settings: Settings, console: Console,
                 as_json: bool) -> None:
        self.settings = settings
        self.console = console
        self.as_json = as_json
        self.saved = saved_session.load(settings.home)
        self.identity = contexts.identity
        self.social = contexts.social
        self.storage = contexts.storage
        self.sharing = contexts.sharing

    def me(self) -> Saved:
        return saved_session.require(self.saved)

    def seen(self, seq: int) -> None:
        self.saved.seq = max(self.saved.seq, seq)
        saved_session.save(self.settings.home, self.saved)

    def show(self, value: Any, table: Table | str | None = None) -> None:
        if self.as_json or table is None:
            print(msgspec.json.encode(value).decode())
        else:
            self.console.print(table)

    def progress(self) -> Progress:
        return Progress("[progress.description]{task.description}", BarColumn(),
                        DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn(),
                        console=self.console, transient=self.as_json)


def table(title: str, columns: list[str], rows: list[list[Any]]) -> Table:
    t = Table(title=title)
    for c in columns:
        t.add_column(c)
    for r in rows:
        t.add_row(*(str(x) if x is not None else "-" for x in r))
    return t


# ---- member -----------------------------------------------------------------------------

async def member_register(c: Client, a: argparse.Namespace) -> None:
    reply = await c.identity.register(idc.Register(
        command_id=new_id(), account=a.account, nickname=a.nickname,
        password=secret(a.password, "password", "LEDGERSHARE_PASSWORD")))
    c.seen(reply.seq)
    c.show(reply, f"registered {a.account}: member {reply.member_id}")


async def member_login(c: Client, a: argparse.Namespace) -> None:
    reply = await c.identity.login(idc.Login(
        account=a.account, password=secret(a.password, "password", "LEDGERSHARE_PASSWORD")))
    c.saved = Saved(member_id=reply.member_id, account=a.account, session=reply.session,
                    seq=c.saved.seq)
    c.seen(0)
    c.show(reply, f"logged in as {a.account} until {reply.expires_at:%Y-%m-%d %H:%M} UTC")


async def member_logout(c: Client, a: argparse.Namespace) -> None:
    """End the kept session at identity (everywhere at once) and forget it here."""
    me = c.me()
    reply = await c.identity.logout(idc.Logout(command_id=new_id(), session=me.session))
    c.saved = Saved(seq=max(c.saved.seq, reply.seq))
    c.seen(0)
    c.show(reply, f"logged out {me.account}: that session no longer works anywhere")


async def member_delete(c: Client, a: argparse.Namespace) -> None:
    """Erase the logged-in member (after a confirmation unless --yes)."""
    me = c.me()
    if not a.yes and not confirm(f"delete {me.account} for good, with every backup, share "
                                 "and friend?"):
        raise SystemExit("nothing deleted")
    reply = await c.identity.delete_member(idc.DeleteMember(
        command_id=new_id(), session=me.session,
        password=secret(a.password, "password", "LEDGERSHARE_PASSWORD")))
    c.saved = Saved(seq=max(c.saved.seq, reply.seq))
    c.seen(0)
    c.show(reply, f"deleted {me.account}: its backups, shares and friendships go now, and "
                  "its name is free")


async def member_bind(c: Client, a: argparse.Namespace) -> None:
    """What the Member Center's 绑定 page does, with the local WeChat stand-in as WeChat."""
    login = await c.identity.login_wechat(idc.LoginWechat(
        code=await wechat.login_code(c.settings, a.wechat_user)))
    reply = await c.identity.bind(idc.Bind(
        command_id=new_id(), openid_proof=login.openid_proof, account=a.account,
        nickname=a.nickname, password=secret(a.password, "password", "LEDGERSHARE_PASSWORD")))
    c.seen(reply.seq)
    c.show(reply, f"{a.account} is bound to WeChat user {a.wechat_user}")


async def member_me(c: Client, a: argparse.Namespace) -> None:
    info = await c.identity.me(idc.Me(session=c.me().session))
    c.show(info, table("member info", ["account", "nickname", "WeChat bound",
                                       "cloud-drive password set"],
                       [[info.account, info.nickname, info.bound, info.drive_password_set]]))


# ---- friends ----------------------------------------------------------------------------

async def friend_add(c: Client, a: argparse.Namespace) -> None:
    reply = await c.social.add_friend(soc.AddFriend(
        command_id=new_id(), session=c.me().session, account=a.account, nickname=a.nickname,
        seq=c.saved.seq))
    c.seen(reply.seq)
    c.show(reply, f"{reply.account} ({reply.nickname}) is now your friend")


async def friend_list(c: Client, a: argparse.Namespace) -> None:
    reply = await c.social.list_friends(soc.ListFriends(session=c.me().session,
                                                        seq=c.saved.seq))
    c.show(reply, table("friends", ["account", "nickname", "since"], [
        [f.account, f.nickname, f"{f.since:%Y-%m-%d %H:%M}"] for f in reply.friends]))


async def friend_remove(c: Client, a: argparse.Namespace) -> None:
    reply = await c.social.remove_friend(soc.RemoveFriend(
        command_id=new_id(), session=c.me().session, account=a.account, seq=c.saved.seq))
    c.seen(reply.seq)
    c.show(reply, f"{reply.account} is no longer your friend")


# ---- cloud-drive password ---------------------------------------------------------------

async def drive_set(c: Client, a: argparse.Namespace) -> None:
    reply = await c.identity.drive_password_set(idc.SetDrivePassword(
        command_id=new_id(), session=c.me().session, question=a.question,
        answer=secret(a.answer, "answer", "LEDGERSHARE_ANSWER"),
        password=secret(a.password, "cloud-drive password", "LEDGERSHARE_DRIVE_PASSWORD")))
    c.seen(reply.seq)
    c.show(reply, "cloud-drive password and security question set")


async def drive_verify(c: Client, a: argparse.Namespace) -> None:
    reply = await unlock(c, a.password)
    c.show(reply, f"cloud share unlocked until {reply.expires_at:%Y-%m-%d %H:%M} UTC")


async def unlock(c: Client, password: str | None) -> idc.DriveToken:
    """Verify the cloud-drive password and keep the drive token in the session file."""
    reply = await c.identity.drive_password_verify(idc.VerifyDrivePassword(
        command_id=new_id(), session=c.me().session,
        password=secret(password, "cloud-drive password", "LEDGERSHARE_DRIVE_PASSWORD")))
    c.saved.drive = reply.drive_token
    c.seen(reply.seq)
    return reply


async def drive_token(c: Client) -> str:
    """The saved drive token; without one, Cloud Share asks for the cloud-drive password
    first (as the guide's dialog does)."""
    if not c.me().drive:
        await unlock(c, None)
    return c.saved.drive


async def drive_reset(c: Client, a: argparse.Namespace) -> None:
    reply = await c.identity.drive_password_reset(idc.ResetDrivePassword(
        command_id=new_id(), session=c.me().session,
        answer=secret(a.answer, "answer", "LEDGERSHARE_ANSWER"),
        new_password=secret(a.new_password, "new cloud-drive password",
                            "LEDGERSHARE_DRIVE_PASSWORD")))
    c.seen(reply.seq)
    c.show(reply, "cloud-drive password reset")


# ---- backups (the owner's drive) ----------------------------------------------------------

async def put_file(c: Client, path: Path, *, owner_id: str | None, set_id: str, name: str,
                   year: int, period: int, remark: str, base: str | None) -> stc.Uploaded:
    """Begin, PUT the parts with a progress bar, complete."""
    me = c.me()
    size, digest = await asyncio.to_thread(_facts, path)
    plan = await c.storage.begin_upload(stc.BeginUpload(
        command_id=new_id(), session=me.session, owner_id=owner_id, set_id=set_id,
        set_name=name, year=year, period=period, size=size, sha256=digest, remark=remark,
        base_version=base, drive_token=me.drive, seq=me.seq))
    if not c.as_json:
        c.console.print(f"{stc.megabytes(size)} to upload; drive: {stc.megabytes(plan.used)} "
                        f"used, {stc.megabytes(plan.available)} available of "
                        f"{stc.megabytes(plan.quota)}")
    with c.progress() as bar:
        task = bar.add_task(f"upload {path.name}", total=size)
        await upload(plan, path, progress=lambda n: bar.advance(task, n))
    done = await c.storage.complete_upload(stc.CompleteUpload(
        command_id=new_id(), session=me.session, owner_id=owner_id, upload_id=plan.upload_id,
        drive_token=me.drive, seq=me.seq))
    c.seen(done.seq)
    return done


def _facts(path: Path) -> tuple[int, str]:
    if not path.is_file():
        raise BadRequest(f"no such file: {path}")
    return path.stat().st_size, sha256_file(path)


def version_rows(versions: list[stc.VersionInfo]) -> list[list[Any]]:
    return [[v.version_id, v.set_name, v.year, v.remark, v.uploader_id[:8],
             f"{v.uploaded_at:%Y-%m-%d %H:%M}", stc.megabytes(v.size),
             "conflict" if v.conflict_with else ""] for v in versions]


VERSION_COLUMNS = ["version", "set", "year", "remark", "uploader", "time", "size", "mark"]


async def backup_upload(c: Client, a: argparse.Namespace) -> None:
    done = await put_file(c, Path(a.file), owner_id=None, set_id=a.set, name=a.name or a.set,
                          year=a.year, period=a.period,
                          remark=a.remark or f"{a.year}年{a.period}期", base=a.base)
    c.show(done, table("uploaded", VERSION_COLUMNS, version_rows([done.version])))


async def backup_list(c: Client, a: argparse.Namespace) -> None:
    reply = await c.storage.drive(stc.DriveRequest(session=c.me().session, seq=c.saved.seq))
    rows = [[s.set_id, s.set_name, s.year, s.versions, s.latest.remark, stc.megabytes(s.size)]
            for s in reply.set_years]
    c.show(reply, table(f"cloud backups: {stc.megabytes(reply.used)} used of "
                        f"{stc.megabytes(reply.quota)}",
                        ["set", "name", "year", "versions", "latest", "size"], rows))


async def backup_versions(c: Client, a: argparse.Namespace) -> None:
    reply = await c.storage.versions(stc.VersionsRequest(
        session=c.me().session, set_id=a.set, year=a.year, seq=c.saved.seq))
    c.show(reply, table(f"versions of {a.set} {a.year}", VERSION_COLUMNS,
                        version_rows(reply.versions)))


async def fetch(c: Client, *, owner_id: str | None, set_id: str, year: int,
                version: str | None, out: str | None) -> Path:
    me = c.me()
    ticket = await c.storage.download(stc.DownloadRequest(
        command_id=new_id(), session=me.session, owner_id=owner_id, set_id=set_id, year=year,
        version_id=version, drive_token=me.drive, seq=me.seq))
    path = Path(out) if out else Path(download_name(ticket.version.set_name, year))
    with c.progress() as bar:
        task = bar.add_task(f"download {path.name}", total=ticket.version.size)
        await download(ticket.url, path, size=ticket.version.size,
                       progress=lambda n: bar.advance(task, n))
    return path


def download_name(set_name: str, year: int) -> str:
    """The default file name of a download: the set name comes from the server and another
    member, so only its last path part is used, and the file lands in the current folder."""
    return Path(f"{set_name}-{year}.bak".replace("\\", "/")).name


async def backup_download(c: Client, a: argparse.Namespace) -> None:
    path = await fetch(c, owner_id=None, set_id=a.set, year=a.year, version=a.version,
                       out=a.output)
    c.show({"file": str(path)}, f"saved {path}")


async def backup_delete(c: Client, a: argparse.Namespace) -> None:
    reply = await c.storage.delete_version(stc.DeleteVersion(
        command_id=new_id(), session=c.me().session, version_id=a.version))
    c.seen(reply.seq)
    c.show(reply, f"deleted; {stc.megabytes(reply.freed)} freed")


# ---- shares (the owner) -------------------------------------------------------------------

async def share_grant(c: Client, a: argparse.Namespace) -> None:
    years = [int(y) for y in a.years.split(",")] if a.years else None
    reply = await c.sharing.grant(shc.Grant(
        command_id=new_id(), session=c.me().session, set_id=a.set, friends=a.friends,
        permission="read-only" if a.read_only else "read-write", years=years,
        expires_at=a.expires, seq=c.saved.seq))
    c.seen(reply.seq)
    c.show(reply, f"set {a.set} shared with {', '.join(reply.friends)}")


async def share_revoke(c: Client, a: argparse.Namespace) -> None:
    reply = await c.sharing.revoke(shc.Revoke(command_id=new_id(), session=c.me().session,
                                              set_id=a.set, friend=a.friend,
                                              seq=c.saved.seq))
    c.seen(reply.seq)
    c.show(reply, f"share of {a.set} cancelled for {a.friend or 'everyone'}")


async def share_list(c: Client, a: argparse.Namespace) -> None:
    reply = await c.sharing.shares(shc.ShareListRequest(session=c.me().session,
                                                        seq=c.saved.seq))
    rows = [[s.set_name, f.account, f.nickname, f"{f.since:%Y-%m-%d %H:%M}", f.permission,
             ",".join(map(str, f.years or [])) or "all"] for s in reply.sets for f in s.friends]
    c.show(reply, table(f"share list: {reply.summary}",
                        ["set", "friend", "nickname", "since", "permission", "years"], rows))


# ---- cloud share (the sharee) -------------------------------------------------------------

async def my_cloud_shares(c: Client) -> shc.CloudShares:
    return await c.sharing.cloud_shares(shc.CloudSharesRequest(
        session=c.me().session, drive_token=await drive_token(c), seq=c.saved.seq))


async def cloudshare_list(c: Client, a: argparse.Namespace) -> None:
    reply = await my_cloud_shares(c)
    rows = [[s.account, st.set_name, st.set_id, y.year, v.remark, v.uploader_id[:8],
             f"{v.uploaded_at:%Y-%m-%d %H:%M}", stc.megabytes(v.size),
             "conflict" if v.conflict_with else ""]
            for s in reply.sharers for st in s.sets for y in st.years for v in y.versions]
    c.show(reply, table("my cloud shares", ["sharer", "set", "set id", "year", "remark",
                                             "uploader", "time", "size", "mark"], rows))


async def shared_set(c: Client, account: str, set_id: str) -> tuple[str, str]:
    """The sharer's member id and the set's name, from my cloud shares."""
    reply = await my_cloud_shares(c)
    for s in reply.sharers:
        for st in s.sets:
            if s.account.casefold() == account.casefold() and st.set_id == set_id:
                return s.owner_id, st.set_name
    raise NotFound(f"{account} shares no account set {set_id} with you")


async def cloudshare_download(c: Client, a: argparse.Namespace) -> None:
    owner_id, _ = await shared_set(c, a.owner, a.set)
    path = await fetch(c, owner_id=owner_id, set_id=a.set, year=a.year, version=a.version,
                       out=a.output)
    c.show({"file": str(path)}, f"saved {path}")


async def cloudshare_upload(c: Client, a: argparse.Namespace) -> None:
    owner_id, name = await shared_set(c, a.owner, a.set)
    done = await put_file(c, Path(a.file), owner_id=owner_id, set_id=a.set,
                          name=a.name or name, year=a.year, period=a.period,
                          remark=a.remark or f"{a.year}年{a.period}期", base=a.base)
    c.show(done, table(f"uploaded into {a.owner}'s drive", VERSION_COLUMNS,
                       version_rows([done.version])))


NO_SESSION_NEEDED = {"member_register", "member_login", "member_bind"}


def timeout_of(settings: Settings) -> float:
    """How long a client command waits for one answer: well past a service's own wait."""
    return settings.request_timeout_s * 6


@asynccontextmanager
async def contexts(settings: Settings) -> AsyncIterator[Contexts]:
    """The typed clients for one command: through the gateway when one is set, else over
    a NATS connection of its own."""
    if settings.gateway_url:
        async with gateway_http(settings.gateway_url, timeout=timeout_of(settings)) as web:
            yield Contexts(IdentityOverHttp(web), SocialOverHttp(web), StorageOverHttp(web),
                           SharingOverHttp(web))
        return
    nc = await connect(settings)
    try:
        yield over_nats(nc, timeout=timeout_of(settings))
    finally:
        await nc.close()


def over_nats(nc: NATS, *, timeout: float) -> Contexts:
    """The typed clients on a NATS connection."""
    return Contexts(idc.IdentityClient(nc, timeout=timeout), soc.SocialClient(nc, timeout=timeout),
                    stc.StorageClient(nc, timeout=timeout), shc.SharingClient(nc, timeout=timeout))


async def connect(settings: Settings) -> NATS:
    """A NATS connection for one command; failures are raised, not logged."""
    async def quiet(_err: Exception) -> None:
        pass

    return await nats.connect(settings.nats_servers, connect_timeout=3, max_reconnect_attempts=1,
                              allow_reconnect=False, error_cb=quiet,
                              inbox_prefix=settings.nats_inbox_prefix)


async def run(handler: Handler, args: argparse.Namespace, settings: Settings,
              console: Console) -> int:
    """Connect, run one client command, disconnect. On the local stack it connects as a
    gateway does: as ``desktop``, or as ``wechat`` to drive the WeChat login of ``member
    bind`` (only WeChat's edge may call it); never as the operator."""
    settings = as_stack_user(settings, "wechat" if handler is member_bind else "desktop")
    if handler.__name__ not in NO_SESSION_NEEDED:
        saved_session.require(saved_session.load(settings.home))
    async with contexts(settings) as clients:
        await handler(Client(clients, settings, console, args.json), args)
    return 0
