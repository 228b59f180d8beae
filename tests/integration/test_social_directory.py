"""social's own copy of the member directory decides nothing about a session: a member it
lacks is `unavailable` (the client retries), and only the log can say a session names no
member at all."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from nats.aio.client import Client as NATS

from contracts.errors import Unavailable
from contracts.identity import IdentityClient, InvalidToken
from contracts.social import ListFriends, SocialClient
from runtime.eventstore import EventStore
from runtime.settings import Settings
from runtime.tokens import Signer
from services.identity.service import build as build_identity
from services.social.service import build as build_social
from tests.helpers import join
from tests.services import running, service_settings


@pytest.fixture
async def configured(settings: Settings, nc: NATS, pool: asyncpg.Pool,
                     events: EventStore) -> AsyncIterator[Settings]:
    """identity and social running; the settings they run with (their signing key)."""
    configured = service_settings(settings)
    async with running(build_identity, configured, nc, pool, events), \
            running(build_social, configured, nc, pool, events):
        yield configured


async def test_a_member_missing_from_the_directory_is_unavailable_not_logged_out(
        configured: Settings, nc: NATS, pool: asyncpg.Pool) -> None:
    social = SocialClient(nc, timeout=10)
    alice = await join(IdentityClient(nc, timeout=10), "alice", "Alice")
    await social.list_friends(ListFriends(session=alice.session, seq=alice.seq))
    # A directory that lost the registration (what two leaders splitting one cursor did).
    await pool.execute("DELETE FROM social.directory WHERE member_id = $1", alice.member_id)
    with pytest.raises(Unavailable):
        await social.list_friends(ListFriends(session=alice.session))


async def test_a_session_naming_a_member_the_log_never_had_is_invalid(
        configured: Settings, nc: NATS) -> None:
    # Signed with the right key (the key kept, the log wiped): genuine, yet nobody's.
    session, _ = Signer(configured.token_private_key).issue(
        member_id=str(uuid.uuid4()), kind="session", now=datetime.now(UTC),
        ttl=timedelta(hours=1), pv=0)
    with pytest.raises(InvalidToken):
        await SocialClient(nc, timeout=10).list_friends(ListFriends(session=session))
