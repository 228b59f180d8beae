"""A flood of registrations (each an Argon2 hash) is bounded inside identity: the password
work has its own threads and a short queue, past which a request is refused at once as
`unavailable`; identity's cheap answers and the refused commands' retries still work."""

from __future__ import annotations

import asyncio

import asyncpg
from nats.aio.client import Client as NATS

from contracts.errors import Unavailable
from contracts.identity import IdentityClient, Me, PublicKeyRequest, Register
from runtime.eventstore import EventStore
from runtime.settings import Settings
from services.registry import named
from tests.helpers import cid, join
from tests.services import running, service_settings


async def test_a_registration_flood_is_refused_past_a_short_queue_and_blocks_nothing_else(
        settings: Settings, nc: NATS, pool: asyncpg.Pool, events: EventStore) -> None:
    slow = service_settings(settings).with_overrides(
        argon2_time_cost=2, argon2_memory_kib=19456, argon2_workers=1, argon2_queue=2,
        request_timeout_s=20.0)
    async with running(named("identity").build, slow, nc, pool, events):
        identity = IdentityClient(nc, timeout=30.0)
        member = await join(identity, "13800000401")
        asks = [Register(command_id=cid(), account=f"flood{n:03d}", password="secret-1",
                         nickname="F") for n in range(24)]
        flood = asyncio.gather(*(identity.register(a) for a in asks),
                               return_exceptions=True)
        await asyncio.sleep(0.05)
        # While the flood is hashing, the cheap answers do not wait behind it.
        assert (await identity.public_key(PublicKeyRequest())).key
        assert (await identity.me(Me(session=member.session))).account == "13800000401"
        outcomes = await flood
        refused = [a for a, o in zip(asks, outcomes, strict=True) if isinstance(o, Unavailable)]
        done = [o for o in outcomes if not isinstance(o, BaseException)]
        assert refused and done
        assert all(isinstance(o, Unavailable) for o in outcomes if isinstance(o, BaseException))
        # A refused registration changed nothing: retried under its id, it registers.
        again = await identity.register(refused[0])
        assert again.member_id
