"""The sharing access check, 64 in flight, against a nats.micro echo endpoint."""

from __future__ import annotations

import asyncio
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


async def load_grants(pool: asyncpg.Pool, schema: str, members: int, per_member: int,
                      at_seq: int) -> None:
    """A sharing read model of ``members`` members who each share set "s" with their next
    ``per_member`` members (who are their friends), written straight into the tables."""
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
            records=[(a, "s", b, "S", "read-write", NOW) for a, b in pairs])


async def bench_scale(nc: NATS, pool: asyncpg.Pool, members: int, per_member: int,
                      count: int, say: Callable[[str], None]) -> Figures:
    """sharing.check, 64 in flight, over a read model of members x per_member grants."""
    schema = f"scale_{members}_{per_member}"
    seq = await EventStore(nc).last_sequence()
    started = time.perf_counter()
    await load_grants(pool, schema, members, per_member, seq)
    say(f"  {members * per_member:,} grants written in {time.perf_counter() - started:.1f} s")
    started = time.perf_counter()
    async with serving(nc, pool, schema, seq) as index:
        grants = sum(map(len, index.grants.values()))
        say(f"  index of {grants:,} grants loaded in "
            f"{time.perf_counter() - started:.1f} s")
        figures = await _checks_over(nc, members, per_member, count, seq)
    async with pool.acquire() as conn:
        await conn.execute(f"DROP SCHEMA {schema} CASCADE")
    return figures


async def _checks_over(nc: NATS, members: int, per_member: int, count: int,
                       seq: int) -> Figures:
    client = SharingClient(nc, timeout=10)
    step = 7919  # a prime: calls spread over the whole population

    async def check(i: int) -> None:
        owner = (i * step) % members
        friend = (owner + 1 + i % per_member) % members
        verdict = await client.check(Check(member_id=log.member(friend),
                                           owner_id=log.member(owner), set_id="s",
                                           year=2018, access="read", seq=seq))
        assert verdict.allowed

    return await timed(count, 64, check)
