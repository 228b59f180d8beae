"""identity's secrets, kept out of the log: hashing, storing and checking credentials.

A member's folded state names each secret by a reference (`domain.Member.password`,
``drive``, ``recovery``); here a reference becomes a hash to check. A reference from an
event written before the store (``log:<hash>``) is the hash itself.
"""

from __future__ import annotations

import logging
import uuid

import asyncpg

from runtime.passwords import Hasher
from services.identity import tables
from services.identity.domain import LEGACY, Member
from services.identity.tables import Credential, Kind

_IDS = uuid.UUID("0c9a4d56-3f0e-4c1b-8f3a-2e61c4b7d9a0")
log = logging.getLogger("ledgershare.identity")


def credential_id(command_key: str, kind: Kind) -> str:
    """The id of the credential a command stores: the same for a repeat of the command."""
    return uuid.uuid5(_IDS, f"{command_key}:{kind}").hex


class Vault:
    """Hashes secrets, stores them, and checks a secret against a reference."""

    def __init__(self, pool: asyncpg.Pool, hasher: Hasher) -> None:
        self.pool = pool
        self.hasher = hasher

    async def close(self) -> None:
        self.hasher.close()

    async def keep(self, command_key: str, member_id: str, kind: Kind, secret: str, *,
                   question: str = "") -> str:
        """Hash and store ``secret``; the reference the command's event names."""
        cid = credential_id(command_key, kind)
        await tables.put(self.pool, Credential(
            credential_id=cid, member_id=member_id, kind=kind,
            secret_hash=await self.hasher.hash(secret), question=question))
        return cid

    async def check(self, reference: str | None, secret: str) -> bool:
        """Whether ``secret`` matches the referenced credential (an absent one costs the
        same and is False). A match hashed with weaker parameters than today's is
        re-hashed in place: the reference, and so the log, do not change."""
        stored = await self._hash(reference)
        ok = await self.hasher.verify(stored, secret)
        if ok and stored is not None and reference and self.hasher.needs_rehash(stored):
            await self._upgrade(reference, stored, secret)
        return ok

    async def forget(self, member_id: str) -> None:
        """Drop every secret of an erased member."""
        await tables.forget(self.pool, member_id)

    async def question(self, member: Member) -> str:
        """The member's security question."""
        if not member.recovery or member.recovery.startswith(LEGACY):
            return member.question
        found = await tables.get(self.pool, member.recovery)
        return found.question if found else ""

    async def _hash(self, reference: str | None) -> str | None:
        if not reference:
            return None
        if reference.startswith(LEGACY):
            return reference.removeprefix(LEGACY)
        found = await tables.get(self.pool, reference)
        if found is None:
            log.error("credential %s is named in the log but not stored", reference)
        return None if found is None else found.secret_hash

    async def _upgrade(self, reference: str, stored: str, secret: str) -> None:
        if reference.startswith(LEGACY):
            return  # the hash is in an older event: it changes with the next password
        await tables.rehash(self.pool, reference, stored, await self.hasher.hash(secret))
