"""storage's erasure policy: an erased member's drive is emptied.

On ``MemberErased`` every version in the member's drive is deleted and every open upload
aborted (events in the log, as the member deleting them would leave), and the objects
are removed from S3. Versions the member uploaded into a friend's drive stay: they are
the friend's files (the remark the member wrote on them no longer opens). A failure
hands the event back to the projector, which delivers it again; a repeat finds the
drive already empty.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import asyncpg
import msgspec

from contracts.identity import ERASURES, AnyIdentityEvent, MemberErased
from runtime.eventstore import StoredEvent
from runtime.policies import persist
from services.storage.handlers import Storage

_decoder = msgspec.json.Decoder(AnyIdentityEvent)


class ErasurePolicy:
    """On MemberErased: the member's drive emptied (`Storage.empty`)."""

    name = "erasure_policy"
    subjects: Sequence[str] = (ERASURES,)

    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    async def setup(self, conn: asyncpg.Connection, schema: str) -> None:
        """No tables: the policy keeps only its checkpoint."""

    async def apply(self, conn: asyncpg.Connection, schema: str, event: StoredEvent) -> None:
        erased = _decoder.decode(event.data)
        if isinstance(erased, MemberErased):
            correlation = f"erasure-{uuid.uuid4().hex}"
            await persist(lambda: self.storage.empty(erased.member_id, erased.at, correlation),
                          what="storage erasure policy")
