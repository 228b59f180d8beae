"""Running the services in the test process, on the test's real servers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import asyncpg
from nats.aio.client import Client as NATS

from runtime.app import Builder, Resources, Wiring
from runtime.eventstore import EventStore
from runtime.settings import Settings
from runtime.tokens import new_private_key, public_key_of
from services.identity.__main__ import build as identity
from services.sharing.__main__ import build as sharing
from services.social.__main__ import build as social
from services.storage.__main__ import build as storage


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


def all_builds() -> list[Builder]:
    """The four services' builders, in start order."""
    return [identity, social, storage, sharing]


@asynccontextmanager
async def running_all(settings: Settings, nc: NATS, pool: asyncpg.Pool,
                      store: EventStore) -> AsyncIterator[Settings]:
    """All four services on the test's servers; yields the settings they run with."""
    configured = service_settings(settings)
    async with AsyncExitStack() as stack:
        for build in all_builds():
            await stack.enter_async_context(running(build, configured, nc, pool, store))
        yield configured
