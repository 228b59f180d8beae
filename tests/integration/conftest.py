"""Fixtures several integration modules share."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest
from nats.aio.client import Client as NATS

from contracts.identity import IdentityClient
from runtime.app import Wiring
from runtime.eventstore import EventStore
from runtime.settings import Settings
from services.registry import named
from tests.services import running, service_settings


@pytest.fixture
async def identity(settings: Settings, nc: NATS, pool: asyncpg.Pool,
                   events: EventStore) -> AsyncIterator[Wiring]:
    """The identity service alone, on the test's servers."""
    async with running(named("identity").build, service_settings(settings), nc, pool,
                       events) as wiring:
        yield wiring


@pytest.fixture
def identity_client(nc: NATS, identity: Wiring) -> IdentityClient:
    return IdentityClient(nc, timeout=10)


@pytest.fixture
def nc_all(all_services: Settings, nc: NATS) -> NATS:
    """A connection, with every service running."""
    return nc
