"""social's projection: its own friendships plus a member directory from identity's events
(social never reads identity's tables)."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg
import msgspec

from contracts import agency, identity, social
from contracts.agency_state import AgencyState, evolve
from contracts.subjects import context_subjects
from runtime.eventstore import StoredEvent
from services.social import tables

_social = msgspec.json.Decoder(social.AnySocialEvent)
_identity = msgspec.json.Decoder(identity.AnyIdentityEvent)
_state = msgspec.json.Decoder(AgencyState)
_encode = msgspec.json.Encoder().encode


class SocialProjection:
    """directory(member_id, account, nickname), friends (both ways), and each agency's
    state with who has a place in it."""

    name = "social"
    subjects: Sequence[str] = (context_subjects(social.CONTEXT),
                               context_subjects(identity.CONTEXT, "member"))

    async def setup(self, conn: asyncpg.Connection, schema: str) -> None:
        await tables.create_tables(conn, schema)

    async def apply(self, conn: asyncpg.Connection, schema: str, event: StoredEvent) -> None:
        if event.subject.startswith(f"evt.{social.CONTEXT}."):
            await self._friendship(conn, schema, _social.decode(event.data))
        else:
            await self._directory(conn, schema, _identity.decode(event.data))

    async def _friendship(self, conn: asyncpg.Connection, schema: str,
                          event: social.SocialEvent | agency.AgencyEvent) -> None:
        match event:
            case social.FriendAdded(member_id=a, friend_id=b, at=at):
                await tables.befriend(conn, schema, a, b, at)
            case social.FriendRemoved(member_id=a, friend_id=b):
                await tables.unfriend(conn, schema, a, b)
            case agency.AgencyEvent():
                await self._agency(conn, schema, event)
            case _:
                pass

    async def _agency(self, conn: asyncpg.Connection, schema: str,
                      event: agency.AgencyEvent) -> None:
        stored = await tables.agency_state(conn, schema, event.agency_id)
        state = evolve(AgencyState() if stored is None else _state.decode(stored), event)
        places: list[tuple[str, str, bool]] = [(m, p.role, False) for m, p in state.members.items()]
        places += [(m, p.role, True) for m, p in state.invited.items()]
        await tables.put_agency(conn, schema, event.agency_id, _encode(state), places)

    async def _directory(self, conn: asyncpg.Connection, schema: str,
                         event: identity.IdentityEvent) -> None:
        match event:
            case identity.MemberRegistered(member_id=mid, account=acc, nickname=nick) if acc:
                await tables.add_member(conn, schema, member_id=mid, account=acc,
                                       account_key=identity.account_key(acc), nickname=nick)
            case identity.NicknameChanged(member_id=mid, nickname=nick):
                await tables.set_nickname(conn, schema, mid, nick)
            case identity.MemberErased(member_id=mid):
                # Gone from the directory; a registration whose names no longer open
                # (the key destroyed) is never added, so a rebuild ends the same.
                await tables.remove_member(conn, schema, mid)
            case _:
                pass
