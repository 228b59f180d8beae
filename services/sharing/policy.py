"""sharing's unfriend policy: every grant an unfriending ended gets its ShareRevoked.

Access never waits on this: the access projection ends every grant between the two on
FriendRemoved itself. The revokes bring each share's aggregate in line and leave the
audit trail (reason ``unfriended``). Each has an id of its own, derived from the
unfriending and the grant, so none is dropped as another's duplicate and a redelivered
event repeats its revokes rather than adding any. A transient failure is tried again here
a few times, then handed back to the projector, which delivers the event again: an
unfriending is never parked.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import TypeVar

import asyncpg
import msgspec

from contracts import social
from runtime.eventstore import StoredEvent
from runtime.policies import ATTEMPTS, FIRST_PAUSE_S, persist

T = TypeVar("T")
EndedGrant = tuple[str, str, str]  # (owner, set, friend)
Ended = Callable[[social.FriendRemoved, int], Awaitable[list[EndedGrant]]]
Revoker = Callable[[str, str, str, str], Awaitable[None]]  # owner, set, friend, msg id
_decoder = msgspec.json.Decoder(social.AnySocialEvent)


class UnfriendPolicy:
    """On FriendRemoved: a ShareRevoked(reason=unfriended) for each grant it ended."""

    name = "unfriend_policy"
    subjects: Sequence[str] = ("evt.social.friendship.*.FriendRemoved",)

    def __init__(self, revoke: Revoker, ended: Ended, *, attempts: int = ATTEMPTS,
                 first_pause: float = FIRST_PAUSE_S) -> None:
        self.revoke = revoke
        self.ended = ended  # the grants an unfriending (and its sequence) ended
        self.attempts = attempts
        self.first_pause = first_pause

    async def setup(self, conn: asyncpg.Connection, schema: str) -> None:
        """No tables: the policy keeps only its checkpoint."""

    async def apply(self, conn: asyncpg.Connection, schema: str, event: StoredEvent) -> None:
        removed = _decoder.decode(event.data)
        if not isinstance(removed, social.FriendRemoved):
            return
        for owner, set_id, friend in await self._persist(partial(self.ended, removed,
                                                                 event.seq)):
            msg_id = revoke_id(event.seq, owner, set_id, friend)
            await self._persist(partial(self.revoke, owner, set_id, friend, msg_id))

    async def _persist(self, step: Callable[[], Awaitable[T]]) -> T:
        return await persist(step, what="unfriend policy", attempts=self.attempts,
                             first_pause=self.first_pause)


def revoke_id(seq: int, owner_id: str, set_id: str, friend_id: str) -> str:
    """The message id of one revoke an unfriending owes: its own per grant, the same on
    every delivery of the event."""
    text = "\x1f".join((str(seq), owner_id, set_id, friend_id))
    return f"unfriend-{hashlib.sha256(text.encode()).hexdigest()[:40]}"
