"""`ledgershare demo`: the guide's walkthrough with real calls, each step printed.

So far it covers what the running services offer: members and WeChat binding (step 1),
member info, friends (step 2), and a cloud backup uploaded and downloaded (steps 3, 7).
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import uuid
from pathlib import Path

import nats
from nats.aio.client import Client as NATS
from rich.console import Console
from rich.markup import escape

from contracts.errors import LedgerError
from contracts.identity import Bind, IdentityClient, Login, LoginOpenid, Me, Register
from contracts.social import AddFriend, ListFriends, SocialClient
from contracts.storage import (
    BeginUpload,
    CompleteUpload,
    DownloadRequest,
    DriveRequest,
    StorageClient,
    megabytes,
)
from contracts.transfer import download, sha256_file, upload
from runtime.settings import Settings, load_settings

SET_ID = "5d1c2e3f-0000-4000-8000-000000000123"


def new_id() -> str:
    return uuid.uuid4().hex


def account_set_file(path: Path, *, year: int, period: int, size: int = 300_000) -> Path:
    """A stand-in for the desktop program's data file of one fiscal year."""
    header = f"LEDGERSHARE-ACCOUNT-SET 123 year={year} period={period}\n".encode()
    body = (header + os.urandom(64)) * (size // (len(header) + 64) + 1)
    path.write_bytes(body[:size])
    return path


class Walkthrough:
    """Two members, A and B, through the guide's steps."""

    def __init__(self, nc: NATS, console: Console, tag: str) -> None:
        self.identity = IdentityClient(nc, timeout=10)
        self.social = SocialClient(nc, timeout=10)
        self.storage = StorageClient(nc, timeout=30)
        self.console = console
        self.a = f"1380000{tag}1"
        self.b = f"1380000{tag}2"
        self.steps = 0

    def step(self, asked: str, answer: str) -> None:
        self.steps += 1
        self.console.print(f"[bold]{self.steps:>2}.[/] {escape(asked)}")
        self.console.print(f"    → {escape(answer)}")

    async def run(self) -> None:
        a, b_token = await self.members()
        a = await self.bind(a)
        await self.friends(a, b_token)
        await self.backup(a)

    async def backup(self, session: str) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = account_set_file(Path(tmp) / "123-2018.bak", year=2018, period=1)
            plan = await self.storage.begin_upload(BeginUpload(
                command_id=new_id(), session=session, set_id=SET_ID, set_name="123",
                year=2018, period=1, size=path.stat().st_size, sha256=sha256_file(path),
                remark="2018年1期"))
            self.step(f"{self.a} begins a cloud backup of set 123, year 2018, period 1 "
                      f"({megabytes(path.stat().st_size)})",
                      f"{len(plan.parts)} presigned PUT URL(s); drive {megabytes(plan.used)} "
                      f"used of {megabytes(plan.quota)}")
            await upload(plan, path)
            done = await self.storage.complete_upload(CompleteUpload(
                command_id=new_id(), session=session, upload_id=plan.upload_id))
            self.step("the desktop program uploads the file to S3 and completes",
                      f"version {done.version.version_id[:8]}… verified (size and SHA-256), "
                      f"remark {done.version.remark}")
            listing = await self.storage.drive(DriveRequest(session=session))
            rows = "; ".join(f"{s.set_name} {s.year}: {s.versions} version(s), latest "
                             f"{s.latest.remark}" for s in listing.set_years)
            self.step(f"{self.a} opens the drive list (网盘列表)",
                      f"{rows}; {megabytes(listing.used)} used of {megabytes(listing.quota)}")
            ticket = await self.storage.download(DownloadRequest(
                command_id=new_id(), session=session, set_id=SET_ID, year=2018))
            back = Path(tmp) / "downloaded.bak"
            size = await download(ticket.url, back)
            same = sha256_file(back) == sha256_file(path)
            self.step(f"{self.a} downloads year 2018 through a presigned URL",
                      f"{megabytes(size)}, identical to what was uploaded: {same}")

    async def members(self) -> tuple[str, int]:
        for account, nick in [(self.a, "张三"), (self.b, "李四")]:
            reg = await self.identity.register(Register(
                command_id=new_id(), account=account, password="pass-123", nickname=nick))
            self.step(f"register member {account} ({nick})",
                      f"member {reg.member_id[:8]}…, log position {reg.token}")
        login = await self.identity.login(Login(account=self.a, password="pass-123"))
        return login.token, reg.token

    async def bind(self, session: str) -> str:
        openid = f"wx-{new_id()[:12]}"
        await self.identity.bind(Bind(command_id=new_id(), openid=openid, account=self.a,
                                      password="pass-123", nickname="张三"))
        self.step(f"bind WeChat user {openid} to {self.a} (account, password, nickname)",
                  "bound")
        via_wechat = await self.identity.login_openid(LoginOpenid(openid=openid))
        me = await self.identity.me(Me(session=via_wechat.token))
        self.step("member info, logged in through WeChat",
                  f"account {me.account}, nickname {me.nickname}, bound={me.bound}, "
                  f"cloud-drive password set={me.drive_password_set}")
        return via_wechat.token

    async def friends(self, session: str, b_token: int) -> None:
        added = await self.social.add_friend(AddFriend(
            command_id=new_id(), session=session, account=self.b, nickname="李四",
            token=b_token))
        self.step(f"{self.a} adds friend {self.b} with nickname 李四",
                  f"friend {added.account} ({added.nickname})")
        try:
            await self.social.add_friend(AddFriend(command_id=new_id(), session=session,
                                                   account=self.b, nickname="王五"))
        except LedgerError as err:
            self.step(f"{self.a} adds {self.b} with the wrong nickname 王五",
                      f"refused: {err.message} [{err.code}]")
        listed = await self.social.list_friends(ListFriends(session=session,
                                                            token=added.token))
        names = ", ".join(f"{f.account} ({f.nickname}) since {f.since:%Y-%m-%d %H:%M}"
                          for f in listed.friends)
        self.step(f"{self.a} lists friends", names)


async def walk(settings: Settings, console: Console) -> int:
    """Run the walkthrough against the running services; returns the number of steps."""
    nc = await nats.connect(settings.nats_url)
    try:
        walkthrough = Walkthrough(nc, console, new_id()[:4].translate(
            str.maketrans("abcdef", "012345")))
        await walkthrough.run()
        return walkthrough.steps
    finally:
        await nc.close()


def demo(console: Console) -> int:
    console.rule("the guide's walkthrough")
    asyncio.run(walk(load_settings(), console))
    return 0
