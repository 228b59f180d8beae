"""The sharing projector under a sustained mixed load: how long from an append's
acknowledgement until its effect is committed to the read model."""

from __future__ import annotations

import asyncio
import random
import time

import asyncpg
import msgspec
from nats.aio.client import Client as NATS

from bench import log
from contracts.base import Event
from contracts.subjects import aggregate_subjects
from runtime.eventstore import EventStore, Outgoing, StoredEvent
from runtime.projector import Projector, setup_bookkeeping
from services.sharing.projection import AccessProjection


class Lag(msgspec.Struct, frozen=True):
    offered: float  # events/s the load appended
    applied: float  # events/s the projector committed over the same span
    p50_ms: float
    p99_ms: float
    max_ms: float


class Stopwatch:
    """A `runtime.projector.Mirror` that notes when each event's batch was committed."""

    def __init__(self) -> None:
        self.committed: dict[int, float] = {}

    async def reload(self, conn: asyncpg.Connection, schema: str) -> None:
        pass

    def applied(self, events: list[StoredEvent]) -> None:
        now = time.perf_counter()
        for event in events:
            self.committed[event.seq] = now


async def measure(nc: NATS, pool: asyncpg.Pool, rate: float, seconds: float) -> Lag:
    """Append a shuffled `bench.log` at ``rate`` events/s for ``seconds``, 16 in flight."""
    event_log = EventStore(nc)
    start = await event_log.last_sequence()
    async with pool.acquire() as conn:
        await conn.execute("DROP SCHEMA IF EXISTS lag CASCADE")
        await setup_bookkeeping(conn, "lag")
        await conn.execute("INSERT INTO lag.checkpoints VALUES ('access', $1)", start)
    watch = Stopwatch()
    projector = Projector(nc, pool, AccessProjection(), schema="lag", mirror=watch)
    await projector.start()
    await projector.wait_leading(within=30)
    load = list(log.events(int(rate * seconds) // log.EVENTS_PER_MEMBER + 1))
    random.Random(1).shuffle(load)
    appended: dict[int, float] = {}
    begun = time.perf_counter()
    await _paced(event_log, load[: int(rate * seconds)], rate, appended)
    offered = len(appended) / (time.perf_counter() - begun)
    await projector.wait_until(max(appended), within=120)
    applied = len(appended) / (max(watch.committed.values()) - begun)
    await projector.stop()
    lags = sorted(max(0.0, watch.committed[s] - t) * 1000 for s, t in appended.items())
    return Lag(offered, applied, lags[len(lags) // 2], lags[int(len(lags) * 0.99)], lags[-1])


async def _paced(events: EventStore, load: list[tuple[str, Event]], rate: float,
                 appended: dict[int, float]) -> None:
    queue = iter(enumerate(load))
    begun = time.perf_counter()

    async def worker() -> None:
        for i, (subject, event) in queue:
            delay = begun + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            subject_filter = aggregate_subjects(*subject.split(".")[1:4])
            seq = await events.append(subject_filter, [Outgoing(subject=subject, event=event)],
                                     expected=None, msg_id=f"lag-{i}")
            appended[seq] = time.perf_counter()

    await asyncio.gather(*(worker() for _ in range(16)))
