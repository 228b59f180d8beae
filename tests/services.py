"""Running the services in the test process, on the test's real servers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from nats.aio.client import Client as NATS

from runtime.app import Builder, Resources, Wiring
from runtime.eventstore import EventStore
from runtime.settings import Settings
from runtime.tokens import new_private_key, public_key_of


def service_settings(base: Settings) -> Settings:
    """Settings with fresh token keys, cheap Argon2 and a short drive lockout."""
    private = new_private_key()
    return base.with_overrides(
        token_private_key=private, token_public_key=public_key_of(private),
        argon2_time_cost=1, argon2_memory_kib=8192, argon2_parallelism=1,
        drive_lock_base_s=0.4)


@asynccontextmanager
async def running(build: Builder, settings: Settings, nc: NATS, pool: asyncpg.Pool,
                  store: EventStore) -> AsyncIterator[Wiring]:
    """One service (host and projectors) started on the given connections."""
    res = Resources(settings, nc, pool, store)
    wiring = await build(res)
    tasks = await wiring.start()
    try:
        yield wiring
    finally:
        await wiring.stop(tasks)
