"""storage's gate to the sharing service: may a non-owner use this set-year?"""

from __future__ import annotations

from nats.aio.client import Client as NATS

from contracts.sharing import Check, SharingClient
from services.storage.handlers import Ask


class SharingGate:
    """Asks `sharing.check`, passing the caller's consistency token; fails closed."""

    def __init__(self, nc: NATS, timeout: float) -> None:
        self.client = SharingClient(nc, timeout=timeout)

    async def allows(self, member_id: str, owner_id: str, ask: Ask) -> bool:
        verdict = await self.client.check(Check(
            member_id=member_id, owner_id=owner_id, set_id=ask.set_id, year=ask.year,
            access="write" if ask.access == "write" else "read", seq=ask.seq))
        return verdict.allowed
