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

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import TypeVar

import asyncpg
import msgspec

from contracts import social
from contracts.errors import CommandReused, Conflict, LedgerError, Unavailable
from runtime.eventstore import StoredEvent
from runtime.projector import TRANSIENT, Redeliver
from runtime.service import translate

log = logging.getLogger("ledgershare.sharing.policy")
T = TypeVar("T")
EndedGrant = tuple[str, str, str]  # (owner, set, friend)
Ended = Callable[[social.FriendRemoved, int], Awaitable[list[EndedGrant]]]
Revoker = Callable[[str, str, str, str], Awaitable[None]]  # owner, set, friend, msg id
ATTEMPTS = 5
FIRST_PAUSE_S = 0.05  # doubling: 0.75 s in all before the event goes back

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
        """``step``, tried again after a transient failure with growing pauses; still
        failing, the event goes back to the projector (`Redeliver`), never to the dead
        letters."""
        failure: Exception | None = None
        for n in range(self.attempts):
            if failure is not None:
                await asyncio.sleep(self.first_pause * 2 ** (n - 1))
            try:
                return await step()
            except Exception as err:
                if not transient(err):
                    raise
                log.warning("unfriend policy: %r; trying again", err)
                failure = err
        raise Redeliver(f"{self.attempts} tries failed, the last with {failure!r}"
                        ) from failure


def revoke_id(seq: int, owner_id: str, set_id: str, friend_id: str) -> str:
    """The message id of one revoke an unfriending owes: its own per grant, the same on
    every delivery of the event."""
    text = "\x1f".join((str(seq), owner_id, set_id, friend_id))
    return f"unfriend-{hashlib.sha256(text.encode()).hexdigest()[:40]}"


def transient(err: Exception) -> bool:
    """Whether the same step may succeed later: a timeout, a part not answering, a read
    model behind, a concurrent append. A command id reused with other content never will."""
    if isinstance(err, CommandReused):
        return False
    typed = err if isinstance(err, LedgerError) else translate(err)
    return isinstance(typed, Unavailable | Conflict) or isinstance(err, TRANSIENT)
