"""Argon2id hashing off the event loop (argon2-cffi: a vetted, constant-time implementation)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from contracts.errors import Unavailable

T = TypeVar("T")

# OWASP's minimum Argon2id settings (Password Storage Cheat Sheet): memory (KiB) with at
# least that many passes, one lane. Any stronger pairing is fine.
OWASP_MINIMUMS = ((47104, 1), (19456, 2), (12288, 3), (9216, 4), (7168, 5))


def weaker_than_owasp(*, time_cost: int, memory_kib: int) -> bool:
    """Whether these Argon2id costs fall below every one of OWASP's minimum settings."""
    return not any(memory_kib >= m and time_cost >= t for m, t in OWASP_MINIMUMS)


class Hasher:
    """Hashes and verifies secrets on its own few worker threads, never the event loop's
    shared executor: a flood of registrations or logins queues here (up to ``queue``
    waiting, then refused at once as `unavailable`, which a client retries) and holds up
    no other request. A hash carries its own cost."""

    def __init__(self, *, time_cost: int = 3, memory_kib: int = 65536,
                 parallelism: int = 4, workers: int = 2, queue: int = 64) -> None:
        self._ph = PasswordHasher(time_cost=time_cost, memory_cost=memory_kib,
                                  parallelism=parallelism)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="argon2")
        self._admitted = 0
        self._limit = workers + queue
        # Verified when the member is unknown, so that answers take as long as for a
        # known member with a wrong password.
        self._dummy = self._ph.hash("ledgershare-no-such-member")

    async def hash(self, secret: str) -> str:
        """An Argon2id hash of the secret."""
        return await self._run(self._ph.hash, secret)

    def needs_rehash(self, hashed: str) -> bool:
        """Whether ``hashed`` was made with other costs than this hasher's."""
        try:
            return self._ph.check_needs_rehash(hashed)
        except InvalidHashError:
            return False

    async def verify(self, hashed: str | None, secret: str) -> bool:
        """True when the secret matches; an absent hash costs the same and is False."""
        return await self._run(self._check, hashed, secret)

    async def _run(self, work: Callable[..., T], *args: Any) -> T:
        if self._admitted >= self._limit:
            raise Unavailable("too many password checks at once; try again in a moment")
        self._admitted += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, work, *args)
        finally:
            self._admitted -= 1

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _check(self, hashed: str | None, secret: str) -> bool:
        try:
            return self._ph.verify(hashed or self._dummy, secret) and hashed is not None
        except (VerificationError, InvalidHashError):
            return False
