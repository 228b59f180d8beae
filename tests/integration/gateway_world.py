"""The world the gateway matrix (test_gateway_matrix.py) runs in: the real services on real
servers, the desktop API in front of them in-process, one owner's account set with members
in every relation to it, and `Case`, one answer the API must give.

Everything a case stands on is made over NATS with the services' own clients (fast, and
not what is tested); only the call under test goes through HTTP.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg
import httpx
import msgspec
import nats
from nats.aio.client import Client as NATS

from contracts.identity import (
    Bind,
    ChangeDrivePassword,
    ChangePassword,
    DeleteMember,
    Login,
    Logout,
    SetDrivePassword,
    Unbind,
    VerifyDrivePassword,
    WrongDrivePassword,
)
from contracts.operations import Operation
from contracts.storage import BeginUpload, UploadPlan
from contracts.transfer import sha256_file, upload
from gateway.api import PREFIX, exposed
from gateway.app import create_app
from runtime.app import create_pool
from runtime.eventstore import EventStore
from runtime.settings import Settings
from runtime.tokens import Signer, new_private_key
from services.registry import SERVICES
from tests.helpers import PASSWORD, cid, proof_of
from tests.integration.test_sharing import SET, Person
from tests.services import running

if TYPE_CHECKING:
    from tests.integration.gateway_agency import AgencyWorld
    from tests.integration.gateway_sync import SyncWorld

OK = "ok"  # the code of a case that must succeed
# What the gateway serves, as the gateway itself derives it: "<context>/<operation>".
EXPOSED: dict[str, Operation[Any, Any]] = {
    e.path.removeprefix(f"{PREFIX}/"): e.operation
    for e in exposed(NATS(), [s.client for s in SERVICES], audience="desktop",
                     timeout=1).values()}
Act = Callable[["World"], Awaitable[httpx.Response]]


@dataclass(frozen=True)
class Case:
    """``act`` calls ``op`` over HTTP (after whatever setup it needs) and must be answered
    ``status`` with ``code`` (`OK`: the operation's declared reply)."""

    op: str
    status: int
    code: str
    act: Act
    label: str = ""

    @property
    def name(self) -> str:
        return " ".join(filter(None, (self.op, self.code, self.label)))


async def check(case: Case, world: World) -> None:
    """Run the case; fail with the answer if it is not the one required."""
    answer = await case.act(world)
    assert answer.request.url.path == f"{PREFIX}/{case.op}", "the case called another path"
    if case.code == OK:
        assert answer.status_code == 200, answer.text
        EXPOSED[case.op].reply_decoder.decode(answer.content)
        return
    body = answer.json()
    assert (answer.status_code, body["code"]) == (case.status, case.code), answer.text
    assert body["message"] and body["correlation_id"], answer.text


def account() -> str:
    """A fresh account name."""
    return f"m{uuid.uuid4().hex[:12]}"


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


class World:
    """The API, and the members every case may stand on (filled in by `populate`)."""

    owner: Person  # SET 2018 uploaded (`version_id`, bytes `original`), drive unlocked
    friend: Person  # a friend SET is shared with, read-write (drive password changed once)
    reader: Person  # a friend SET is shared with, read-only
    former: Person  # a friend SET was shared with, then revoked
    stranger: Person  # not a friend of the owner; drive unlocked
    plain: Person  # no cloud-drive password set
    locked: Person  # cloud drive locked by wrong passwords
    bound: Person  # bound to WeChat user `openid`
    version_id: str
    original: bytes
    openid: str
    superseded: str  # a session of a member who has changed their password since
    logged_out: str  # a session of the owner's that was logged out
    unbound: str  # a session through WeChat of a member who has unbound WeChat since
    erased: str  # a session of a member who deleted their account since
    stale_drive: str  # the friend's drive token from before a cloud-drive password change
    owner_upload: str  # an open upload the owner began in their own drive
    friend_upload: str  # an open upload the friend began in the owner's drive
    repeated: dict[str, dict[str, Any]]  # requests a case sends again, by name
    sync: SyncWorld  # a member syncing on three machines (tests/integration/gateway_sync.py)
    agency: AgencyWorld  # an agency the owner runs (tests/integration/gateway_agency.py)

    def __init__(self, api: httpx.AsyncClient, nc: NATS, settings: Settings,
                 files: Path) -> None:
        self.api, self.nc, self.settings, self.files = api, nc, settings, files
        self.events = EventStore(nc)

    async def post(self, op: str, body: dict[str, Any] | None = None, *,
                   by: Person | None = None, session: str = "") -> httpx.Response:
        """``op`` over HTTP, ``by``'s session (or ``session``) as a bearer token; a request
        that takes a consistency seq gets the log's end unless the body gives one (read
        your writes)."""
        fields = dict(body or {})
        if "seq" in EXPOSED[op].request.__struct_fields__:
            fields.setdefault("seq", await self.events.last_sequence())
        token = by.session if by else session
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return await self.api.post(f"{PREFIX}/{op}", json=fields, headers=headers)

    async def join(self, nickname: str = "N", *, drive: bool = False) -> Person:
        """A new member, logged in; ``drive``: with the cloud-drive password set and a
        drive token."""
        person = await Person(self.nc, account(), nickname).join()
        if drive:
            await person.unlock_drive()
        return person

    def file(self, data: bytes | None = None) -> Path:
        """A file holding ``data`` (random bytes by default)."""
        path = self.files / f"{uuid.uuid4().hex}.bak"
        path.write_bytes(os.urandom(1000) if data is None else data)
        return path

    async def begin(self, by: Person, *, owner: Person | None = None,
                    year: int = 2019) -> UploadPlan:
        """An upload begun over NATS (nothing PUT yet)."""
        path = self.file()
        return await by.storage.begin_upload(BeginUpload(
            command_id=cid(), session=by.session, owner_id=owner.member_id if owner else None,
            set_id=SET, set_name="123", year=year, period=1, size=path.stat().st_size,
            sha256=sha256_file(path), drive_token=by.drive, seq=by.seq))

    async def upload_over_http(self, by: Person, path: Path, **fields: Any) -> httpx.Response:
        """Begin over HTTP, PUT the bytes to the presigned URLs, complete over HTTP: the
        completion's answer."""
        begun = await self.post("storage/begin_upload", upload_body(path, **fields), by=by)
        assert begun.status_code == 200, begun.text
        plan = msgspec.json.decode(begun.content, type=UploadPlan)
        await upload(plan, path)
        owner = {k: v for k, v in fields.items() if k in ("owner_id", "drive_token")}
        return await self.post("storage/complete_upload", {
            "command_id": cid(), "upload_id": plan.upload_id, **owner}, by=by)

    def token(self, kind: str, member: Person, *, expired: bool = False,
              forged: bool = False, via: str = "", dv: int = 0) -> str:
        """A ``kind`` token naming ``member`` as identity issues them: signed with the
        services' key (or another one), valid now (or expired an hour ago); ``dv``: the
        member's cloud-drive password version (how often they changed it)."""
        key = new_private_key() if forged else self.settings.token_private_key
        now = datetime.now(UTC) - (timedelta(hours=2) if expired else timedelta())
        token, _ = Signer(key).issue(member_id=member.member_id, kind=kind, now=now,
                                     ttl=timedelta(hours=1), pv=0, sid=uuid.uuid4().hex,
                                     via=via, dv=dv)
        return token


def upload_body(path: Path, **fields: Any) -> dict[str, Any]:
    """A begin_upload request for the file at ``path`` (SET 2018 unless told)."""
    return {"command_id": cid(), "set_id": SET, "set_name": "123", "year": 2018, "period": 2,
            "size": path.stat().st_size, "sha256": sha256_file(path), **fields}


async def populate(w: World) -> World:
    """The owner's shared set and every member in a relation to it."""
    w.owner = await w.join("Owner", drive=True)
    w.original = os.urandom(1000)
    w.version_id = await w.owner.upload(w.file(w.original))
    w.friend, w.reader, w.former, w.stranger = await asyncio.gather(*(
        w.join(name, drive=True) for name in ("Friend", "Reader", "Former", "Stranger")))
    for person in (w.friend, w.reader, w.former):
        await w.owner.befriend(person)
    await w.owner.grant(w.friend)
    await w.owner.grant(w.reader, permission="read-only")
    await w.owner.grant(w.former)
    await w.owner.revoke(w.former)
    w.friend.seq = w.reader.seq = w.former.seq = w.owner.seq
    w.stale_drive = await new_drive_password(w.friend)
    w.plain = await w.join("Plain")
    w.locked = await locked(w)
    w.bound, w.openid = await bound(w)
    w.superseded = await superseded(w)
    w.logged_out = await logged_out(w.owner)
    w.unbound = await unbound(w)
    w.erased = await erased(w)
    w.owner_upload = (await w.begin(w.owner)).upload_id
    w.friend_upload = (await w.begin(w.friend, owner=w.owner)).upload_id
    from tests.integration.gateway_agency import agency_world  # they build on this module
    from tests.integration.gateway_sync import sync_world

    w.sync = await sync_world(w)
    w.agency = await agency_world(w)
    return w


async def locked(w: World) -> Person:
    """A member whose drive is locked: three wrong cloud-drive passwords."""
    person = await w.join("Locked")
    await person.identity.drive_password_set(SetDrivePassword(
        command_id=cid(), session=person.session, password="drive-pw", question="pet?",
        answer="Rex"))
    for _ in range(3):
        try:
            await person.identity.drive_password_verify(VerifyDrivePassword(
                command_id=cid(), session=person.session, password="wrong-pw"))
        except WrongDrivePassword:
            continue
        raise AssertionError("a wrong drive password was taken")
    return person


async def bound(w: World) -> tuple[Person, str]:
    """A member bound to a WeChat user, and that user's openid."""
    person, openid = await w.join("Bound"), f"wx-{uuid.uuid4().hex}"
    await person.identity.bind(Bind(
        command_id=cid(), openid_proof=proof_of(openid, w.settings), account=person.account,
        password=PASSWORD, nickname=person.nickname))
    return person, openid


async def new_drive_password(person: Person) -> str:
    """Change the cloud-drive password and verify the new one; the drive token before."""
    before = person.drive
    await person.identity.drive_password_change(ChangeDrivePassword(
        command_id=cid(), session=person.session, old_password="drive-pw",
        new_password="drive-pw2"))
    person.drive = (await person.identity.drive_password_verify(VerifyDrivePassword(
        command_id=cid(), session=person.session, password="drive-pw2"))).drive_token
    return before


async def logged_out(person: Person) -> str:
    """Another session of ``person``'s, logged out."""
    session = (await person.identity.login(Login(account=person.account,
                                                 password=PASSWORD))).session
    await person.identity.logout(Logout(command_id=cid(), session=session))
    return session


async def unbound(w: World) -> str:
    """A session a member got through WeChat, who has unbound WeChat since."""
    person = await w.join("Unbound")
    await person.identity.bind(Bind(
        command_id=cid(), openid_proof=proof_of(f"wx-{uuid.uuid4().hex}", w.settings),
        account=person.account, password=PASSWORD, nickname=person.nickname))
    through_wechat = w.token("session", person, via="wechat")
    await person.identity.unbind(Unbind(command_id=cid(), session=person.session))
    return through_wechat


async def erased(w: World) -> str:
    """A session of a member who deleted their account since."""
    person = await w.join("Erased")
    await person.identity.delete_member(DeleteMember(command_id=cid(), session=person.session,
                                                     password=PASSWORD))
    return person.session


async def superseded(w: World) -> str:
    """A session taken before its member changed their password."""
    person = await w.join("Changed")
    await person.identity.change_password(ChangePassword(
        command_id=cid(), session=person.session, old_password=PASSWORD,
        new_password="secret-2"))
    return person.session


@asynccontextmanager
async def desktop_api(nc: NATS, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The gateway's app on ``nc``, called in-process."""
    # The matrix calls the throttled operations (logins, passwords) far more often than a
    # member would; the limits have tests of their own (test_gateway_limits.py).
    limits = settings.with_overrides(gateway_limit_per_client=100_000,
                                     gateway_limit_per_account=100_000)
    app = create_app(nc, limits, [s.client for s in SERVICES])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://gateway.test", timeout=30) as client:
        yield client


@asynccontextmanager
async def own_database(pg_dsn: str) -> AsyncIterator[str]:
    """A database of its own on the server of ``pg_dsn``; its DSN."""
    base = pg_dsn.rpartition("/")[0]
    name = f"t_{uuid.uuid4().hex[:12]}"
    await _admin(base, f'CREATE DATABASE "{name}"')
    try:
        yield f"{base}/{name}"
    finally:
        await _admin(base, f'DROP DATABASE "{name}" WITH (FORCE)')


async def _admin(base: str, sql: str) -> None:
    conn = await asyncpg.connect(f"{base}/postgres")
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@asynccontextmanager
async def serving(settings: Settings, configured: Settings,
                  files: Path) -> AsyncIterator[World]:
    """Every service with ``configured``, on the servers of ``settings``, and the API."""
    async with AsyncExitStack() as stack:
        nc = await nats.connect(settings.nats_url)
        stack.push_async_callback(nc.close)
        events = EventStore(nc)
        await events.ensure_stream()
        pool = await create_pool(settings.pg_dsn, size=24)
        stack.push_async_callback(pool.close)
        for service in SERVICES:
            await stack.enter_async_context(running(service.build, configured, nc, pool,
                                                    events))
        api = await stack.enter_async_context(desktop_api(nc, configured))
        yield World(api, nc, configured, files)
