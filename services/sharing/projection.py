"""sharing's projections.

`AccessProjection` keeps who can see and write which (owner, set, year) from sharing's
own events plus social's (friendships), storage's (which set-years exist, versions) and
identity's (names). `UnfriendPolicy` turns social's FriendRemoved into ShareRevoked events
(idempotent commands, so a replay after a crash changes nothing).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

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
