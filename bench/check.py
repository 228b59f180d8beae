"""The sharing access check, 64 in flight, against a nats.micro echo endpoint; and the
same check at scale, over a million friends' grants and 100,000 agency memberships."""

from __future__ import annotations

import asyncio
import gc
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import asyncpg
import msgspec
from nats.aio.client import Client as NATS
from nats.micro import add_service
from nats.micro.request import Request as MicroRequest

from bench import log
from contracts.agency import (
    AgencyCreated,
    AgencyEvent,
    MemberInvited,
    MemberJoined,
    SetMarked,
    StaffRole,
    SupervisionAssigned,
    agency_id_for,
)
from contracts.agency_state import AgencyState, access, fold
from contracts.sharing import Check, ShareGranted, SharingClient, share_id, share_subjects
from contracts.sharing import share_subject as grant_subject
from contracts.social import FriendAdded, friendship_subject, friendship_subjects, pair_id
from runtime.commands import Pipeline
from runtime.eventstore import EventStore, Outgoing
from runtime.journal import Journal
from runtime.projector import Projector, setup_bookkeeping
from runtime.service import ServiceHost
from runtime.tokens import Sessions, Verifier, new_private_key, public_key_of
from services.sharing.handlers import Sharing
from services.sharing.index import AccessIndex
from services.sharing.projection import AccessProjection

NOW = datetime.now(UTC)
_state_json = msgspec.json.Encoder().encode


class Figures(msgspec.Struct, frozen=True):
    rate: float
    p50_us: float
    p99_us: float


async def timed(count: int, width: int, call: Callable[[int], Awaitable[None]]) -> Figures:
    """``count`` calls, ``width`` at a time: rate and latency percentiles."""
    latencies: list[float] = []
    queue = iter(range(count))

    async def worker() -> None:
        for i in queue:
            started = time.perf_counter()
            await call(i)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(width)))
    total = time.perf_counter() - started
    latencies.sort()
    return Figures(count / total, latencies[len(latencies) // 2] * 1e6,
                   latencies[int(len(latencies) * 0.99)] * 1e6)


async def seed(events: EventStore, pairs: int) -> list[tuple[str, str]]:
    """Owners who share set "s" with a friend; returns (owner, friend) pairs."""
    found = []
    for i in range(pairs):
        owner, friend = str(uuid.UUID(int=2 * i + 1)), str(uuid.UUID(int=2 * i + 2))
        fid = pair_id(owner, friend)
        added = FriendAdded(friendship_id=fid, member_id=owner, friend_id=friend,
                            friend_nickname="f", at=NOW)
        await events.append(friendship_subjects(fid), [Outgoing(
            subject=friendship_subject(fid, added), event=added)], expected=None,
            msg_id=f"f{i}")
        sid = share_id(owner, "s")
        granted = ShareGranted(share_id=sid, owner_id=owner, set_id="s", set_name="S",
                               friend_id=friend, at=NOW)
        await events.append(share_subjects(sid), [Outgoing(subject=grant_subject(sid, granted),
                                                       event=granted)],
                           expected=None, msg_id=f"g{i}")
        found.append((owner, friend))
    return found


@asynccontextmanager
async def serving(nc: NATS, pool: asyncpg.Pool, schema: str, seq: int,
                  ) -> AsyncIterator[AccessIndex]:
    """sharing's handlers in this process over ``schema``, once its access projector
    leads (index loaded) and has reached ``token``; yields the index."""
    events = EventStore(nc)
    index = AccessIndex()
    access = Projector(nc, pool, AccessProjection(), schema=schema, mirror=index)
    await access.start()
    await access.wait_leading(within=600)
    await access.wait_until(seq, within=120)
    journal = Journal(nc)
    await journal.ensure()
    sharing = Sharing(events, Pipeline(events, journal, "sharing"), pool, access,
                      Sessions(Verifier(public_key_of(new_private_key())), events),
                      schema=schema, index=index)
    host = ServiceHost(nc, name="sharing", version="0.1.0", description="bench",
                       endpoints=sharing.endpoints())
    await host.start()
    try:
        yield index
    finally:
        await host.stop()
        await access.stop()


async def bench_check(nc: NATS, pool: asyncpg.Pool, count: int) -> tuple[Figures, Figures]:
    """(sharing.check with a consistency token, micro echo), 64 in flight each."""
    events = EventStore(nc)
    pairs = await seed(events, 200)
    seq = await events.last_sequence()
    async with serving(nc, pool, "sharing", seq):
        return await _check_against_echo(nc, pairs, seq, count)


async def _check_against_echo(nc: NATS, pairs: list[tuple[str, str]], seq: int,
                              count: int) -> tuple[Figures, Figures]:
    async def echo(req: MicroRequest) -> None:
        await req.respond(req.data)

    service = await add_service(nc, name="echo", version="0.1.0", queue_group="echo")
    await service.add_endpoint(name="echo", subject="echo.echo", handler=echo)
    client = SharingClient(nc, timeout=10)

    async def check(i: int) -> None:
        owner, friend = pairs[i % len(pairs)]
        verdict = await client.check(Check(member_id=friend, owner_id=owner, set_id="s",
                                           year=2018, access="read", seq=seq))
        assert verdict.allowed

    body = msgspec.json.encode(Check(member_id="m", owner_id="o", set_id="s", year=2018,
                                     access="read", seq=seq))

    async def ping(i: int) -> None:
        await nc.request("echo.echo", body, timeout=10)

    ours = await timed(count, 64, check)
    raw = await timed(count, 64, ping)
    await service.stop()
    return ours, raw


# ---- the check at scale: friends' grants and bookkeeping agencies, loaded by COPY --------

AGENCY_SIZE = 10  # members per agency: 1 administrator, 1-2 supervisors, the rest accountants
SHARED = "s"  # the set each member shares with their next ``per_member`` members
MARKED = ("w1", "w2")  # an accountant's agency sets: the first, or both
STEP = 7919  # a prime: calls spread over the whole population


class Staff(msgspec.Struct, frozen=True, kw_only=True):
    """One bench agency: members AGENCY_SIZE * a ... AGENCY_SIZE * a + 9 of the grant
    population, each accountant supervised by one supervisor, with one or two marked sets."""

    agency_id: str
    name: str
    admin: str
    supervisors: list[str]
    accountants: list[str]
    supervisor_of: dict[str, str]  # accountant -> supervisor
    marked: dict[str, list[str]]  # accountant -> the sets they marked as agency work


def staff(a: int) -> Staff:
    ids = [log.member(AGENCY_SIZE * a + k) for k in range(AGENCY_SIZE)]
    sups, accs = ids[1:2 + a % 2], ids[2 + a % 2:]
    return Staff(agency_id=agency_id_for(ids[0], "bench"), name=f"代账{a}", admin=ids[0],
                 supervisors=sups, accountants=accs,
                 supervisor_of={acc: sups[j % len(sups)] for j, acc in enumerate(accs)},
                 marked={acc: list(MARKED[:1 + (a + j) % 2]) for j, acc in enumerate(accs)})


def agency_state(s: Staff) -> AgencyState:
    """The agency as social's events make it: folded by `contracts.agency_state`, as sharing's
    projection folds it."""
    aid = s.agency_id
    events: list[AgencyEvent] = [AgencyCreated(agency_id=aid, at=NOW, name=s.name,
                                               admin_id=s.admin)]
    staffed: list[tuple[str, StaffRole]] = [(m, "supervisor") for m in s.supervisors]
    staffed += [(m, "accountant") for m in s.accountants]
    for mid, role in staffed:
        events += [MemberInvited(agency_id=aid, at=NOW, member_id=mid, role=role),
                   MemberJoined(agency_id=aid, at=NOW, member_id=mid, role=role)]
    for acc in s.accountants:
        events.append(SupervisionAssigned(agency_id=aid, at=NOW, accountant_id=acc,
                                          supervisor_id=s.supervisor_of[acc]))
        events += [SetMarked(agency_id=aid, at=NOW, owner_id=acc, set_id=sid)
                   for sid in s.marked[acc]]
    return fold(events)


class Population(msgspec.Struct, frozen=True, kw_only=True):
    """What `load` wrote."""

    members: int
    grants: int
    agencies: list[Staff]
    memberships: int
    access_rows: int


async def load(pool: asyncpg.Pool, schema: str, members: int, per_member: int,
               at_seq: int) -> Population:
    """A sharing read model written straight into the tables: ``members`` members who each
    share set "s" with their next ``per_member`` members (who are their friends), and one
    agency per AGENCY_SIZE members (each member in one) with the rows sharing's projection
    would write for it: its folded state, the access `contracts.agency_state.access` gives
    and that access's open history."""
    assert members % AGENCY_SIZE == 0, "members come in whole agencies"
    agencies = [staff(a) for a in range(members // AGENCY_SIZE)]
    states = [agency_state(s) for s in agencies]
    access_rows = [(owner, sid, member, s.agency_id, why, grant)
                   for s, state in zip(agencies, states, strict=True)
                   for (owner, sid, member), (why, grant) in access(state).items()]
    async with pool.acquire() as conn:
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await setup_bookkeeping(conn, schema)
        await AccessProjection().setup(conn, schema)
        await conn.execute(f"INSERT INTO {schema}.checkpoints VALUES ('access', $1)", at_seq)
        pairs = [(log.member(i), log.member((i + d) % members))
                 for i in range(members) for d in range(1, per_member + 1)]
        await conn.copy_records_to_table("friends", schema_name=schema, records=pairs)
        await conn.copy_records_to_table("friends", schema_name=schema,
                                         records=[(b, a) for a, b in pairs])
        await conn.copy_records_to_table(
            "grants", schema_name=schema,
            columns=["owner_id", "set_id", "friend_id", "set_name", "permission", "since"],
            records=[(a, SHARED, b, "S", "read-write", NOW) for a, b in pairs])
        await conn.copy_records_to_table(
            "agencies", schema_name=schema, columns=["agency_id", "name", "state"],
            records=[(s.agency_id, state.name, _state_json(state).decode())
                     for s, state in zip(agencies, states, strict=True)])
        await conn.copy_records_to_table(
            "agency_access", schema_name=schema,
            columns=["owner_id", "set_id", "member_id", "agency_id", "reason", "permission"],
            records=access_rows)
        await conn.copy_records_to_table(
            "agency_history", schema_name=schema,
            columns=["owner_id", "set_id", "member_id", "agency_id", "reason", "since"],
            records=[(*row[:5], NOW) for row in access_rows if row[5] != "none"])
        await conn.execute(f"ANALYZE {schema}.agency_access")
    return Population(members=members, grants=len(pairs), agencies=agencies,
                      memberships=sum(len(state.members) for state in states),
                      access_rows=len(access_rows))


class Scale(msgspec.Struct, frozen=True, kw_only=True):
    """One scale case: what was loaded, how long it took, and the checks' figures."""

    members: int
    grants: int
    agencies: int
    memberships: int
    access_rows: int
    written_s: float  # COPY into the tables
    loaded_s: float  # the leading projector's index reload
    figures: Figures


async def bench_scale(nc: NATS, pool: asyncpg.Pool, members: int, per_member: int,
                      count: int, say: Callable[[str], None]) -> Scale:
    """sharing.check, 64 in flight, over members x per_member grants and members // 10
    agencies of ten: a third friend-grant checks, a third through an agency (a supervisor or
    the administrator reading an accountant's marked set), a third owners' own sets."""
    schema = f"scale_{members}_{per_member}"
    seq = await EventStore(nc).last_sequence()
    started = time.perf_counter()
    people = await load(pool, schema, members, per_member, seq)
    written = time.perf_counter() - started
    say(f"  {people.grants:,} grants, {len(people.agencies):,} agencies with "
        f"{people.memberships:,} memberships ({people.access_rows:,} agency access rows) "
        f"written in {written:.1f} s")
    asks = [_mixed(i, people, per_member, seq) for i in range(count)]
    started = time.perf_counter()
    async with serving(nc, pool, schema, seq) as index:
        loaded = time.perf_counter() - started
        grants = sum(map(len, index.grants.values()))
        memberships = sum(len(a.members) for a in index.agencies.values())
        assert (grants, memberships, len(index.agency_access)) == (
            people.grants, people.memberships, people.access_rows), "index differs"
        say(f"  index of {grants:,} grants and {memberships:,} agency memberships loaded in "
            f"{loaded:.1f} s")
        figures = await _frozen(_checks(nc, asks))
    async with pool.acquire() as conn:
        await conn.execute(f"DROP SCHEMA {schema} CASCADE")
    return Scale(members=members, grants=people.grants, agencies=len(people.agencies),
                 memberships=people.memberships, access_rows=people.access_rows,
                 written_s=written, loaded_s=loaded, figures=figures)


async def _frozen(timing: Awaitable[Figures]) -> Figures:
    """Time with what is alive now out of the collector's sight, for both cases alike.
    Otherwise the small case pays full collections of this process's heap (~0.1 s each,
    every 64 calls in flight held up) that the large case's million-object index postpones
    past the measurement: the ratio would weigh the collector's thresholds, not the check.
    (A service holding the large index does pay a full collection now and then: ~1.7 s.)"""
    gc.collect()
    gc.freeze()
    try:
        return await timing
    finally:
        gc.unfreeze()


def _mixed(i: int, people: Population, per_member: int, seq: int) -> tuple[Check, str]:
    """The i-th check of the mix and the reason its (allowed) verdict must give."""
    pick, turn = i * STEP, i // 3
    member: str
    owner: str
    match i % 3:
        case 0:  # a friend's grant
            o = pick % people.members
            owner = log.member(o)
            member = log.member((o + 1 + turn % per_member) % people.members)
            set_id, reason = SHARED, ""
        case 1:  # through an agency: its administrator, or the accountant's supervisor
            s = people.agencies[pick % len(people.agencies)]
            owner = s.accountants[turn % len(s.accountants)]
            set_id = s.marked[owner][turn % len(s.marked[owner])]
            member, reason = ((s.admin, "administrator") if turn % 2
                              else (s.supervisor_of[owner], "supervisor"))
        case _:  # an owner's own set: the one shared with friends, or an agency set
            s = people.agencies[pick % len(people.agencies)]
            owner = s.accountants[turn % len(s.accountants)]
            set_id = SHARED if turn % 2 else s.marked[owner][0]
            member, reason = owner, "owner"
    return Check(member_id=member, owner_id=owner, set_id=set_id, year=2018, access="read",
                 seq=seq), reason


async def _checks(nc: NATS, asks: list[tuple[Check, str]]) -> Figures:
    client = SharingClient(nc, timeout=10)

    async def check(i: int) -> None:
        ask, reason = asks[i]
        verdict = await client.check(ask)
        assert verdict.allowed and verdict.reason == reason, (ask, verdict)

    return await timed(len(asks), 64, check)
