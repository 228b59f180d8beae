"""Who may lead a projection, and from which history: two instances through a PostgreSQL
restart, a second puller on the cursor, a deleted cursor, and a NATS server replaced by
one holding a new stream while a read model of the old one is still in PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import nats
import pytest
from nats.aio.client import Client as NATS

from deploy.stack import Stack
from runtime.app import create_pool
from runtime.eventstore import EventStore
from runtime.projector import ProjectionLag, Projector, StaleReadModel
from runtime.replay import rebuild, swap
from runtime.settings import Settings
from tests.integration.balances import Balances, rows
from tests.integration.test_projector import fill


async def counted(pool: asyncpg.Pool, schema: str = "live") -> int:
    """Events applied, by the totals' own count (each applied once adds one)."""
    return sum(n for _, _, n in await rows(pool, schema))


async def trickle(events: EventStore, count: int, *, tag: str) -> int:
    """Append one event at a time, a little apart; the last sequence."""
    last = 0
    for i in range(count):
        last = await fill(events, 1, tag=f"{tag}-{i}")
        await asyncio.sleep(0.005)
    return last


async def settled(projectors: list[Projector], seq: int, within: float = 30) -> None:
    deadline = time.monotonic() + within
    for projector in projectors:
        while True:
            try:
                await projector.wait_until(seq, within=2)
                break
            except Exception:
                assert time.monotonic() < deadline, "the projectors did not catch up"


Run = Callable[..., Awaitable[Projector]]


@pytest.fixture
async def projectors() -> AsyncIterator[Run]:
    """Start a Balances projector (``run(nc, pool, **options)``); every one is stopped at
    the end, pass or fail: a leader holds a pooled connection, and a pool does not close
    under it. Ask for this fixture last, so it is torn down first."""
    started: list[Projector] = []

    async def run(nc: NATS, pool: asyncpg.Pool, **options: Any) -> Projector:
        projector = Projector(nc, pool, Balances(), schema="live", **options)
        await projector.start()
        started.append(projector)
        return projector

    yield run
    await asyncio.gather(*(p.stop() for p in started))


@pytest.fixture
async def two_pools(settings: Settings) -> AsyncIterator[list[asyncpg.Pool]]:
    """Two instances' own pools: each loses its own connections in a restart."""
    pools = [await create_pool(settings.pg_dsn, size=4) for _ in range(2)]
    yield pools
    for p in pools:
        await p.close()


async def test_a_postgresql_restart_under_two_instances_loses_no_event(
        nc: NATS, events: EventStore, two_pools: list[asyncpg.Pool], stack: Stack,
        projectors: Run) -> None:
    first = await projectors(nc, two_pools[0], batch=8)
    await first.wait_leading(5)
    second = await projectors(nc, two_pools[1], batch=8)
    await first.wait_until(await fill(events, 20))
    # Idle through the restart: the leader learns of it from its lock's connection only.
    await asyncio.to_thread(stack.restart, "postgres", pause=0.3)
    await asyncio.sleep(2.0)  # time for the other instance to take the lead
    last = await trickle(events, 100, tag="after")
    await settled([first, second], last)
    assert [first.active, second.active].count(True) == 1
    assert await counted(two_pools[0]) == 120


async def test_another_puller_on_the_cursor_costs_no_event(
        nc: NATS, events: EventStore, pool: asyncpg.Pool, projectors: Run) -> None:
    projector = await projectors(nc, pool, batch=8)
    await projector.wait_leading(5)
    # A leader that does not know it lost the lead, pulling from the same consumer.
    stolen: list[int] = []

    async def steal(msg: object) -> None:
        stolen.append(1)

    inbox = nc.new_inbox()
    await nc.subscribe(inbox, cb=steal)
    pull = json.dumps({"batch": 3, "expires": 500_000_000}).encode()
    subject = f"$JS.API.CONSUMER.MSG.NEXT.EVENTS.{projector.consumer}"
    appending = asyncio.create_task(trickle(events, 60, tag="t"))
    while not appending.done():
        await nc.publish(subject, pull, reply=inbox)
        await asyncio.sleep(0.05)
    await settled([projector], await appending)
    assert stolen, "the second puller got nothing: the test proves nothing"
    assert await counted(pool) == 60


async def test_a_deleted_cursor_ends_the_lead_and_the_next_one_goes_on(
        nc: NATS, events: EventStore, pool: asyncpg.Pool, projectors: Run) -> None:
    projector = await projectors(nc, pool)
    await projector.wait_until(await fill(events, 5))
    await nc.jetstream().delete_consumer("EVENTS", projector.consumer)
    await projector.wait_until(await fill(events, 5, tag="after"), within=10)
    assert await counted(pool) == 10


async def replace_nats(nats_stack: Stack) -> None:
    """The same port, a new server with an empty store: what `make run` meets when a stack
    of another home (or a wiped one) comes up where the last one was."""
    await asyncio.to_thread(nats_stack.down, progress=lambda _msg: None)
    shutil.rmtree(nats_stack.data / "nats")
    await asyncio.to_thread(nats_stack.up, detach=False, progress=lambda _msg: None)


@pytest.fixture
async def quick_nc(nats_stack: Stack) -> AsyncIterator[NATS]:
    """A connection that reconnects as the services' do."""
    client = await nats.connect(nats_stack.settings.nats_url, max_reconnect_attempts=-1,
                                reconnect_time_wait=0.2)
    yield client
    await client.close()


async def test_a_read_model_of_another_stream_refuses_until_rebuilt(
        quick_nc: NATS, pool: asyncpg.Pool, nats_stack: Stack, projectors: Run) -> None:
    events = EventStore(quick_nc)
    await events.ensure_stream()
    leader = await projectors(quick_nc, pool)
    await leader.wait_leading(5)
    standby = await projectors(quick_nc, pool)
    await standby.wait_until(await fill(events, 30))
    await replace_nats(nats_stack)
    await events.ensure_stream()
    seq = await fill(events, 5, tag="new")  # sequences 1..5: below the checkpoint (30)
    for projector in (leader, standby):
        assert "rebuild it from the log" in await refusal(projector, seq)
    await rebuild(quick_nc, pool, Balances(), "live_rebuild")
    await swap(pool, "live", "live_rebuild", ("balances",))
    await settled([leader, standby], seq)
    assert await counted(pool) == 5


async def refusal(projector: Projector, seq: int) -> str:
    """Why the projector refuses to answer for ``seq``; it must never answer meanwhile."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            await projector.wait_until(seq, within=1)
        except StaleReadModel as err:
            return str(err)
        except ProjectionLag:
            continue  # not known yet: the leader learns it when it next leads
        raise AssertionError(f"{projector.consumer} answered from another stream's history")
    raise AssertionError(f"{projector.consumer} never refused")


async def test_a_standby_does_not_trust_a_position_in_a_stream_gone(
        quick_nc: NATS, pool: asyncpg.Pool, nats_stack: Stack, projectors: Run) -> None:
    events = EventStore(quick_nc)
    await events.ensure_stream()
    old = await projectors(quick_nc, pool)
    await old.wait_leading(5)
    stale = await projectors(quick_nc, pool)
    await stale.wait_until(await fill(events, 30))
    await old.stop()
    # A new stack: an empty stream and an empty read model, a fresh instance leading it;
    # the stale one, left over from the last run, still knows sequence 30.
    await replace_nats(nats_stack)
    await pool.execute("DROP SCHEMA live CASCADE")
    await events.ensure_stream()
    await projectors(quick_nc, pool)
    seq = await fill(events, 5, tag="new")
    await stale.wait_until(seq, within=10)
    assert await counted(pool) == 5  # it answered once the tables held them, not before
