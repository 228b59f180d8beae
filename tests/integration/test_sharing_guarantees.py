"""sharing's guarantees, tried as an attacker would: an unfriending ends every share for
good, no caller-chosen token makes an authorization answer stale, and Cloud Share needs
the cloud-drive password."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import asyncpg
import msgspec
import pytest
from nats.aio.client import Client as NATS
from nats.errors import TimeoutError as NatsTimeout

from contracts.errors import BadRequest, CommandReused, Unavailable
from contracts.identity import InvalidToken
from contracts.sharing import (
    AnySharingEvent,
    Check,
    CloudShares,
    CloudSharesRequest,
    Grant,
    Revoke,
    ShareList,
    ShareListRequest,
    ShareRevoked,
    SharingClient,
    Verdict,
    share_id,
    share_subjects,
)
from contracts.social import RemoveFriend
from contracts.storage import NoAccess
from runtime.eventstore import ConcurrencyConflict, EventStore
from runtime.projector import ProjectionLag
from runtime.settings import Settings
from services.sharing.handlers import Sharing
from tests.helpers import cid
from tests.integration.test_sharing import Person, account_set
from tests.services import wired_all

SETS = ("s1", "s2", "s3")
_sharing_event = msgspec.json.Decoder(AnySharingEvent)


class System:
    """The four services on the test's servers, and sharing's operations object."""

    def __init__(self, nc: NATS, pool: asyncpg.Pool, sharing: Sharing) -> None:
        self.nc, self.pool, self.sharing = nc, pool, sharing

    @asynccontextmanager
    async def held(self) -> AsyncIterator[None]:
        """The access read model stands still: the projector's next batch waits for its
        checkpoint row, which this holds locked (it still leads, index and all)."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT 1 FROM sharing.checkpoints WHERE projection = "
                               "'access' FOR UPDATE")
            yield


@pytest.fixture
async def system(settings: Settings, nc: NATS, pool: asyncpg.Pool,
                 events: EventStore) -> AsyncIterator[System]:
    async with wired_all(settings, nc, pool, events) as (_, wirings):
        wiring = wirings["sharing"]
        yield System(nc, pool, cast(Sharing, wiring.app))


async def friends_sharing_everything(nc: NATS, tmp_path: Path) -> tuple[Person, Person]:
    """A and B, friends, each sharing three sets with the other; drives unlocked."""
    a = await Person(nc, "alice", "Alice").join()
    b = await Person(nc, "bob", "Bob").join()
    await a.befriend(b)
    for owner, sharee in ((a, b), (b, a)):
        for s in SETS:
            await owner.upload(account_set(tmp_path, f"{owner.account}-{s}.bak", 500),
                               set_id=s)
            await owner.grant(sharee, set_id=s)
    await a.unlock_drive()
    await b.unlock_drive()
    return a, b


async def unfriend(who: Person, other: Person) -> None:
    removed = await who.social.remove_friend(RemoveFriend(
        command_id=cid(), session=who.session, account=other.account, seq=who.seq))
    who.seq = other.seq = removed.seq


def check(member: Person, owner: Person, set_id: str, seq: int = 0) -> Check:
    return Check(member_id=member.member_id, owner_id=owner.member_id, set_id=set_id,
                 year=2018, access="read", seq=seq)


async def unfriended_revokes(events: EventStore, a: Person, b: Person) -> list[ShareRevoked]:
    """The ShareRevoked(reason=unfriended) events of every set either shares."""
    found = []
    for owner, friend in ((a, b), (b, a)):
        for s in SETS:
            for stored in await events.load(share_subjects(share_id(owner.member_id, s))):
                event = _sharing_event.decode(stored.data)
                if isinstance(event, ShareRevoked) and event.friend_id == friend.member_id:
                    found.append(event)
    return [e for e in found if e.reason == "unfriended"]


async def eventually_revoked(events: EventStore, a: Person, b: Person,
                             within: float = 15) -> list[ShareRevoked]:
    """Every share's audit revoke, once the unfriend policy has written them all."""
    deadline = asyncio.get_running_loop().time() + within
    while len(found := await unfriended_revokes(events, a, b)) < 2 * len(SETS):
        if asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.05)
    return found


async def parked(pool: asyncpg.Pool) -> list[str]:
    rows = await pool.fetch("SELECT projection, reason FROM sharing.dead_letters")
    return [f"{r['projection']}: {r['reason']}" for r in rows]


# ---- an unfriending ends every share, for good -------------------------------------------

async def test_unfriending_ends_every_share_both_ways_and_re_adding_brings_none_back(
        system: System, events: EventStore, tmp_path: Path) -> None:
    a, b = await friends_sharing_everything(system.nc, tmp_path)
    await unfriend(a, b)
    await b.befriend(a)  # B alone adds A back: account and nickname, no consent from A
    for owner, sharee in ((a, b), (b, a)):
        for s in SETS:
            verdict = await sharee.sharing.check(check(sharee, owner, s))
            assert not verdict.allowed, (owner.account, s)
            with pytest.raises(NoAccess):
                await sharee.download(owner, 2018, tmp_path / "got.bak", set_id=s)
        listed = await sharee.sharing.cloud_shares(CloudSharesRequest(
            session=sharee.session, drive_token=sharee.drive))
        assert listed.sharers == []
        assert (await owner.sharing.shares(ShareListRequest(session=owner.session))).sets == []
    # The owner shares again: only then does the friend see the set.
    await a.grant(b, set_id="s2")
    assert (await b.sharing.check(check(b, a, "s2"))).allowed
    assert not (await b.sharing.check(check(b, a, "s1"))).allowed


async def test_every_share_gets_its_own_unfriended_revoke(
        system: System, events: EventStore, tmp_path: Path) -> None:
    a, b = await friends_sharing_everything(system.nc, tmp_path)
    await unfriend(b, a)
    found = await eventually_revoked(events, a, b)
    assert sorted((e.owner_id, e.set_id) for e in found) == sorted(
        (o.member_id, s) for o in (a, b) for s in SETS)
    assert await parked(system.pool) == []


async def test_an_unfriending_whose_lookup_and_revokes_fail_for_a_while_still_revokes_all(
        system: System, events: EventStore, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = await friends_sharing_everything(system.nc, tmp_path)
    # The read model lags once, then revokes meet a conflict, an unavailable part and
    # timeouts, more than the policy retries in place: the event must come back, not park.
    lagging = _failing(system.sharing.access.wait_until,
                       [ProjectionLag("sharing is at 1, not yet at 99")])
    monkeypatch.setattr(system.sharing.access, "wait_until", lagging)
    ids: list[str] = []
    real_revoke = system.sharing.revoke_for

    async def revoke(owner: str, set_id: str, friend: str | None, msg_id: str, *args: Any,
                     **kw: Any) -> int:
        ids.append(msg_id)
        return await real_revoke(owner, set_id, friend, msg_id, *args, **kw)

    failures: list[Exception] = [ConcurrencyConflict("scope", 1, "raced"),
                                 Unavailable("storage did not answer"),
                                 *[NatsTimeout() for _ in range(6)]]
    monkeypatch.setattr(system.sharing, "revoke_for", _failing(revoke, failures))
    await unfriend(a, b)
    found = await eventually_revoked(events, a, b, within=30)
    assert len(found) == 2 * len(SETS)
    assert await parked(system.pool) == []
    # Each revoke has an id of its own (a retry of one revoke repeats its id).
    assert len(set(ids)) == 2 * len(SETS)


def _failing(call: Callable[..., Awaitable[Any]],
             failures: list[Exception]) -> Callable[..., Awaitable[Any]]:
    """``call``, raising each of ``failures`` in turn on its first calls."""
    pending = list(failures)

    async def flaky(*args: Any, **kw: Any) -> Any:
        if pending:
            raise pending.pop(0)
        return await call(*args, **kw)

    return flaky


async def test_a_grant_appended_after_the_unfriending_never_takes_effect(
        system: System, tmp_path: Path) -> None:
    a = await Person(system.nc, "alice", "Alice").join()
    b = await Person(system.nc, "bob", "Bob").join()
    await a.befriend(b)
    await a.upload(account_set(tmp_path, "s1.bak", 500), set_id="s1")
    await a.sharing.shares(ShareListRequest(session=a.session, seq=a.seq))
    async with system.held():
        await unfriend(b, a)
        # A's grant races the unfriending: decided on the friendship the read model
        # still shows, appended after the FriendRemoved.
        await a.sharing.grant(Grant(command_id=cid(), session=a.session, set_id="s1",
                                    friends=[b.account], seq=1))
    await b.befriend(a)
    assert not (await b.sharing.check(check(b, a, "s1"))).allowed


# ---- no caller-chosen token makes an answer stale ----------------------------------------

async def shared(system: System, tmp_path: Path) -> tuple[Person, Person]:
    """B may read A's set s1 (drive unlocked), and a check has said so."""
    a = await Person(system.nc, "alice", "Alice").join()
    b = await Person(system.nc, "bob", "Bob").join()
    await a.befriend(b)
    await a.upload(account_set(tmp_path, "s1.bak", 500), set_id="s1")
    await a.grant(b, set_id="s1")
    await b.unlock_drive()
    assert (await b.sharing.check(check(b, a, "s1", a.seq))).allowed
    return a, b


def refused(answer: object) -> bool:
    """A check's answer that does not let the caller in: not allowed, or unavailable."""
    return isinstance(answer, Unavailable) or (
        isinstance(answer, Verdict) and not answer.allowed)


async def test_a_stale_token_after_a_revoke_never_gets_allowed(
        system: System, tmp_path: Path) -> None:
    a, b = await shared(system, tmp_path)
    async with system.held():
        await a.revoke(b, set_id="s1")
        asked = [asyncio.create_task(b.sharing.check(check(b, a, "s1", seq=t)))
                 for t in (1, 0, a.seq - 1)]
        listed = asyncio.create_task(b.sharing.cloud_shares(CloudSharesRequest(
            session=b.session, drive_token=b.drive, seq=1)))
        shares = asyncio.create_task(a.sharing.shares(ShareListRequest(session=a.session,
                                                                       seq=1)))
        await asyncio.sleep(0.5)
    for answer in await asyncio.gather(*asked, return_exceptions=True):
        assert refused(answer), answer
    mine, theirs = await asyncio.gather(listed, shares, return_exceptions=True)
    assert isinstance(mine, Unavailable) or cast(CloudShares, mine).sharers == [], mine
    assert isinstance(theirs, Unavailable) or cast(ShareList, theirs).sets == [], theirs
    assert not (await b.sharing.check(check(b, a, "s1", seq=1))).allowed


async def test_a_download_with_a_stale_token_after_a_revoke_is_refused(
        system: System, tmp_path: Path) -> None:
    a, b = await shared(system, tmp_path)
    async with system.held():
        await a.revoke(b, set_id="s1")
        b.seq = 1
        asked = asyncio.create_task(b.download(a, 2018, tmp_path / "got.bak", set_id="s1"))
        await asyncio.sleep(0.5)
    with pytest.raises((NoAccess, Unavailable)):
        await asked


async def test_a_token_past_the_log_neither_hangs_nor_vouches_for_later_answers(
        system: System, tmp_path: Path) -> None:
    a, b = await shared(system, tmp_path)
    far = 1 << 60
    assert (await asyncio.wait_for(b.sharing.check(check(b, a, "s1", seq=far)), 3)).allowed
    await asyncio.wait_for(a.sharing.shares(ShareListRequest(session=a.session, seq=far)),
                           3)
    async with system.held():
        await a.revoke(b, set_id="s1")
        asked = [asyncio.create_task(b.sharing.check(check(b, a, "s1", seq=t)))
                 for t in (far, 1)]
        await asyncio.sleep(0.5)
    for answer in await asyncio.gather(*asked, return_exceptions=True):
        assert refused(answer), answer


# ---- Cloud Share needs the cloud-drive password --------------------------------------------

async def test_cloud_shares_need_the_callers_own_drive_token(
        system: System, tmp_path: Path) -> None:
    a = await Person(system.nc, "alice", "Alice").join()
    b = await Person(system.nc, "bob", "Bob").join()
    await a.befriend(b)
    await a.upload(account_set(tmp_path, "s1.bak", 500), set_id="s1")
    await a.grant(b, set_id="s1")
    await a.unlock_drive()
    await b.unlock_drive()
    raw = SharingClient(system.nc, timeout=10)
    for drive in [None, "", "x.y", b.session, a.drive]:
        body = {"session": b.session, **({} if drive is None else {"drive_token": drive})}
        with pytest.raises((InvalidToken, BadRequest)):
            await raw.call_raw("cloud_shares", json.dumps(body).encode())
    listed = await b.sharing.cloud_shares(CloudSharesRequest(session=b.session,
                                                             drive_token=b.drive))
    assert [s.account for s in listed.sharers] == ["alice"]


# ---- input a caller cannot get wrong --------------------------------------------------------

async def test_a_naive_expiry_is_a_bad_request(system: System, events: EventStore,
                                               tmp_path: Path) -> None:
    a = await Person(system.nc, "alice", "Alice").join()
    b = await Person(system.nc, "bob", "Bob").join()
    await a.befriend(b)
    await a.upload(account_set(tmp_path, "s1.bak", 500), set_id="s1")
    before = await events.last_sequence()
    body = {"command_id": cid(), "session": a.session, "set_id": "s1",
            "friends": [b.account], "expires_at": datetime(2099, 1, 1).isoformat()}
    raw = SharingClient(system.nc, timeout=10)
    with pytest.raises(BadRequest) as err:
        await raw.call_raw("grant", json.dumps(body).encode())
    assert err.value.code == "bad_request"
    assert await events.last_sequence() == before


# ---- command ids: a grant or revoke replayed, or reused for other content ------------------

async def test_a_grant_or_revoke_replayed_acts_once_and_other_content_is_refused(
        system: System, events: EventStore, tmp_path: Path) -> None:
    owner = await Person(system.nc, "owner-ids", "Owner").join()
    friend = await Person(system.nc, "friend-ids", "Friend").join()
    await owner.befriend(friend)
    await owner.upload(account_set(tmp_path, "ids.bak"))
    grant = Grant(command_id=cid(), session=owner.session, set_id="set-123",
                  friends=[friend.account], permission="read-only")
    first = await owner.sharing.grant(grant)
    assert (await owner.sharing.grant(grant)).seq == first.seq
    with pytest.raises(CommandReused):  # the same id, now asking for read-write
        await owner.sharing.grant(msgspec.structs.replace(grant, permission="read-write"))
    revoke = Revoke(command_id=cid(), session=owner.session, set_id="set-123",
                    friend=friend.account)
    ended = await owner.sharing.revoke(revoke)
    await owner.grant(friend)  # shared again, under a new id
    # The old revoke replayed (after a lost reply, or by an attacker) ends nothing new.
    assert (await owner.sharing.revoke(revoke)).seq == ended.seq
    types = [e.type for e in await events.load(share_subjects(share_id(owner.member_id,
                                                                   "set-123")))]
    assert types == ["ShareGranted", "ShareRevoked", "ShareGranted"]
    verdict = await owner.sharing.check(Check(member_id=friend.member_id,
                                              owner_id=owner.member_id, set_id="set-123",
                                              year=2018, access="read"))
    assert verdict.allowed
