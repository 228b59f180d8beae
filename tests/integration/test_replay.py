"""Operators' replay: 100,000 events rebuilt and verified; a swap keeps the live projector
consistent."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from datetime import UTC, datetime

import asyncpg
import pytest
from nats.aio.client import Client as NATS

from contracts.admin import AdminClient, Progress, Rebuild, ReplayRunning, replay
from contracts.errors import BadRequest
from contracts.identity import MemberRegistered, member_subject, member_subjects
from runtime.eventstore import EventStore, Outgoing
from runtime.projector import Projector
from runtime.replay import compare, rebuild, swap
from runtime.settings import Settings
from services.registry import named
from services.social import tables as social_tables
from services.social.projection import SocialProjection
from tests.services import running, service_settings

NOW = datetime.now(UTC)


async def register_many(events: EventStore, count: int, start: int = 0) -> int:
    queue = iter(range(start, start + count))
    last = 0

    async def worker() -> None:
        nonlocal last
        for i in queue:
            mid = str(uuid.UUID(int=i))
            event = MemberRegistered(member_id=mid, account=f"m{i}", nickname=f"n{i}",
                                     password_hash="h", at=NOW)
            seq = await events.append(member_subjects(mid), [Outgoing(
                subject=member_subject(mid, event), event=event)], expected=None,
                msg_id=f"reg-{i}")
            last = max(last, seq)

    await asyncio.gather(*(worker() for _ in range(32)))
    return last


async def test_replay_of_100000_events_reports_a_verified_match(
        nc: NATS, events: EventStore, pool: asyncpg.Pool, settings: Settings) -> None:
    seq = await register_many(events, 100_000)
    async with running(named("social").build, service_settings(settings), nc, pool,
                       events) as social:
        await social.projectors[0].wait_until(seq, within=300)
        # The operator's machine reaches the bus only: no database in its settings.
        env = {**os.environ, "LEDGERSHARE_NATS_URL": settings.nats_url,
               "LEDGERSHARE_PG_DSN": "postgresql://nobody@127.0.0.1:9/none",
               "LEDGERSHARE_HOME": settings.home, "COLUMNS": "120"}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "cli.main", "replay", "social", env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), timeout=600)
    text = out.decode()
    print(text)
    assert proc.returncode == 0, text + err.decode()
    assert "verified: the rebuilt read model equals the live one" in text
    assert "replayed 100000 events in" in text and "events/s)" in text
    assert await pool.fetchval("SELECT count(*) FROM social_rebuild.directory") == 100_000


async def test_a_replay_reports_progress_to_the_callers_inbox_and_runs_once_at_a_time(
        nc: NATS, events: EventStore, pool: asyncpg.Pool, settings: Settings) -> None:
    seq = await register_many(events, 20_000)
    async with running(named("social").build, service_settings(settings), nc, pool,
                       events) as social:
        await social.projectors[0].wait_until(seq, within=120)
        client = AdminClient(nc, context="social", timeout=120)
        seen: list[Progress] = []
        reported = asyncio.Event()

        def progress(p: Progress) -> None:
            seen.append(p)
            reported.set()

        first = asyncio.create_task(replay(client, swap=False, progress=progress))
        await asyncio.wait_for(reported.wait(), timeout=60)
        with pytest.raises(ReplayRunning):
            await replay(client, swap=False, progress=lambda _p: None)
        rebuilt = await first
        with pytest.raises(BadRequest, match="inbox"):
            await client.replay(Rebuild(progress="evt.identity.member.x.MemberRegistered"))
    assert rebuilt.reached >= seq and rebuilt.differences == [] and not rebuilt.swapped
    assert all(p.target == rebuilt.reached for p in seen)
    assert [p.position for p in seen] == sorted(p.position for p in seen)
    model = named("social").read_model
    assert model is not None and {t.table for t in rebuilt.tables} == set(model.tables)


async def test_replay_names_the_services_that_serve_it_when_asked_for_another(
        nc: NATS, events: EventStore, pool: asyncpg.Pool, settings: Settings) -> None:
    async with running(named("social").build, service_settings(settings), nc, pool, events):
        env = {**os.environ, "LEDGERSHARE_NATS_URL": settings.nats_url}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "cli.main", "replay", "sharng", "--timeout", "2", env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        _, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 1
    assert "no sharng service answers admin.sharng.replay (services that do: social)" in (
        " ".join(err.decode().split()))


async def test_a_swap_mid_stream_leaves_the_live_projector_consistent(
        nc: NATS, events: EventStore, pool: asyncpg.Pool) -> None:
    seq = await register_many(events, 300)
    live = Projector(nc, pool, SocialProjection(), schema="social", batch=16)
    await live.start()
    await live.wait_until(seq)
    await rebuild(nc, pool, SocialProjection(), "social_rebuild")
    writer = asyncio.create_task(register_many(events, 2000, start=300))
    await asyncio.sleep(0.05)  # the live projector is busy when the swap lands
    await swap(pool, "social", "social_rebuild", social_tables.TABLES)
    seq = await writer
    await live.wait_until(seq, within=60)
    await live.stop()
    await rebuild(nc, pool, SocialProjection(), "social_fresh")
    assert await compare(pool, "social", "social_fresh", social_tables.TABLES) == []
    assert await pool.fetchval("SELECT count(*) FROM social.directory") == 2300
