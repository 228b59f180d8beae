"""Operators' replay: 100,000 events rebuilt and verified; a swap keeps the live projector
consistent."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from datetime import UTC, datetime

import asyncpg
from nats.aio.client import Client as NATS

from contracts.identity import MemberRegistered, member_subject, member_subjects
from runtime.eventstore import EventStore, Outgoing
from runtime.projector import Projector
from runtime.replay import compare, rebuild, swap
from runtime.settings import Settings
from services.social import tables as social_tables
from services.social.projection import SocialProjection

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
    live = Projector(nc, pool, SocialProjection(), schema="social")
    await live.start()
    await live.wait_until(seq, within=300)
    await live.stop()
    env = {**os.environ, "LEDGERSHARE_NATS_URL": settings.nats_url,
           "LEDGERSHARE_PG_DSN": settings.pg_dsn, "LEDGERSHARE_HOME": settings.home,
           "COLUMNS": "120"}
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
