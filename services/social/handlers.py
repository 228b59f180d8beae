"""social's handlers: decode → load → decide → append → reply."""

from __future__ import annotations

import unicodedata

import asyncpg
import msgspec

from contracts.identity import InvalidToken, account_key
from contracts.social import (
    AddFriend,
    AnySocialEvent,
    Friend,
    FriendChanged,
    FriendList,
    ListFriends,
    NoSuchMember,
    RemoveFriend,
    SocialEvent,
    friendship_scope,
    friendship_subject,
    pair_id,
)
from runtime.eventstore import EventStore, Outgoing, with_retry
from runtime.projector import Projector
from runtime.service import Call, Endpoint
from runtime.tokens import Verifier
from services.social import domain, store
from services.social.domain import Friendship

_decoder = msgspec.json.Decoder(AnySocialEvent)


class Social:
    """The social service's operations."""

    def __init__(self, events: EventStore, pool: asyncpg.Pool, projector: Projector,
                 verifier: Verifier, *, schema: str = "social") -> None:
        self.events = events
        self.pool = pool
        self.projector = projector
        self.verifier = verifier
        self.schema = schema

    def endpoints(self) -> list[Endpoint]:
        return [Endpoint("add_friend", AddFriend, self.add_friend),
                Endpoint("remove_friend", RemoveFriend, self.remove_friend),
                Endpoint("list_friends", ListFriends, self.list_friends)]

    async def _caller(self, session: str, call: Call, token: int) -> asyncpg.Record:
        """The session's member from social's directory, after reaching ``token``."""
        claims = self.verifier.verify(session, kind="session", now=call.received_at)
        if token:
            await self.projector.wait_until(token)
        row = await store.member(self.pool, self.schema, claims.sub)
        if row is None:
            # Registered a moment ago: catch up with the log once before refusing.
            await self.projector.wait_until(await self.events.last_sequence())
            row = await store.member(self.pool, self.schema, claims.sub)
        if row is None or row["password_version"] != claims.pv:
            raise InvalidToken("the token is no longer valid; log in again")
        return row

    async def _friendship(self, friendship_id: str) -> tuple[Friendship, int]:
        return await self.events.state(friendship_scope(friendship_id), _decoder,
                                       domain.evolve, domain.Friendship())

    async def _append(self, event: SocialEvent, friendship_id: str, seq: int, msg_id: str,
                      call: Call, actor: str) -> int:
        out = Outgoing(subject=friendship_subject(friendship_id, event), event=event)
        return await self.events.append(friendship_scope(friendship_id), [out], expected=seq,
                                        msg_id=msg_id, meta=call.meta(msg_id, actor))

    async def add_friend(self, req: AddFriend, call: Call) -> FriendChanged:
        me = await self._caller(req.session, call, req.token)
        friend = await store.member_by_account(self.pool, self.schema, account_key(req.account))
        nickname = unicodedata.normalize("NFC", req.nickname).strip()
        if friend is None or friend["nickname"] != nickname:
            raise NoSuchMember("no member with that account and nickname")
        fid = pair_id(me["member_id"], friend["member_id"])

        async def attempt() -> FriendChanged:
            state, seq = await self._friendship(fid)
            event = domain.decide_add(state, member_id=me["member_id"],
                                      friend_id=friend["member_id"],
                                      friend_nickname=friend["nickname"], at=call.received_at)
            token = await self._append(event, fid, seq, req.command_id, call, me["member_id"])
            return _changed(friend, token)

        return await with_retry(attempt)

    async def remove_friend(self, req: RemoveFriend, call: Call) -> FriendChanged:
        me = await self._caller(req.session, call, req.token)
        friend = await store.member_by_account(self.pool, self.schema, account_key(req.account))
        if friend is None:
            raise NoSuchMember("no member with that account")
        fid = pair_id(me["member_id"], friend["member_id"])

        async def attempt() -> FriendChanged:
            state, seq = await self._friendship(fid)
            event = domain.decide_remove(state, member_id=me["member_id"],
                                         friend_id=friend["member_id"], at=call.received_at)
            token = await self._append(event, fid, seq, req.command_id, call, me["member_id"])
            return _changed(friend, token)

        return await with_retry(attempt)

    async def list_friends(self, req: ListFriends, call: Call) -> FriendList:
        me = await self._caller(req.session, call, req.token)
        rows = await store.friends_of(self.pool, self.schema, me["member_id"])
        return FriendList(friends=[
            Friend(member_id=r["member_id"], account=r["account"], nickname=r["nickname"],
                   since=r["since"]) for r in rows])


def _changed(friend: asyncpg.Record, token: int) -> FriendChanged:
    return FriendChanged(friend_id=friend["member_id"], account=friend["account"],
                         nickname=friend["nickname"], token=token)
