"""The projector against real NATS and PostgreSQL: batches, checkpoints, crashes, poison."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time

import asyncpg
import msgspec
import pytest
from nats.aio.client import Client as NATS

from contracts.base import HDR_EVENT_TYPE
from contracts.subjects import aggregate_subjects, event_subject
from runtime.eventstore import FOREIGN, EventStore, Outgoing
from runtime.projector import ProjectionLag, Projector
from runtime.settings import Settings
from tests.integration.balances import Balances, BatchBalances, Deposited, rows


def deposit(account: str, amount: int) -> Outgoing:
    return Outgoing(subject=event_subject("test", "account", account, "Deposited"),
                    event=Deposited(amount=amount))


async def fill(events: EventStore, count: int, accounts: int = 7, *, tag: str = "fill") -> int:
    last = 0
    for i in range(count):
        account = f"acc{i % accounts}"
        last = await events.append(aggregate_subjects("test", "account", account),
                                  [deposit(account, i)], expected=None, msg_id=f"{tag}-{i}")
    return last


async def replay(nc: NATS, pool: asyncpg.Pool, schema: str, seq: int) -> Projector:
    projector = Projector(nc, pool, Balances(), schema=schema, consumer=f"replay_{schema}")
    await projector.start()
    await projector.wait_until(seq, within=30)
    await projector.stop()
    return projector


async def test_projects_every_event_once_and_waits_for_a_token(
        nc: NATS, events: EventStore, pool: asyncpg.Pool) -> None:
    projector = Projector(nc, pool, Balances(), schema="live", batch=16)
    await projector.start()
    seq = await fill(events, 100, accounts=3)
    await projector.wait_until(seq)
    await projector.stop()
    totals = {a: t for a, t, _ in await rows(pool, "live")}
    assert totals == {f"acc{k}": sum(range(k, 100, 3)) for k in range(3)}


async def test_wait_until_a_token_of_unrelated_events_returns_at_once(
        nc: NATS, events: EventStore, pool: asyncpg.Pool) -> None:
    projector = Projector(nc, pool, Balances(), schema="live")
    await projector.start()
    other = Outgoing(subject=event_subject("other", "thing", "t1", "Deposited"),
                     event=Deposited(amount=1))
    seq = await events.append(aggregate_subjects("other", "thing", "t1"), [other],
                               expected=None, msg_id="x")
    started = time.monotonic()
    await projector.wait_until(seq, within=2)
    assert time.monotonic() - started < 1.0
    await projector.stop()


async def test_wait_until_gives_up_with_a_lag_error_when_stopped(
        nc: NATS, events: EventStore, pool: asyncpg.Pool) -> None:
    projector = Projector(nc, pool, Balances(), schema="live")
    await projector.start()
    await projector.stop()
    seq = await fill(events, 1, tag="late")
    with pytest.raises(ProjectionLag):
        await projector.wait_until(seq, within=0.3)


async def test_a_restart_skips_what_was_applied(
        nc: NATS, events: EventStore, pool: asyncpg.Pool) -> None:
    seq = await fill(events, 40)
    first = Projector(nc, pool, Balances(), schema="live")
    await first.start()
    await first.wait_until(seq)
    await first.stop()
    # Rewind the consumer so every event is delivered again: the checkpoint must hold.
    await nc.jetstream().delete_consumer("EVENTS", first.consumer)
    second = Projector(nc, pool, Balances(), schema="live")
    await second.start()
    seq = await fill(events, 41, tag="more")
    await second.wait_until(seq)
    await second.stop()
    assert sum(n for _, _, n in await rows(pool, "live")) == 40 + 41


async def test_a_garbage_event_is_dead_lettered_and_the_rest_applied(
        nc: NATS, events: EventStore, pool: asyncpg.Pool) -> None:
    await fill(events, 5)
    await nc.jetstream().publish(event_subject("test", "account", "acc0", "Deposited"),
                                 b"\xff not json {", headers={HDR_EVENT_TYPE: "Deposited"})
    seq = await fill(events, 5, tag="after")
    projector = Projector(nc, pool, Balances(), schema="live")
    await projector.start()
    await projector.wait_until(seq)
    await projector.stop()
    parked = await pool.fetch("SELECT stream_seq, reason FROM live.dead_letters")
    assert [r["stream_seq"] for r in parked] == [6]
    assert "DecodeError" in parked[0]["reason"]
    assert sum(n for _, _, n in await rows(pool, "live")) == 10


async def test_messages_no_append_wrote_are_parked_never_applied(
        nc: NATS, events: EventStore, pool: asyncpg.Pool) -> None:
    await fill(events, 5)
    subject = event_subject("test", "account", "acc0", "Deposited")
    forged = msgspec.json.encode(Deposited(amount=1000))
    js = nc.jetstream()
    foreign = [(await js.publish(subject, forged)).seq,  # a well-formed event, no headers
               (await js.publish(subject, forged, headers={HDR_EVENT_TYPE: "Withdrawn"})).seq,
               (await js.publish(subject, b'{"algorithm": "Ed25519"}')).seq]  # a reply
    seq = await fill(events, 5, tag="after")
    for schema, projection in (("one", Balances()), ("batched", BatchBalances())):
        projector = Projector(nc, pool, projection, schema=schema, batch=4)
        await projector.start()
        await projector.wait_until(seq)
        await projector.stop()
        parked = await pool.fetch(f"SELECT stream_seq, reason FROM {schema}.dead_letters "
                                  "ORDER BY stream_seq")
        assert [r["stream_seq"] for r in parked] == foreign
        assert all(r["reason"].startswith(FOREIGN) for r in parked)
        assert sum(t for _, t, _ in await rows(pool, schema)) == sum(range(5)) * 2


async def test_a_standby_instance_takes_over_when_the_leader_stops(
        nc: NATS, events: EventStore, pool: asyncpg.Pool) -> None:
    leader = Projector(nc, pool, Balances(), schema="live")
    standby = Projector(nc, pool, Balances(), schema="live")
    await leader.start()
    await asyncio.sleep(0.2)
    await standby.start()
    seq = await fill(events, 20)
    await standby.wait_until(seq)  # the standby learns progress from the checkpoint
    assert leader.active and not standby.active
    await leader.stop()
    seq = await fill(events, 20, tag="after")
    await standby.wait_until(seq, within=10)
    await standby.stop()
    assert sum(n for _, _, n in await rows(pool, "live")) == 40


async def test_sigkill_mid_run_then_restart_equals_a_fresh_replay(
        nc: NATS, events: EventStore, pool: asyncpg.Pool, settings: Settings) -> None:
    seq = await fill(events, 3000)
    argv = [sys.executable, "-m", "tests.integration.balances", settings.nats_url,
            settings.pg_dsn, "live"]
    for _round in range(3):
        worker = await asyncio.create_subprocess_exec(*argv, stdout=subprocess.DEVNULL)
        await _wait_for_progress(pool)
        worker.send_signal(signal.SIGKILL)
        await worker.wait()
    worker = await asyncio.create_subprocess_exec(*argv, stdout=subprocess.DEVNULL)
    try:
        await _wait_checkpoint(pool, seq)
        await replay(nc, pool, "fresh", seq)
        assert await rows(pool, "live") == await rows(pool, "fresh")
        assert sum(n for _, _, n in await rows(pool, "live")) == 3000
    finally:
        worker.kill()
        await worker.wait()


async def _checkpoint(pool: asyncpg.Pool) -> int:
    try:
        value = await pool.fetchval("SELECT last_seq FROM live.checkpoints")
    except asyncpg.UndefinedTableError:
        return 0
    return int(value or 0)


async def _wait_for_progress(pool: asyncpg.Pool) -> None:
    before = await _checkpoint(pool)
    deadline = time.monotonic() + 30
    while await _checkpoint(pool) <= before + 100:
        assert time.monotonic() < deadline, "projector made no progress"
        await asyncio.sleep(0.01)


async def _wait_checkpoint(pool: asyncpg.Pool, seq: int) -> None:
    deadline = time.monotonic() + 60
    while await _checkpoint(pool) < seq:
        assert time.monotonic() < deadline, "projector did not catch up"
        await asyncio.sleep(0.05)
