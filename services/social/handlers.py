"""social's handlers: decode → load → decide → append → reply."""

from __future__ import annotations

import logging
import unicodedata
from collections.abc import Callable
from typing import Any, NoReturn

import asyncpg
import msgspec

from contracts.errors import Unavailable
from contracts.identity import CONTEXT as IDENTITY
from contracts.identity import InvalidToken, MemberRegistered, account_key
from contracts.social import (
    AddFriend,
    AnySocialEvent,
    Friend,
    FriendChanged,
    FriendList,
    ListFriends,
    NoSuchMember,
    RemoveFriend,
    SocialClient,
    SocialEvent,
    friendship_subject,
    friendship_subjects,
    pair_id,
)
from contracts.subjects import event_subject
from runtime.commands import Command, Fold, Pipeline
from runtime.eventstore import EventStore, Outgoing
from runtime.projector import Projector
from runtime.service import Call, Endpoint
from runtime.tokens import Sessions
from services.social import domain, tables
from services.social.domain import Friendship

log = logging.getLogger("ledgershare.social")
_decoder = msgspec.json.Decoder(AnySocialEvent)
FRIENDSHIP: Fold[Friendship, SocialEvent] = Fold(_decoder, domain.evolve, Friendship())


class Social:
    """The social service's operations."""

    def __init__(self, events: EventStore, commands: Pipeline, pool: asyncpg.Pool,
                 projector: Projector, sessions: Sessions, *, schema: str = "social") -> None:
        self.events = events
        self.commands = commands
        self.pool = pool
        self.projector = projector
        self.sessions = sessions
        self.schema = schema

    def endpoints(self) -> list[Endpoint[Any, Any]]:
        """Every operation of the service, each with its handler."""
        return [
                Endpoint(SocialClient.add_friend, self.add_friend),
                Endpoint(SocialClient.remove_friend, self.remove_friend),
                Endpoint(SocialClient.list_friends, self.list_friends),
        ]

    async def _caller(self, session: str, call: Call, seq: int) -> str:
        """The session's member (checked as every service checks a session), once social's
        directory has reached ``seq`` and holds them."""
        member_id = await self.sessions.member(session, now=call.received_at)
        await self.projector.check_serving()
        if seq:
            await self.projector.wait_until(seq)
        if await tables.member(self.pool, self.schema, member_id) is None:
            # Registered a moment ago: catch up with the log once before refusing.
            await self.projector.wait_until(await self.events.last_sequence())
            if await tables.member(self.pool, self.schema, member_id) is None:
                await self._not_in_directory(member_id)
        return member_id

    async def _not_in_directory(self, member_id: str) -> NoReturn:
        # A genuine session names a member the log registered. Only the log can say that
        # member is not there (a session signed for another log); a directory that lacks
        # them has lost its way, and a member must not be sent back to log in for that.
        registered = event_subject(IDENTITY, "member", member_id, MemberRegistered.__name__)
        if await self.events.last_event_on(registered) is None:
            raise InvalidToken("the token is no longer valid; log in again")
        log.error("social's directory lacks member %s, whom the log registered", member_id)
        raise Unavailable("social's member directory is not up to date; try again")

    async def _change(self, operation: str, req: AddFriend | RemoveFriend, call: Call,
                      me: str, friend: asyncpg.Record,
                      decide: Callable[[Friendship], SocialEvent]) -> FriendChanged:
        """Run one friendship command through the pipeline."""
        fid = pair_id(me, friend["member_id"])

        async def body(cmd: Command) -> FriendChanged:
            step = await self.commands.step(cmd, friendship_subjects(fid), FRIENDSHIP, lambda s: [
                Outgoing(subject=friendship_subject(fid, e), event=e) for e in [decide(s)]])
            return _changed(friend, step.seq)

        return await self.commands.run(operation, req, caller=me,
                                       correlation_id=call.correlation_id,
                                       client_address=call.client_address, body=body)

    async def add_friend(self, req: AddFriend, call: Call) -> FriendChanged:
        me = await self._caller(req.session, call, req.seq)
        friend = await tables.member_by_account(self.pool, self.schema, account_key(req.account))
        nickname = unicodedata.normalize("NFC", req.nickname).strip()
        if friend is None or friend["nickname"] != nickname:
            raise NoSuchMember("no member with that account and nickname")
        return await self._change("add_friend", req, call, me, friend, lambda state: (
            domain.decide_add(state, member_id=me, friend_id=friend["member_id"],
                              friend_nickname=friend["nickname"], at=call.received_at)))

    async def remove_friend(self, req: RemoveFriend, call: Call) -> FriendChanged:
        me = await self._caller(req.session, call, req.seq)
        friend = await tables.member_by_account(self.pool, self.schema, account_key(req.account))
        if friend is None:
            raise NoSuchMember("no member with that account")
        return await self._change("remove_friend", req, call, me, friend, lambda state: (
            domain.decide_remove(state, member_id=me,
                                 friend_id=friend["member_id"], at=call.received_at)))

    async def list_friends(self, req: ListFriends, call: Call) -> FriendList:
        me = await self._caller(req.session, call, req.seq)
        rows = await tables.friends_of(self.pool, self.schema, me)
        return FriendList(friends=[
            Friend(member_id=r["member_id"], account=r["account"], nickname=r["nickname"],
                   since=r["since"]) for r in rows])


def _changed(friend: asyncpg.Record, seq: int) -> FriendChanged:
    return FriendChanged(friend_id=friend["member_id"], account=friend["account"],
                         nickname=friend["nickname"], seq=seq)
