"""Support of the stateful model test (test_model.py): the running system the model is
compared with, the bridge that lets hypothesis' synchronous state machine drive the
asynchronous clients, and reading the log and the read models back.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Awaitable, Coroutine, Sequence
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any, TypeVar

import aiohttp
import asyncpg
from nats.aio.client import Client as NATS

from contracts.agency import agency_subjects
from contracts.base import Reply
from contracts.errors import LedgerError
from contracts.identity import (
    IdentityClient,
    Login,
    Register,
    SetDrivePassword,
    VerifyDrivePassword,
    member_subjects,
)
from contracts.sharing import SharingClient, share_id, share_subjects
from contracts.social import SocialClient, friendship_subjects, pair_id
from contracts.storage import SetQuota, StorageClient, UploadPlan, audit_subjects, drive_subjects
from contracts.subjects import context_subjects
from runtime.app import Wiring
from runtime.eventstore import EventStore, StoredEvent
from runtime.projector import Projector
from runtime.replay import compare, rebuild
from tests.helpers import cid
from tests.integration.sharing_model import QUOTA, SETS, Triple
from tests.services import read_models

T = TypeVar("T")
CALL_S = 60.0


# ---- the bridge -------------------------------------------------------------------------

class Bridge:
    """Runs coroutines on the test's event loop from hypothesis' worker thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    def run(self, coro: Coroutine[Any, Any, T], within: float = 120.0) -> T:
        """Block this thread until ``coro`` has run on the loop; its result or error."""
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(within)
        except FutureTimeout:
            future.cancel()
            raise AssertionError(f"a step took longer than {within:g}s") from None


# ---- the running system -------------------------------------------------------------------

@dataclass(frozen=True)
class System:
    """The four services on the test's servers, with the clients a gateway would hold."""

    nc: NATS
    pool: asyncpg.Pool
    events: EventStore
    wirings: list[Wiring]
    replicas: Replicas
    http: aiohttp.ClientSession
    identity: IdentityClient = field(init=False)
    social: SocialClient = field(init=False)
    storage: StorageClient = field(init=False)
    sharing: SharingClient = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "identity", IdentityClient(self.nc, timeout=CALL_S))
        object.__setattr__(self, "social", SocialClient(self.nc, timeout=CALL_S))
        object.__setattr__(self, "storage", StorageClient(self.nc, timeout=CALL_S))
        object.__setattr__(self, "sharing", SharingClient(self.nc, timeout=CALL_S))

    async def caught_up(self) -> int:
        """The log's end once it stood still, with every projector there."""
        return await self.projected(await quiet(self.events))

    async def projected(self, last: int) -> int:
        """Once every projector, live or replica, has reached sequence ``last``."""
        live = [p for wiring in self.wirings for p in wiring.projectors]
        await asyncio.gather(*(p.wait_until(last, within=30)
                               for p in [*live, *self.replicas.projectors]))
        return last


@dataclass(frozen=True)
class Member:
    """One member at the desktop program: account, ids and the tokens a session holds."""

    account: str
    nickname: str
    member_id: str
    session: str
    drive: str


async def join(system: System, account: str, nickname: str) -> Member:
    """Register, log in, set and enter the cloud-drive password, get a small quota."""
    reg = await system.identity.register(Register(
        command_id=cid(), account=account, password="secret-1", nickname=nickname))
    session = (await system.identity.login(Login(account=account, password="secret-1"))).session
    await system.identity.drive_password_set(SetDrivePassword(
        command_id=cid(), session=session, password="drive-pw", question="pet?",
        answer="Rex"))
    drive = (await system.identity.drive_password_verify(VerifyDrivePassword(
        command_id=cid(), session=session, password="drive-pw"))).drive_token
    await system.storage.set_quota(SetQuota(command_id=cid(), owner_id=reg.member_id,
                                            quota=QUOTA))
    return Member(account=account, nickname=nickname, member_id=reg.member_id,
                  session=session, drive=drive)


async def attempt(call: Awaitable[T]) -> T | LedgerError:
    """The reply, or the typed error the system answered with."""
    try:
        return await call
    except LedgerError as err:
        return err


async def put_parts(http: aiohttp.ClientSession, plan: UploadPlan, data: bytes) -> list[int]:
    """PUT each part of a plan from ``data``; the HTTP statuses (a refused PUT is data)."""
    statuses = []
    for part in plan.parts:
        chunk = data[part.offset:part.offset + part.size]
        async with http.put(part.url, data=chunk, headers=part.headers) as reply:
            await reply.read()
            statuses.append(reply.status)
    return statuses


async def fetch(http: aiohttp.ClientSession, url: str) -> bytes:
    """GET a presigned URL."""
    async with http.get(url) as reply:
        body = await reply.read()
        assert reply.status == 200, f"download URL answered {reply.status}: {body[:200]!r}"
        return body


# ---- the log --------------------------------------------------------------------------------

def subject_filters(members: list[Member], agencies: Sequence[str] = ()) -> list[str]:
    """Every aggregate this example's members can have touched (and its agencies)."""
    ids = [m.member_id for m in members]
    found = [member_subjects(i) for i in ids] + [CLAIMS]
    found += [friendship_subjects(pair_id(a, b)) for a, b in combinations(ids, 2)]
    found += [share_subjects(share_id(o, s)) for o in ids for s in SETS]
    found += [agency_subjects(a) for a in agencies]
    return found + [drive_subjects(o) for o in ids] + [audit_subjects(o) for o in ids]


# Account claims are under a keyed hash of the name: the test reads them all and keeps
# those of this example's members (`logged`).
CLAIMS = context_subjects("identity", "account")


def kind(event: StoredEvent) -> str:
    """An event's type; a revocation also says why (the owner, or an unfriending)."""
    if event.type != "ShareRevoked":
        return event.type
    return f"ShareRevoked/{json.loads(event.data).get('reason', 'owner')}"


async def logged(events: EventStore, members: list[Member],
                 agencies: Sequence[str] = ()) -> Counter[str]:
    """How many events of each kind the log holds for these members and agencies."""
    filters = subject_filters(members, agencies)
    loaded = await asyncio.gather(*(events.load(s) for s in filters))
    ids = {m.member_id.encode() for m in members}
    return Counter(kind(e) for where, found in zip(filters, loaded, strict=True) for e in found
                   if where != CLAIMS or any(i in e.data for i in ids))


async def quiet(events: EventStore, *, still_s: float = 0.1, within: float = 20.0) -> int:
    """The log's last sequence once nothing was appended for ``still_s`` (the unfriend
    policy appends on its own, after the command that caused it answered)."""
    last, since = await events.last_sequence(), time.monotonic()
    deadline = since + within
    while time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        now = await events.last_sequence()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= still_s:
            return last
    raise AssertionError(f"the log kept growing for {within:g}s")


async def unfriend_revokes(events: EventStore, members: list[Member], triples: list[Triple],
                           after: int) -> dict[Triple, int]:
    """Per grant, the ShareRevoked(unfriended) events appended after sequence ``after``."""
    found: dict[Triple, int] = {}
    for owner, set_id, friend in triples:
        subject_filter = share_subjects(share_id(members[owner].member_id, set_id))
        found[(owner, set_id, friend)] = sum(
            1 for e in await events.load(subject_filter, after=after)
            if kind(e) == "ShareRevoked/unfriended"
            and json.loads(e.data)["friend_id"] == members[friend].member_id)
    return found


# ---- replay -----------------------------------------------------------------------------------

REPLAYED = read_models()


class Replicas:
    """Each service's projection run a second time from sequence 1 into its own schema,
    on a connection and pool of its own, beside the live one: after every example it
    must hold the same rows. A rebuild per example would replay the whole log, which
    grows with every example hypothesis runs (hundreds while it shrinks)."""

    def __init__(self, nc: NATS, pool: asyncpg.Pool) -> None:
        self.nc, self.pool = nc, pool
        self.projectors = [Projector(nc, pool, m.projection(), schema=f"{m.schema}_replica")
                           for m in REPLAYED]

    async def start(self) -> None:
        for projector in self.projectors:
            await projector.start()

    async def stop(self) -> None:
        for projector in self.projectors:
            await projector.stop()

    async def differences(self) -> list[str]:
        """The tables where a live read model and its replica differ."""
        found = []
        for m in REPLAYED:
            found += [f"{m.schema}: {p}" for p in await compare(
                self.pool, m.schema, f"{m.schema}_replica", m.tables)]
        return found


async def replica_differences(system: System) -> list[str]:
    """Once the log stands still and every projection reached its end: live vs replica."""
    await system.caught_up()
    return await system.replicas.differences()


async def replay_differences(system: System) -> list[str]:
    """Each read model rebuilt from sequence 1 as an operator's replay does (large
    batches), compared with the live one. The replicas must be stopped: a rebuild
    holds two of their pool's connections."""
    await system.caught_up()
    found = []
    for m in REPLAYED:
        fresh = f"{m.schema}_model_replay"
        await rebuild(system.replicas.nc, system.replicas.pool, m.projection(), fresh,
                      within=120)
        found += [f"{m.schema}: {p}" for p in await compare(system.pool, m.schema, fresh,
                                                              m.tables)]
    return found


def outcome(result: Reply | LedgerError) -> str:
    """A short description of a reply or refusal, for assertion messages."""
    if isinstance(result, LedgerError):
        return f"refused {result.code}: {result.message}"
    return f"accepted: {result!r}"[:400]


