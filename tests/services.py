"""Running the services in the test process, on the test's real servers."""

from __future__ import annotations

import base64
import os
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import asyncpg
from nats.aio.client import Client as NATS

from runtime.app import Builder, ReadModel, Resources, Wiring
from runtime.eventstore import EventStore
from runtime.settings import Settings
from runtime.tokens import new_private_key, public_key_of
from services.registry import SERVICES


def service_settings(base: Settings) -> Settings:
    """Settings with fresh token keys, cheap Argon2 and a short drive lockout."""
    private = new_private_key()
    return base.with_overrides(
        token_private_key=private, token_public_key=public_key_of(private),
        subject_key=base64.b64encode(os.urandom(32)).decode(),
        argon2_time_cost=1, argon2_memory_kib=8192, argon2_parallelism=1,
        argon2_below_owasp_for_tests=True,
        drive_lock_base_s=0.4)


@asynccontextmanager
async def running(build: Builder, settings: Settings, nc: NATS, pool: asyncpg.Pool,
                  events: EventStore) -> AsyncIterator[Wiring]:
    """One service (host and projectors) started on the given connections."""
    res = Resources(settings, nc, pool, events)
    wiring = await build(res)
    tasks = await wiring.start()
    try:
        yield wiring
    finally:
        await wiring.stop(tasks)
    # Every error a service answered is one its operation declares (contracts/).
    assert wiring.host.undeclared == [], wiring.host.undeclared


def read_models() -> list[ReadModel]:
    """Every service's read model (services without one have none)."""
    return [s.read_model for s in SERVICES if s.read_model is not None]


def all_builds() -> list[Builder]:
    """Every service's builder, in start order."""
    return [service.build for service in SERVICES]


@asynccontextmanager
async def wired_all(settings: Settings, nc: NATS, pool: asyncpg.Pool,
                    events: EventStore) -> AsyncIterator[tuple[Settings, dict[str, Wiring]]]:
    """Every service on the test's servers; yields the settings they run with and each
    one's wiring by name."""
    configured = service_settings(settings)
    async with AsyncExitStack() as stack:
        wirings = {service.name: await stack.enter_async_context(
            running(service.build, configured, nc, pool, events)) for service in SERVICES}
        yield configured, wirings


@asynccontextmanager
async def running_all(settings: Settings, nc: NATS, pool: asyncpg.Pool,
                      events: EventStore) -> AsyncIterator[Settings]:
    """Every service on the test's servers; yields the settings they run with."""
    async with wired_all(settings, nc, pool, events) as (configured, _):
        yield configured
