"""Replay of a realistic log into sharing's read model against a raw ordered consumer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import asyncpg
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from bench import log
from runtime.replay import rebuild
from services.sharing.projection import AccessProjection


async def raw_read(nc: NATS, count: int) -> float:
    """Events/s of an ordered consumer reading ``count`` events, doing nothing with them."""
    done, seen = asyncio.Event(), 0

    async def counted(_msg: Msg) -> None:
        nonlocal seen
        seen += 1
        if seen >= count:
            done.set()

    started = time.perf_counter()
    sub = await nc.jetstream().subscribe("evt.>", ordered_consumer=True, cb=counted)
    await done.wait()
    rate = count / (time.perf_counter() - started)
    await sub.unsubscribe()
    return rate


async def measure(nc: NATS, pool: asyncpg.Pool, members: int,
                  say: Callable[[str], None]) -> tuple[int, float, float]:
    """(events, raw events/s, replay events/s) for a log of ``members`` members."""
    started = time.perf_counter()
    count = await log.write(nc, members)
    say(f"  wrote {count:,} events in {time.perf_counter() - started:.1f} s")
    raw = await raw_read(nc, count)
    started = time.perf_counter()
    # Into the sharing service's own schema: the grant row runs the service over it next.
    await rebuild(nc, pool, AccessProjection(), "sharing",
                  progress=_every_second(say, started))
    ours = count / (time.perf_counter() - started)
    return count, raw, ours


def _every_second(say: Callable[[str], None], started: float) -> Callable[[int, int], None]:
    last = [0.0]

    def progress(position: int, target: int) -> None:
        now = time.perf_counter()
        if now - last[0] >= 1.0 and position:
            last[0] = now
            say(f"  replay at {position:,} of {target:,} "
                f"({position / (now - started):,.0f} events/s)")

    return progress
