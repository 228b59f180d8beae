"""storage's gate to the sharing service: may this member use this set-year?"""

from __future__ import annotations

import logging

from nats.aio.client import Client as NATS
from nats.errors import NoRespondersError

from contracts.errors import Unavailable
from contracts.sharing import Check, SharingClient
from services.storage.handlers import Ask

log = logging.getLogger("ledgershare.storage")


class SharingGate:
    """Asks `sharing.check`, passing the caller's consistency token; fails closed."""

    def __init__(self, nc: NATS, timeout: float) -> None:
        self.client = SharingClient(nc, timeout=timeout)

    async def allows(self, member_id: str, owner_id: str, ask: Ask) -> bool:
        verdict = await self.client.check(Check(
            member_id=member_id, owner_id=owner_id, set_id=ask.set_id, year=ask.year,
            access="write" if ask.access == "write" else "read", seq=ask.seq))
        return verdict.allowed

    async def owner_allows(self, owner_id: str, ask: Ask) -> bool:
        """An owner keeps their own drive unless an agency handed the set over. With no
        sharing service running at all, owners keep working (a non-owner is refused):
        a handover is only enforced while sharing runs; see docs/security.md."""
        try:
            return await self.allows(owner_id, owner_id, ask)
        except Unavailable as err:
            if isinstance(err.__cause__, NoRespondersError):
                log.warning("no sharing service: the owner's own access is not checked")
                return True
            raise
