"""`ledgershare demo`: the guide's walkthrough with real calls, each step printed.

A and B register and bind, B becomes A's friend, A uploads set "123" year 2018 period 1,
shares it with B, B sets the cloud-drive password, lists cloud shares, downloads 2018,
uploads it back closed to period 4, A sees that version in A's backups, A revokes, and
B's next download is refused. Then cloud sync (`cli/syncdemo.py`): two machines of A;
and a bookkeeping agency (`cli/agencydemo.py`): a supervisor, two accountants, a handover.
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

from cli import wechat
from cli.agencydemo import AgencyWalk
from cli.syncdemo import SyncWalk
from contracts.errors import LedgerError
from contracts.identity import (
    Bind,
    IdentityClient,
    Login,
    LoginWechat,
    Me,
    Register,
    SetDrivePassword,
    VerifyDrivePassword,
)
from contracts.sharing import CloudSharesRequest, Grant, Revoke, ShareListRequest, SharingClient
from contracts.social import AddFriend, ListFriends, SocialClient
from contracts.storage import (
    BeginUpload,
    CompleteUpload,
    DownloadRequest,
    DriveRequest,
    StorageClient,
    VersionsRequest,
    megabytes,
)
from contracts.transfer import download, sha256_file, upload
from runtime.settings import Settings, load_settings

SET_ID = "5d1c2e3f-0000-4000-8000-000000000123"


def new_id() -> str:
    return uuid.uuid4().hex


def account_set_file(path: Path, *, year: int, period: int, size: int = 300_000,
                     name: str = "123") -> Path:
    """A stand-in for the desktop program's data file of one fiscal year."""
    header = f"LEDGERSHARE-ACCOUNT-SET {name} year={year} period={period}\n".encode()
    body = (header + os.urandom(64)) * (size // (len(header) + 64) + 1)
    path.write_bytes(body[:size])
    return path


def facts(path: Path) -> tuple[int, str]:
    """Size and SHA-256 of a file."""
    return path.stat().st_size, sha256_file(path)


class Member:
    """One side of the walkthrough: account, tokens, and what it last saw of the log."""

    def __init__(self, account: str, nickname: str) -> None:
        self.account, self.nickname = account, nickname
        self.member_id = self.session = self.drive = ""
        self.seq = 0


class Walkthrough:
    """Two members, A (the sharer) and B (the sharee), through the guide's steps."""

    def __init__(self, nc: NATS, console: Console, tag: str, folder: Path,
                 settings: Settings) -> None:
        self.settings = settings
        self.identity = IdentityClient(nc, timeout=10)
        self.social = SocialClient(nc, timeout=10)
        self.storage = StorageClient(nc, timeout=30)
        self.sharing = SharingClient(nc, timeout=10)
        self.console = console
        self.folder = folder
        self.a = Member(f"1380000{tag}1", "张三")
        self.b = Member(f"1380000{tag}2", "李四")
        self.steps = 0

    def step(self, asked: str, answer: str) -> None:
        self.steps += 1
        self.console.print(f"[bold]{self.steps:>2}.[/] {escape(asked)}")
        self.console.print(f"    → {escape(answer)}")

    def sync(self, seq: int) -> None:
        """Both desktop programs pass on the newest consistency token they have seen."""
        self.a.seq = self.b.seq = max(self.a.seq, self.b.seq, seq)

    async def run(self) -> None:
        for m in (self.a, self.b):
            await self.register(m)
        await self.bind(self.a)
        await self.friends()
        original = await self.backup()
        await self.share()
        await self.cloud_share(original)
        await self.revoke()

    # ---- steps 1 and 2: members, WeChat, friends -----------------------------------------

    async def register(self, m: Member) -> None:
        reg = await self.identity.register(Register(
            command_id=new_id(), account=m.account, password="pass-123", nickname=m.nickname))
        m.member_id = reg.member_id
        self.sync(reg.seq)
        m.session = (await self.identity.login(Login(account=m.account,
                                                     password="pass-123"))).session
        self.step(f"register member {m.account} ({m.nickname})",
                  f"member {reg.member_id[:8]}…, log position {reg.seq}")

    async def bind(self, m: Member) -> None:
        user = f"wx-{new_id()[:12]}"
        first = await self.identity.login_wechat(LoginWechat(
            code=await wechat.login_code(self.settings, user)))
        await self.identity.bind(Bind(command_id=new_id(), openid_proof=first.openid_proof,
                                      account=m.account, password="pass-123",
                                      nickname=m.nickname))
        self.step(f"WeChat user {user} opens the Member Center (bound={first.bound}) and "
                  f"binds {m.account} (account, password, nickname)", "bound")
        again = await self.identity.login_wechat(LoginWechat(
            code=await wechat.login_code(self.settings, user)))
        m.session = again.session
        me = await self.identity.me(Me(session=m.session))
        self.step("member info, logged in through WeChat",
                  f"account {me.account}, nickname {me.nickname}, bound={me.bound}, "
                  f"cloud-drive password set={me.drive_password_set}")

    async def friends(self) -> None:
        a, b = self.a, self.b
        added = await self.social.add_friend(AddFriend(
            command_id=new_id(), session=a.session, account=b.account, nickname=b.nickname,
            seq=a.seq))
        self.sync(added.seq)
        self.step(f"{a.account} adds friend {b.account} with nickname {b.nickname}",
                  f"friend {added.account} ({added.nickname})")
        await self.refused(f"{a.account} adds {b.account} with the wrong nickname 王五",
                           self.social.add_friend(AddFriend(
                               command_id=new_id(), session=a.session, account=b.account,
                               nickname="王五")))
        listed = await self.social.list_friends(ListFriends(session=a.session, seq=a.seq))
        self.step(f"{a.account} lists friends", ", ".join(
            f"{f.account} ({f.nickname}) since {f.since:%Y-%m-%d %H:%M}" for f in listed.friends))

    async def refused(self, asked: str, attempt: object) -> None:
        try:
            await attempt  # type: ignore[misc]
        except LedgerError as err:
            self.step(asked, f"refused: {err.message} [{err.code}]")
        else:
            raise AssertionError(f"not refused: {asked}")

    # ---- step 3: cloud backup and share ---------------------------------------------------

    async def backup(self) -> Path:
        a = self.a
        await self.refused(f"{a.account} shares set 123 before any cloud backup",
                           self.sharing.grant(Grant(command_id=new_id(), session=a.session,
                                                    set_id=SET_ID, friends=[self.b.account],
                                                    seq=a.seq)))
        path = account_set_file(self.folder / "123-2018.bak", year=2018, period=1)
        await self.put(a, a, path, period=1, base=None)
        listing = await self.storage.drive(DriveRequest(session=a.session))
        rows = "; ".join(f"{s.set_name} {s.year}: {s.versions} version(s), latest "
                         f"{s.latest.remark}" for s in listing.set_years)
        self.step(f"{a.account} opens the drive list (网盘列表)",
                  f"{rows}; {megabytes(listing.used)} used of {megabytes(listing.quota)}")
        return path

    async def put(self, who: Member, owner: Member, path: Path, *, period: int,
                  base: str | None, set_id: str = SET_ID, set_name: str = "123") -> str:
        size, digest = await asyncio.to_thread(facts, path)
        plan = await self.storage.begin_upload(BeginUpload(
            command_id=new_id(), session=who.session,
            owner_id=None if who is owner else owner.member_id, set_id=set_id,
            set_name=set_name, year=2018, period=period, size=size, sha256=digest,
            remark=f"2018年{period}期", base_version=base, drive_token=who.drive,
            seq=who.seq))
        self.step(f"{who.account} uploads set {set_name}, 2018 closed to period {period} "
                  f"({megabytes(size)}) into {owner.account}'s drive",
                  f"{len(plan.parts)} presigned PUT URL(s); drive of {owner.account}: "
                  f"{megabytes(plan.used)} used, {megabytes(plan.available)} available of "
                  f"{megabytes(plan.quota)}")
        await upload(plan, path)
        done = await self.storage.complete_upload(CompleteUpload(
            command_id=new_id(), session=who.session,
            owner_id=None if who is owner else owner.member_id, upload_id=plan.upload_id,
            drive_token=who.drive, seq=who.seq))
        self.sync(done.seq)
        self.step("the file goes to S3; storage verifies it and records the version",
                  f"version {done.version.version_id[:8]}… (size and SHA-256 checked), "
                  f"remark {done.version.remark}")
        return done.version.version_id

    async def share(self) -> None:
        a, b = self.a, self.b
        granted = await self.sharing.grant(Grant(command_id=new_id(), session=a.session,
                                                 set_id=SET_ID, friends=[b.account],
                                                 seq=a.seq))
        self.sync(granted.seq)
        shares = await self.sharing.shares(ShareListRequest(session=a.session, seq=a.seq))
        who = "; ".join(f"{s.set_name}: " + ", ".join(
            f"shared with {f.nickname} since {f.since:%Y-%m-%d %H:%M}" for f in s.friends)
            for s in shares.sets)
        self.step(f"{a.account} shares set 123 with {b.account}; the share list (共享列表)",
                  f"{who} — {shares.summary}")

    # ---- steps 4 to 7: cloud share, work, upload back, owner sees it ----------------------

    async def cloud_share(self, original: Path) -> None:
        a, b = self.a, self.b
        await self.identity.drive_password_set(SetDrivePassword(
            command_id=new_id(), session=b.session, password="drive-789",
            question="first pet?", answer="Rex"))
        b.drive = (await self.identity.drive_password_verify(VerifyDrivePassword(
            command_id=new_id(), session=b.session, password="drive-789"))).drive_token
        self.step(f"{b.account} opens Cloud Share: sets the cloud-drive password and a "
                  "security question, then enters the password", "drive token issued")
        listed = await self.sharing.cloud_shares(CloudSharesRequest(
            session=b.session, drive_token=b.drive, seq=b.seq))
        rows = [f"{s.nickname}/{st.set_name}/{y.year}: " + ", ".join(
            v.remark for v in y.versions) for s in listed.sharers for st in s.sets
            for y in st.years]
        self.step(f"{b.account} lists my cloud shares (我的云共享)", "; ".join(rows))
        latest = listed.sharers[0].sets[0].years[0].versions[0].version_id
        got = await self.fetch(b, a, "b-2018.bak")
        (size, got_sha), (_, sha) = [await asyncio.to_thread(facts, p) for p in (got, original)]
        same = got_sha == sha
        self.step(f"{b.account} downloads fiscal year 2018 (one year per download)",
                  f"{megabytes(size)}, identical to {a.account}'s backup: {same}")
        worked = account_set_file(self.folder / "123-2018-p4.bak", year=2018, period=4,
                                  size=320_000)
        await self.put(b, a, worked, period=4, base=latest)
        await self.owner_sees()

    async def fetch(self, who: Member, owner: Member, name: str, *,
                    set_id: str = SET_ID) -> Path:
        ticket = await self.storage.download(DownloadRequest(
            command_id=new_id(), session=who.session, owner_id=owner.member_id,
            set_id=set_id, year=2018, drive_token=who.drive, seq=who.seq))
        path = self.folder / name
        await download(ticket.url, path, size=ticket.version.size)
        return path

    async def owner_sees(self) -> None:
        a, b = self.a, self.b
        versions = await self.storage.versions(VersionsRequest(session=a.session,
                                                               set_id=SET_ID, year=2018))
        names = {a.member_id: a.account, b.member_id: b.account}
        rows = "; ".join(f"{v.remark} by {names.get(v.uploader_id, v.uploader_id)}"
                         f"{' (conflict)' if v.conflict_with else ''}"
                         for v in versions.versions)
        drive = await self.storage.drive(DriveRequest(session=a.session))
        self.step(f"{a.account} opens Cloud Backup: versions of set 123, 2018",
                  f"{rows}; drive {megabytes(drive.used)} used of {megabytes(drive.quota)}")

    async def revoke(self) -> None:
        a, b = self.a, self.b
        revoked = await self.sharing.revoke(Revoke(command_id=new_id(), session=a.session,
                                                   set_id=SET_ID, friend=b.account,
                                                   seq=a.seq))
        self.sync(revoked.seq)
        self.step(f"{a.account} cancels the share with {b.account}", "revoked")
        await self.refused(f"{b.account} tries to download 2018 again",
                           self.fetch(b, a, "late.bak"))
        listed = await self.sharing.cloud_shares(CloudSharesRequest(
            session=b.session, drive_token=b.drive, seq=b.seq))
        self.step(f"{b.account} lists my cloud shares", f"{len(listed.sharers)} sharer(s)")


async def walk(settings: Settings, console: Console) -> int:
    """Run the walkthrough against the running services; returns the number of steps."""
    nc = await nats.connect(settings.nats_servers, inbox_prefix=settings.nats_inbox_prefix)
    try:
        with tempfile.TemporaryDirectory() as folder:
            tag = new_id()[:4].translate(str.maketrans("abcdef", "012345"))
            walkthrough = Walkthrough(nc, console, tag, Path(folder), settings)
            await walkthrough.run()
            await SyncWalk(walkthrough).run()
            await AgencyWalk(walkthrough).run()
            return walkthrough.steps
    finally:
        await nc.close()


def demo(console: Console) -> int:
    console.rule("the guide's walkthrough")
    # As the WeChat gateway, whose audience is every member operation and WeChat's login.
    asyncio.run(walk(load_settings(user="wechat"), console))
    return 0
