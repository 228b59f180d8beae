"""Erasure in an append-only log, tried the way a member and an attacker would.

A member with a WeChat binding, a friend, backups in their own drive, a version they
uploaded into the friend's drive and shares both ways deletes their account. Then:
nothing personal of theirs is readable anywhere (every stream on the server, every read
model table, S3), their sealed fields open to "" with the key destroyed, every read
model rebuilt from the log equals the live one, their names are free for someone else,
and their old session and password open nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
import msgspec
import pytest
from nats.aio.client import Client as NATS

from contracts.identity import (
    Bind,
    DeleteMember,
    InvalidCredentials,
    InvalidToken,
    Login,
    LoginWechat,
    Me,
    erasures,
)
from contracts.sharing import CloudSharesRequest, ShareListRequest
from contracts.social import ListFriends
from contracts.storage import (
    AnyStorageEvent,
    BeginUpload,
    CompleteUpload,
    DriveRequest,
    drive_subjects,
)
from contracts.transfer import sha256_file
from contracts.transfer import upload as put
from deploy.wechat import DEFAULT_APPID
from runtime.eventstore import EventStore
from runtime.personal import PREFIX, Keyring
from runtime.replay import compare, rebuild
from runtime.s3 import s3_client
from runtime.settings import Settings
from services.storage.domain import Drive, evolve
from tests.helpers import WeChat, cid, openid_proof
from tests.integration.test_sharing import Person, account_set
from tests.services import read_models

_storage = msgspec.json.Decoder(AnyStorageEvent)
ACCOUNT, NICKNAME = "erase.me@example", "要注销的张三"
SET_NAME, REMARK, REMARK_IN_FRIEND = "张三的账套", "张三写的备注", "张三在李四盘里的备注"


async def until(check: Callable[[], Awaitable[bool]], *, within: float = 20.0) -> None:
    """Wait for an eventually-true condition (a policy's effect), failing after ``within``."""
    for _ in range(int(within / 0.1)):
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the erasure's effect did not come")


async def every_message(nc: NATS) -> list[bytes]:
    """Subject, headers and payload of every message in every stream on the server."""
    js = nc.jetstream()
    found: list[bytes] = []
    for info in await js.streams_info():
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            try:
                msg = await js.get_msg(info.config.name or "", seq=seq)
            except Exception:
                continue  # deleted (purged, erased) messages leave gaps
            headers = "".join(f"{k}:{v}" for k, v in (msg.headers or {}).items())
            found.append(f"{msg.subject}{headers}".encode() + (msg.data or b""))
    return found


async def every_row(pool: asyncpg.Pool) -> list[str]:
    """Every row of every table in every schema but PostgreSQL's own, as text."""
    tables = await pool.fetch(
        "SELECT table_schema, table_name FROM information_schema.tables WHERE table_schema "
        "NOT IN ('pg_catalog', 'information_schema') AND table_type = 'BASE TABLE'")
    rows: list[str] = []
    for t in tables:
        found = await pool.fetch(f'SELECT t::text AS r FROM "{t[0]}"."{t[1]}" t')
        rows.extend(r["r"] for r in found)
    return rows


@pytest.fixture
async def world(all_services: Settings, nc: NATS, tmp_path: Path,
                wechat: WeChat) -> tuple[Person, Person, str]:
    """张三 (bound to WeChat user "zhangsan") and 李四, friends, sharing both ways, each
    with a backup, 张三 with a version in 李四's drive."""
    a = await Person(nc, ACCOUNT, NICKNAME).join()
    b = await Person(nc, "lisi@example", "李四").join()
    proof = await openid_proof(a.identity, wechat, "zhangsan")
    await a.identity.bind(Bind(command_id=cid(), openid_proof=proof, account=ACCOUNT,
                               nickname=NICKNAME, password="secret-1"))
    await a.befriend(b)
    await a.unlock_drive()
    await b.unlock_drive()
    await upload(a, account_set(tmp_path, "a.bak"), SET_NAME, REMARK)
    await upload(b, account_set(tmp_path, "b.bak"), "李四的账套", "李四的备注", set_id="b-set")
    await a.grant(b, set_id="a-set")
    b.seq = a.seq
    await b.grant(a, set_id="b-set")
    a.seq = b.seq
    await upload(a, account_set(tmp_path, "a-in-b.bak"), "李四的账套", REMARK_IN_FRIEND,
                 set_id="b-set", owner=b)
    openid = wechat.standin.openid(DEFAULT_APPID, "zhangsan")
    return a, b, openid


async def upload(p: Person, path: Path, set_name: str, remark: str, *, set_id: str = "a-set",
                 owner: Person | None = None) -> str:
    """An upload with this set name and remark (Person's own uses fixed ones)."""
    size, digest = await asyncio.to_thread(lambda: (path.stat().st_size, sha256_file(path)))
    plan = await p.storage.begin_upload(BeginUpload(
        command_id=cid(), session=p.session, owner_id=owner.member_id if owner else None,
        set_id=set_id, set_name=set_name, year=2024, period=1, size=size,
        sha256=digest, remark=remark, drive_token=p.drive, seq=p.seq))
    await put(plan, path)
    done = await p.storage.complete_upload(CompleteUpload(
        command_id=cid(), session=p.session, owner_id=owner.member_id if owner else None,
        upload_id=plan.upload_id, drive_token=p.drive, seq=p.seq))
    p.seq = done.seq
    return done.version.version_id


async def test_a_wrong_password_erases_nothing(world: tuple[Person, Person, str]) -> None:
    a, _, _ = world
    with pytest.raises(InvalidCredentials):
        await a.identity.delete_member(DeleteMember(command_id=cid(), session=a.session,
                                                    password="not-my-password"))
    assert (await a.identity.me(Me(session=a.session))).account == ACCOUNT


async def test_erasure_leaves_nothing_personal_readable_and_rebuilds_equal_live(
        world: tuple[Person, Person, str], nc: NATS, events: EventStore, pool: asyncpg.Pool,
        all_services: Settings, wechat: WeChat, tmp_path: Path) -> None:
    a, b, openid = world
    personal = (ACCOUNT, NICKNAME, openid, SET_NAME, REMARK, REMARK_IN_FRIEND)
    a_keys = await object_keys(all_services, prefix="")
    done = await a.identity.delete_member(DeleteMember(command_id=cid(), session=a.session,
                                                       password="secret-1"))
    assert done.seq > 0
    await until(lambda: everything_ended(a, b, events))

    # Nothing personal in the log (any stream), the read models or S3.
    for data in await every_message(nc):
        for text in personal:
            assert text.encode() not in data, (text, data[:300])
    rows = await every_row(pool)
    for text in personal:
        assert not [r for r in rows if text in r], text
    assert await pool.fetchval("SELECT count(*) FROM identity.credentials "
                               "WHERE member_id = $1", a.member_id) == 0
    left = await object_keys(all_services, prefix="")
    assert len(left) == len(a_keys) - 1  # 张三's own backup gone; the one in 李四's stays

    # The sealed fields: 张三's open to "" with a fresh keyring; 李四's still open.
    opened = await open_all(nc, events)
    assert any("李四" in text for text in opened)
    for text in personal:
        assert not [t for t in opened if text in t], text

    # Every read model rebuilt from the log equals the live one.
    for model in read_models():
        fresh = f"{model.schema}_erased_rebuild"
        await rebuild(nc, pool, model.projection(), fresh)
        assert await compare(pool, model.schema, fresh, model.tables) == [], model.schema


async def test_after_erasure_the_names_are_free_and_the_old_credentials_open_nothing(
        world: tuple[Person, Person, str], nc: NATS, events: EventStore,
        wechat: WeChat) -> None:
    a, b, _ = world
    old = a.session
    first = DeleteMember(command_id=cid(), session=a.session, password="secret-1")
    done = await a.identity.delete_member(first)
    assert (await a.identity.delete_member(first)).seq == done.seq  # a retry: the same
    with pytest.raises(InvalidToken):
        await a.identity.me(Me(session=old))
    with pytest.raises(InvalidToken):
        await a.social.list_friends(ListFriends(session=old, seq=done.seq))
    with pytest.raises(InvalidToken):
        await a.storage.drive(DriveRequest(session=old))
    with pytest.raises(InvalidToken):
        await a.sharing.shares(ShareListRequest(session=old, seq=done.seq))
    with pytest.raises(InvalidCredentials):
        await a.identity.login(Login(account=ACCOUNT, password="secret-1"))
    # A new command with the old session: refused, not a second erasure.
    with pytest.raises(InvalidToken):
        await a.identity.delete_member(DeleteMember(command_id=cid(), session=old,
                                                    password="secret-1"))
    assert len(await events.load(erasures(a.member_id))) == 1

    # Someone else takes the account name and the WeChat user binds to them.
    c = await Person(nc, ACCOUNT, "新的张三").join()
    assert c.member_id != a.member_id
    login = await c.identity.login_wechat(LoginWechat(code=wechat.code("zhangsan")))
    assert not login.bound
    await c.identity.bind(Bind(command_id=cid(), openid_proof=login.openid_proof,
                               account=ACCOUNT, nickname="新的张三", password="secret-1"))
    again = await c.identity.login_wechat(LoginWechat(code=wechat.code("zhangsan")))
    assert again.member_id == c.member_id
    # ...and is nobody's friend: the erased member's friendships are not theirs.
    friends = await b.social.list_friends(ListFriends(session=b.session, seq=c.seq))
    assert friends.friends == []


async def everything_ended(a: Person, b: Person, events: EventStore) -> bool:
    """Whether 李四 sees no friend, no share from, and no grant to, 张三, and 张三's drive
    has no version left."""
    friends = await b.social.list_friends(ListFriends(session=b.session, seq=b.seq))
    shared = await b.sharing.cloud_shares(CloudSharesRequest(
        session=b.session, drive_token=b.drive, seq=b.seq))
    mine = await b.sharing.shares(ShareListRequest(session=b.session, seq=b.seq))
    drive, _ = await events.state(drive_subjects(a.member_id), _storage, evolve, Drive())
    drive_empty = not drive.versions and not drive.reservations
    return (not friends.friends and not shared.sharers and not any(s.friends for s in mine.sets)
            and drive_empty)


async def object_keys(settings: Settings, *, prefix: str) -> list[str]:
    """Every object key in the bucket."""
    async with s3_client(settings, timeout_s=10) as s3:
        listed = await s3.list_objects_v2(Bucket=settings.s3_bucket, Prefix=prefix)
        return [o["Key"] for o in listed.get("Contents", [])]


async def open_all(nc: NATS, events: EventStore) -> list[str]:
    """Every sealed field in the log, opened by a keyring that has cached nothing."""
    ring = Keyring(nc)
    js = nc.jetstream()
    last = (await js.stream_info(events.stream)).state.last_seq
    opened: list[str] = []
    for seq in range(1, last + 1):
        msg = await js.get_msg(events.stream, seq=seq, direct=True)
        doc = msgspec.json.decode(msg.data or b"{}")
        for field, value in doc.items():
            if isinstance(value, str) and value.startswith(PREFIX):
                opened.append(await ring.open_text(field, value))
    return opened

