"""Argon2id hashing off the event loop (argon2-cffi: a vetted, constant-time implementation)."""

from __future__ import annotations

import asyncio

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

# OWASP's minimum Argon2id settings (Password Storage Cheat Sheet): memory (KiB) with at
# least that many passes, one lane. Any stronger pairing is fine.
OWASP_MINIMUMS = ((47104, 1), (19456, 2), (12288, 3), (9216, 4), (7168, 5))


def weaker_than_owasp(*, time_cost: int, memory_kib: int) -> bool:
    """Whether these Argon2id costs fall below every one of OWASP's minimum settings."""
    return not any(memory_kib >= m and time_cost >= t for m, t in OWASP_MINIMUMS)


class Hasher:
    """Hashes and verifies secrets in a worker thread; a hash carries its own cost."""

    def __init__(self, *, time_cost: int = 3, memory_kib: int = 65536,
                 parallelism: int = 4) -> None:
        self._ph = PasswordHasher(time_cost=time_cost, memory_cost=memory_kib,
                                  parallelism=parallelism)
        # Verified when the member is unknown, so that answers take as long as for a
        # known member with a wrong password.
        self._dummy = self._ph.hash("ledgershare-no-such-member")

    async def hash(self, secret: str) -> str:
        """An Argon2id hash of the secret."""
        return await asyncio.to_thread(self._ph.hash, secret)

    def needs_rehash(self, hashed: str) -> bool:
        """Whether ``hashed`` was made with other costs than this hasher's."""
        try:
            return self._ph.check_needs_rehash(hashed)
        except InvalidHashError:
            return False

    async def verify(self, hashed: str | None, secret: str) -> bool:
        """True when the secret matches; an absent hash costs the same and is False."""
        return await asyncio.to_thread(self._check, hashed, secret)

    def _check(self, hashed: str | None, secret: str) -> bool:
        try:
            return self._ph.verify(hashed or self._dummy, secret) and hashed is not None
        except (VerificationError, InvalidHashError):
            return False
