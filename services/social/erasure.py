"""social's erasure policy: an erased member's friendships and agency places all end.

On ``MemberErased`` each friendship the member still has gets its ``FriendRemoved`` (the
erased member as the one who ended it), so sharing's unfriend policy ends every share
between them, both ways. Each agency they administer closes; from any other they are
removed (reason ``erased``), so sharing ends the access it gave at once. The friends and
places are read from social's own read model once it has reached the erasure; each
removal is decided on its aggregate's events, so a redelivery adds none twice.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import asyncpg
import msgspec

from contracts.agency import agency_subject, agency_subjects
from contracts.agency_state import AgencyState
from contracts.identity import ERASURES, AnyIdentityEvent, MemberErased
from contracts.social import FriendRemoved, friendship_subject, friendship_subjects, pair_id
from runtime.commands import Command, Pipeline
from runtime.eventstore import Outgoing, StoredEvent
from runtime.policies import persist
from runtime.projector import Projector
from services.social import domain, tables
from services.social.agencies import AGENCY
from services.social.domain import Friendship
from services.social.handlers import FRIENDSHIP

_decoder = msgspec.json.Decoder(AnyIdentityEvent)


class ErasurePolicy:
    """On MemberErased: FriendRemoved for each of the member's friendships."""

    name = "erasure_policy"
    subjects: Sequence[str] = (ERASURES,)

    def __init__(self, commands: Pipeline, directory: Projector) -> None:
        self.commands = commands
        self.directory = directory

    async def setup(self, conn: asyncpg.Connection, schema: str) -> None:
        """No tables: the policy keeps only its checkpoint."""

    async def apply(self, conn: asyncpg.Connection, schema: str, event: StoredEvent) -> None:
        erased = _decoder.decode(event.data)
        if isinstance(erased, MemberErased):
            await persist(lambda: self._unfriend_all(erased, event.seq),
                          what="social erasure policy")

    async def _unfriend_all(self, erased: MemberErased, seq: int) -> None:
        await self.directory.wait_until(seq)
        me = erased.member_id
        for friend in await tables.friend_ids(self.directory.pool, self.directory.schema, me):
            cmd = self.commands.internal(f"erase-{me}-{friend}", actor=me,
                                         correlation_id=f"erasure-{uuid.uuid4().hex}")
            await self._unfriend(cmd, erased, friend)
        for place in await tables.places_of(self.directory.pool, self.directory.schema, me):
            aid = place["agency_id"]
            cmd = self.commands.internal(f"erase-{me}-agency-{aid}", actor=me,
                                         correlation_id=f"erasure-{uuid.uuid4().hex}")
            await self._leave_agency(cmd, erased, aid)

    async def _leave_agency(self, cmd: Command, erased: MemberErased, aid: str) -> None:
        def decide(state: AgencyState) -> list[Outgoing]:
            return [Outgoing(subject=agency_subject(aid, e), event=e)
                    for e in domain.decide_erased(state, agency_id=aid,
                                                  member_id=erased.member_id, at=erased.at)]

        await self.commands.step(cmd, agency_subjects(aid), AGENCY, decide)

    async def _unfriend(self, cmd: Command, erased: MemberErased, friend: str) -> None:
        fid = pair_id(erased.member_id, friend)

        def decide(state: Friendship) -> list[Outgoing]:
            if not state.active:
                return []
            removed = FriendRemoved(friendship_id=fid, member_id=erased.member_id,
                                    friend_id=friend, at=erased.at)
            return [Outgoing(subject=friendship_subject(fid, removed), event=removed)]

        await self.commands.step(cmd, friendship_subjects(fid), FRIENDSHIP, decide)
