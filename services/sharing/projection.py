"""sharing's projections.

`AccessProjection` keeps who can see and write which (owner, set, year) from sharing's
own events plus social's (friendships), storage's (which set-years exist, versions) and
identity's (names). `UnfriendPolicy` turns social's FriendRemoved into ShareRevoked events
(idempotent commands, so a replay after a crash changes nothing).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime

import asyncpg
import msgspec

from contracts import identity, sharing, social, storage
from contracts.subjects import context_subjects, split_event_subject
from runtime.eventstore import StoredEvent
from services.sharing import store

_sharing = msgspec.json.Decoder(sharing.AnySharingEvent)
_social = msgspec.json.Decoder(social.AnySocialEvent)
_storage = msgspec.json.Decoder(storage.AnyStorageEvent)
_identity = msgspec.json.Decoder(identity.AnyIdentityEvent)


class AccessProjection:
    name = "access"
    subjects: Sequence[str] = (
        context_subjects(sharing.CONTEXT),
        context_subjects(social.CONTEXT),
        context_subjects(storage.CONTEXT, "drive"),
        context_subjects(identity.CONTEXT, "member"),
    )

    async def setup(self, conn: asyncpg.Connection, schema: str) -> None:
        await store.create_tables(conn, schema)

    async def apply(self, conn: asyncpg.Connection, schema: str, event: StoredEvent) -> None:
        match split_event_subject(event.subject)[0]:
            case sharing.CONTEXT:
                await self._share(conn, schema, _sharing.decode(event.data))
            case social.CONTEXT:
                await self._friend(conn, schema, _social.decode(event.data))
            case storage.CONTEXT:
                await self._backup(conn, schema, _storage.decode(event.data))
            case _:
                await self._member(conn, schema, _identity.decode(event.data))

    async def _share(self, conn: asyncpg.Connection, schema: str,
                     event: sharing.SharingEvent) -> None:
        match event:
            case sharing.ShareGranted():
                await store.grant(conn, schema, event)
            case sharing.ShareRevoked(owner_id=o, set_id=s, friend_id=f, at=at):
                await store.revoke(conn, schema, o, s, f, at)

    async def _friend(self, conn: asyncpg.Connection, schema: str,
                      event: social.SocialEvent) -> None:
        match event:
            case social.FriendAdded(member_id=a, friend_id=b):
                await store.befriend(conn, schema, a, b)
            case social.FriendRemoved(member_id=a, friend_id=b, at=at):
                await store.unfriend(conn, schema, a, b, at)

    async def _backup(self, conn: asyncpg.Connection, schema: str,
                      event: storage.StorageEvent) -> None:
        match event:
            case storage.BackupUploaded():
                await store.add_backup(conn, schema, event)
            case storage.VersionDeleted(version_id=vid):
                await store.delete_backup(conn, schema, vid)
            case _:
                pass

    async def _member(self, conn: asyncpg.Connection, schema: str,
                      event: identity.IdentityEvent) -> None:
        match event:
            case identity.MemberRegistered(member_id=mid, account=acc, nickname=nick):
                await store.add_member(conn, schema, mid, acc, identity.account_key(acc), nick)
            case identity.NicknameChanged(member_id=mid, nickname=nick):
                await store.set_nickname(conn, schema, mid, nick)
            case _:
                pass


Revoker = Callable[[str, str, str, str], Awaitable[None]]


class UnfriendPolicy:
    """On FriendRemoved: revoke every share between the two, both directions."""

    name = "unfriend_policy"
    subjects: Sequence[str] = ("evt.social.friendship.*.FriendRemoved",)

    def __init__(self, revoke: Revoker,
                 shares_between: Callable[[str, str, int], Awaitable[list[str]]]) -> None:
        self.revoke = revoke
        self.shares_between = shares_between

    async def setup(self, conn: asyncpg.Connection, schema: str) -> None:
        pass

    async def apply(self, conn: asyncpg.Connection, schema: str, event: StoredEvent) -> None:
        removed = _social.decode(event.data)
        if not isinstance(removed, social.FriendRemoved):
            return
        for owner, friend in ((removed.member_id, removed.friend_id),
                              (removed.friend_id, removed.member_id)):
            for set_id in await self.shares_between(owner, friend, event.seq):
                await self.revoke(owner, set_id, friend, f"unfriend-{event.seq}")


class GrantTerms(msgspec.Struct, frozen=True):
    scope: str
    years: list[int] | None
    expires_at: datetime | None


class AccessIndex:
    """In memory: every grant and friendship, so a check needs no query.

    The access projector keeps it (runtime.projector.Mirror): loaded from the grants and
    friends tables when it takes the lead, then following each committed batch, so after
    `wait_until(token)` it answers as the tables would.
    """

    def __init__(self) -> None:
        self.grants: dict[tuple[str, str, str], GrantTerms] = {}
        self.friends: set[tuple[str, str]] = set()

    async def reload(self, conn: asyncpg.Connection, schema: str) -> None:
        grants = await conn.fetch(f"SELECT owner_id, set_id, friend_id, scope, years, "
                                  f"expires_at FROM {schema}.grants")
        friends = await conn.fetch(f"SELECT member_id, friend_id FROM {schema}.friends")
        self.grants = {(g["owner_id"], g["set_id"], g["friend_id"]): GrantTerms(
            g["scope"], g["years"], g["expires_at"]) for g in grants}
        self.friends = {(f["member_id"], f["friend_id"]) for f in friends}

    def applied(self, events: list[StoredEvent]) -> None:
        for event in events:
            match split_event_subject(event.subject)[0]:
                case sharing.CONTEXT:
                    self._share(event)
                case social.CONTEXT:
                    self._friend(event)

    def _share(self, stored: StoredEvent) -> None:
        try:
            event = _sharing.decode(stored.data)
        except msgspec.DecodeError:
            return  # parked as a dead letter by the projection too
        match event:
            case sharing.ShareGranted(owner_id=o, set_id=s, friend_id=f):
                self.grants[(o, s, f)] = GrantTerms(event.scope, event.years, event.expires_at)
            case sharing.ShareRevoked(owner_id=o, set_id=s, friend_id=f):
                self.grants.pop((o, s, f), None)

    def _friend(self, stored: StoredEvent) -> None:
        try:
            event = _social.decode(stored.data)
        except msgspec.DecodeError:
            return
        match event:
            case social.FriendAdded(member_id=a, friend_id=b):
                self.friends |= {(a, b), (b, a)}
            case social.FriendRemoved(member_id=a, friend_id=b):
                self.friends -= {(a, b), (b, a)}

    def lookup(self, member_id: str, owner_id: str, set_id: str) -> GrantTerms | None:
        """The grant of (owner, set) to member, only while the two are friends."""
        if (owner_id, member_id) not in self.friends:
            return None
        return self.grants.get((owner_id, set_id, member_id))
