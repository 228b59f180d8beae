"""How fresh a projector says it is, against real NATS and PostgreSQL: never fresher than
the log, whatever token a caller picks."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import pytest
from nats.aio.client import Client as NATS

from contracts.subjects import aggregate_subjects
from runtime.eventstore import EventStore
from runtime.projector import ProjectionLag, Projector
from tests.integration.balances import Balances
from tests.integration.test_projector import deposit, fill


async def test_a_token_past_the_log_neither_hangs_nor_vouches_for_later_events(
        nc: NATS, events: EventStore, pool: asyncpg.Pool) -> None:
    projector = Projector(nc, pool, Balances(), schema="live")
    await projector.start()
    await projector.wait_until(await fill(events, 5))
    started = time.monotonic()
    await projector.wait_until(1 << 60, within=2)  # a caller's pick, far past the end
    assert time.monotonic() - started < 1.0
    await projector.stop()
    later = await events.append(aggregate_subjects("test", "account", "acc0"),
                               [deposit("acc0", 1)], expected=None, msg_id="later")
    with pytest.raises(ProjectionLag):
        await projector.wait_until(later, within=0.5)


async def test_caught_up_covers_every_append_acknowledged_before_it_was_asked(
        nc: NATS, events: EventStore, pool: asyncpg.Pool) -> None:
    projector = Projector(nc, pool, Balances(), schema="live")
    await projector.start()
    await projector.wait_until(await fill(events, 5))
    assert all(await asyncio.gather(*(projector.caught_up() for _ in range(20))))
    await projector.stop()
    await events.append(aggregate_subjects("test", "account", "acc0"), [deposit("acc0", 1)],
                       expected=None, msg_id="later")
    assert not await projector.caught_up()
