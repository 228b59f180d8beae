"""sharing with identity, social and storage, over NATS against real servers."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast

import asyncpg
import pytest
from nats.aio.client import Client as NATS

from contracts.identity import (
    ChangePassword,
    IdentityClient,
    InvalidToken,
    Login,
    Me,
    Register,
    SetDrivePassword,
    VerifyDrivePassword,
)
from contracts.sharing import (
    Access,
    Check,
    CloudSharesRequest,
    Grant,
    HistoryRequest,
    NoBackup,
    NotAFriend,
    Revoke,
    ShareListRequest,
    SharingClient,
)
from contracts.social import AddFriend, ListFriends, RemoveFriend, SocialClient
from contracts.storage import (
    BeginUpload,
    CompleteUpload,
    DownloadRequest,
    DriveRequest,
    NoAccess,
    StorageClient,
    VersionsRequest,
)
from contracts.transfer import download, sha256_file, upload
from runtime.eventstore import EventStore
from runtime.replay import compare, rebuild
from runtime.settings import Settings
from services.sharing import tables as sharing_tables
from services.sharing.handlers import Sharing
from services.sharing.index import AccessIndex
from services.sharing.projection import AccessProjection
from tests.helpers import cid
from tests.services import wired_all

SET = "set-123"


class Person:
    """One member at the desktop program, holding tokens as a gateway client would."""

    def __init__(self, nc: NATS, account: str, nickname: str) -> None:
        self.identity = IdentityClient(nc, timeout=10)
        self.social = SocialClient(nc, timeout=10)
        self.storage = StorageClient(nc, timeout=30)
        self.sharing = SharingClient(nc, timeout=10)
        self.account, self.nickname = account, nickname
        self.session = self.drive = self.member_id = ""
        self.seq = 0

    async def join(self) -> Person:
        reg = await self.identity.register(Register(
            command_id=cid(), account=self.account, password="secret-1", nickname=self.nickname))
        self.member_id, self.seq = reg.member_id, reg.seq
        self.session = (await self.identity.login(Login(account=self.account,
                                                        password="secret-1"))).session
        return self

    async def befriend(self, other: Person) -> None:
        added = await self.social.add_friend(AddFriend(
            command_id=cid(), session=self.session, account=other.account,
            nickname=other.nickname, seq=max(self.seq, other.seq)))
        self.seq = other.seq = added.seq

    async def unlock_drive(self) -> None:
        await self.identity.drive_password_set(SetDrivePassword(
            command_id=cid(), session=self.session, password="drive-pw", question="pet?",
            answer="Rex"))
        self.drive = (await self.identity.drive_password_verify(VerifyDrivePassword(
            command_id=cid(), session=self.session, password="drive-pw"))).drive_token

    async def upload(self, path: Path, *, year: int = 2018, period: int = 1,
                     owner: Person | None = None, base: str | None = None,
                     set_id: str = SET) -> str:
        plan = await self.storage.begin_upload(BeginUpload(
            command_id=cid(), session=self.session, owner_id=owner.member_id if owner else None,
            set_id=set_id, set_name="123", year=year, period=period,
            size=await asyncio.to_thread(lambda: path.stat().st_size),
            sha256=await asyncio.to_thread(sha256_file, path), remark=f"{year}年{period}期",
            base_version=base, drive_token=self.drive, seq=self.seq))
        await upload(plan, path)
        done = await self.storage.complete_upload(CompleteUpload(
            command_id=cid(), session=self.session, owner_id=owner.member_id if owner else None,
            upload_id=plan.upload_id, drive_token=self.drive, seq=self.seq))
        self.seq = done.seq
        return done.version.version_id

    async def download(self, owner: Person, year: int, into: Path, *,
                       set_id: str = SET) -> int:
        ticket = await self.storage.download(DownloadRequest(
            command_id=cid(), session=self.session, owner_id=owner.member_id, set_id=set_id,
            year=year, drive_token=self.drive, seq=self.seq))
        return await download(ticket.url, into)

    async def grant(self, *friends: Person, set_id: str = SET, **terms: object) -> None:
        reply = await self.sharing.grant(Grant(
            command_id=cid(), session=self.session, set_id=set_id,
            friends=[f.account for f in friends], seq=self.seq, **terms))  # type: ignore[arg-type]
        self.seq = reply.seq
        for f in friends:
            f.seq = reply.seq

    async def revoke(self, friend: Person | None = None, *, set_id: str = SET) -> int:
        reply = await self.sharing.revoke(Revoke(
            command_id=cid(), session=self.session, set_id=set_id,
            friend=friend.account if friend else None, seq=self.seq))
        self.seq = reply.seq
        return reply.seq


def account_set(tmp_path: Path, name: str, size: int = 20_000) -> Path:
    path = tmp_path / name
    path.write_bytes(os.urandom(size))
    return path


async def test_the_guide_end_to_end(nc_all: NATS, tmp_path: Path) -> None:
    a = await Person(nc_all, "13800000001", "张三").join()
    b = await Person(nc_all, "13800000002", "李四").join()
    await a.befriend(b)
    with pytest.raises(NoBackup, match="upload a cloud backup first"):
        await a.grant(b)
    original = account_set(tmp_path, "123-2018.bak")
    await a.upload(original)
    used_before = (await a.storage.drive(DriveRequest(session=a.session))).used
    await a.grant(b)
    shares = await a.sharing.shares(ShareListRequest(session=a.session, seq=a.seq))
    assert shares.summary == "1 account set(s) shared with 1 friend(s)"
    assert [(s.set_name, [f.account for f in s.friends]) for s in shares.sets] == [
        ("123", ["13800000002"])]

    await b.unlock_drive()
    listed = await b.sharing.cloud_shares(CloudSharesRequest(session=b.session,
                                                             drive_token=b.drive, seq=b.seq))
    [sharer] = listed.sharers
    assert (sharer.account, sharer.sets[0].set_name) == ("13800000001", "123")
    assert [(y.year, y.versions[0].remark) for y in sharer.sets[0].years] == [(2018, "2018年1期")]
    latest = sharer.sets[0].years[0].versions[0].version_id
    assert await b.download(a, 2018, tmp_path / "b.bak") == original.stat().st_size
    assert (tmp_path / "b.bak").read_bytes() == original.read_bytes()

    worked = account_set(tmp_path, "123-2018-p4.bak", 30_000)
    version = await b.upload(worked, period=4, owner=a, base=latest)
    a.seq = b.seq
    backups = await a.storage.versions(VersionsRequest(session=a.session, set_id=SET, year=2018))
    mine = {v.version_id: v for v in backups.versions}[version]
    assert (mine.uploader_id, mine.remark, mine.conflict_with) == (b.member_id, "2018年4期", None)
    used_after = (await a.storage.drive(DriveRequest(session=a.session))).used
    assert used_after == used_before + 30_000  # charged to the owner

    await a.revoke(b)
    b.seq = a.seq
    assert (await b.sharing.cloud_shares(CloudSharesRequest(
        session=b.session, drive_token=b.drive, seq=b.seq))).sharers == []
    with pytest.raises(NoAccess):
        await b.download(a, 2018, tmp_path / "again.bak")
    with pytest.raises(NoAccess):
        await b.upload(worked, period=5, owner=a)


async def test_revoke_then_download_is_refused_every_time(nc_all: NATS,
                                                          tmp_path: Path) -> None:
    a = await Person(nc_all, "owner", "O").join()
    b = await Person(nc_all, "sharee", "S").join()
    await a.befriend(b)
    await a.upload(account_set(tmp_path, "x.bak", 1000))
    await b.unlock_drive()
    refused = 0
    for _ in range(1000):
        await a.grant(b)
        b.seq = await a.revoke(b)
        try:
            await b.storage.download(DownloadRequest(
                command_id=cid(), session=b.session, owner_id=a.member_id, set_id=SET,
                year=2018, drive_token=b.drive, seq=b.seq))
        except NoAccess:
            refused += 1
    assert refused == 1000


async def test_each_refusal_has_its_own_code(nc_all: NATS, tmp_path: Path) -> None:
    a = await Person(nc_all, "owner", "O").join()
    b = await Person(nc_all, "friend", "F").join()
    c = await Person(nc_all, "stranger", "S").join()
    await a.befriend(b)
    a.seq = max(a.seq, c.seq)
    await a.upload(account_set(tmp_path, "2018.bak"), year=2018)
    await a.upload(account_set(tmp_path, "2019.bak"), year=2019)
    with pytest.raises(NotAFriend):
        await a.grant(c)
    with pytest.raises(NoBackup):
        await a.sharing.grant(Grant(command_id=cid(), session=a.session, set_id="other-set",
                                    friends=[b.account], seq=a.seq))
    await a.grant(b, permission="read-only", years=[2018])
    await b.unlock_drive()
    await b.download(a, 2018, tmp_path / "ok.bak")
    with pytest.raises(NoAccess):
        await b.upload(account_set(tmp_path, "w.bak"), owner=a)  # read-only
    with pytest.raises(NoAccess):
        await b.download(a, 2019, tmp_path / "no.bak")  # 2018 only
    verdict = await b.sharing.check(_check(b, a, 2019, "read"))
    assert (verdict.allowed, verdict.reason) == (False, "the share does not include 2019")
    verdict = await b.sharing.check(_check(b, a, 2018, "write"))
    assert (verdict.allowed, verdict.reason) == (False, "the share is read-only")


def _check(member: Person, owner: Person, year: int, access: Access) -> Check:
    return Check(member_id=member.member_id, owner_id=owner.member_id, set_id=SET, year=year,
                 access=access, seq=member.seq)


async def test_unfriending_ends_shares_and_expiry_ends_access_on_time(
        nc_all: NATS, tmp_path: Path) -> None:
    a = await Person(nc_all, "owner", "O").join()
    b = await Person(nc_all, "friend", "F").join()
    c = await Person(nc_all, "other", "X").join()
    await a.befriend(b)
    await a.befriend(c)
    await a.upload(account_set(tmp_path, "x.bak", 1000))
    await a.grant(b)
    await a.grant(c, expires_at=datetime.now(UTC) + timedelta(seconds=1.5))
    await b.unlock_drive()
    await c.unlock_drive()
    await c.download(a, 2018, tmp_path / "c.bak")
    removed = await b.social.remove_friend(RemoveFriend(command_id=cid(), session=b.session,
                                                        account=a.account, seq=b.seq))
    b.seq = removed.seq
    with pytest.raises(NoAccess):
        await b.download(a, 2018, tmp_path / "b.bak")
    await _eventually_unshared(a, b)
    await asyncio.sleep(1.6)
    with pytest.raises(NoAccess):
        await c.download(a, 2018, tmp_path / "c2.bak")
    listed = await a.sharing.shares(ShareListRequest(session=a.session))
    assert listed.sets == [] and listed.summary.startswith("0 account set(s)")


async def _eventually_unshared(a: Person, b: Person) -> None:
    # The unfriend policy appends ShareRevoked(reason=unfriended) for every shared set.
    for _ in range(200):
        shares = await a.sharing.shares(ShareListRequest(session=a.session))
        if all(b.account not in [f.account for f in s.friends] for s in shares.sets):
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the share outlived the friendship")


async def test_history_and_rebuild(nc_all: NATS, pool: asyncpg.Pool, events: EventStore,
                                   tmp_path: Path) -> None:
    a = await Person(nc_all, "owner", "O").join()
    b = await Person(nc_all, "friend", "F").join()
    await a.befriend(b)
    await a.upload(account_set(tmp_path, "x.bak", 1000))
    before = datetime.now(UTC)
    await asyncio.sleep(0.05)
    await a.grant(b)
    during = datetime.now(UTC)
    await asyncio.sleep(0.05)
    await a.revoke(b)
    after = datetime.now(UTC)

    async def who(at: datetime) -> list[str]:
        return (await a.sharing.history(HistoryRequest(session=a.session, set_id=SET, at=at,
                                                       seq=a.seq))).accounts

    assert (await who(before), await who(during), await who(after)) == ([], ["friend"], [])
    await a.grant(b, permission="read-only")
    await rebuild(nc_all, pool, AccessProjection(), "sharing_rebuilt")
    await a.sharing.shares(ShareListRequest(session=a.session, seq=a.seq))
    assert await compare(pool, "sharing", "sharing_rebuilt", sharing_tables.TABLES) == []


async def test_a_password_change_ends_earlier_tokens_in_every_service(
        nc_all: NATS) -> None:
    a = await Person(nc_all, "changer", "C").join()
    old = a.session
    changed = await a.identity.change_password(ChangePassword(
        command_id=cid(), session=old, old_password="secret-1", new_password="secret-2"))
    new = (await a.identity.login(Login(account=a.account, password="secret-2"))).session
    def calls(s: str) -> list[Awaitable[object]]:
        return [a.identity.me(Me(session=s)),
                a.social.list_friends(ListFriends(session=s, seq=changed.seq)),
                a.storage.drive(DriveRequest(session=s)),
                a.sharing.shares(ShareListRequest(session=s, seq=changed.seq))]

    for refused in calls(old):
        with pytest.raises(InvalidToken):
            await refused
    for accepted in calls(new):
        await accepted


async def test_the_in_memory_index_equals_the_tables(
        settings: Settings, nc: NATS, pool: asyncpg.Pool, events: EventStore,
        tmp_path: Path) -> None:
    async with wired_all(settings, nc, pool, events) as (_, wirings):
        wiring = wirings["sharing"]
        live = cast(Sharing, wiring.app).index
        assert live is not None
        people = [await Person(nc, f"person{i}", f"P{i}").join() for i in range(4)]
        for i, p in enumerate(people):
            await p.befriend(people[(i + 1) % 4])
            await p.upload(account_set(tmp_path, f"{i}.bak", 100))
            await p.grant(people[(i + 1) % 4], permission="read-only" if i % 2 else "read-write")
        await people[0].revoke()
        removed = await people[2].social.remove_friend(RemoveFriend(
            command_id=cid(), session=people[2].session, account=people[3].account,
            seq=people[2].seq))
        await people[1].sharing.shares(ShareListRequest(session=people[1].session,
                                                        seq=removed.seq))
        # The unfriend policy's revokes land a little later: the copy must come to equal
        # the tables once the log is still.
        fresh = AccessIndex()
        for _ in range(100):
            async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
                await fresh.reload(conn, "sharing")
            if (live.grants, live.friends) == (fresh.grants, fresh.friends):
                break
            await asyncio.sleep(0.1)
        assert (live.grants, live.friends) == (fresh.grants, fresh.friends)
        assert (live.accounts, live.versions) == (fresh.accounts, fresh.versions)
        assert live.lookup(people[2].member_id, people[1].member_id, SET) is not None
        assert live.lookup(people[3].member_id, people[2].member_id, SET) is None

