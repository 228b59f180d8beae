"""Run the sharing service: ``python -m services.sharing``."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from runtime.app import Resources, Wiring, main
from runtime.projector import Projector
from runtime.service import Call, ServiceHost
from runtime.tokens import Sessions, Verifier, configured_public_key
from services.sharing import store
from services.sharing.handlers import Sharing
from services.sharing.projection import AccessIndex, AccessProjection, UnfriendPolicy

VERSION = "0.1.0"
SCHEMA = "sharing"


async def build(res: Resources) -> Wiring:
    """sharing's host, its access projection and the unfriend policy."""
    index = AccessIndex()
    access = Projector(res.nc, res.pool, AccessProjection(), schema=SCHEMA,
                       stream=res.settings.stream, mirror=index)
    sharing = Sharing(res.store, res.pool, access,
                      Sessions(Verifier(configured_public_key(res.settings)), res.store),
                      schema=SCHEMA, index=index)

    async def shares_between(owner: str, friend: str, seq: int) -> list[str]:
        await access.wait_until(seq, within=30)
        return await store.grants_between(res.pool, SCHEMA, owner, friend)

    async def revoke(owner: str, set_id: str, friend: str, msg_id: str) -> None:
        call = Call(correlation_id=f"policy-{uuid.uuid4().hex}", received_at=datetime.now(UTC),
                    headers={})
        await sharing.revoke_for(owner, set_id, friend, msg_id, call, reason="unfriended")

    policy = Projector(res.nc, res.pool, UnfriendPolicy(revoke, shares_between), schema=SCHEMA,
                       stream=res.settings.stream)
    host = ServiceHost(res.nc, name="sharing", version=VERSION,
                       description="grants, revocations and who may see which account-set year",
                       endpoints=sharing.endpoints(), max_in_flight=res.settings.max_in_flight)
    return Wiring(host=host, projectors=[access, policy], app=sharing)


if __name__ == "__main__":
    main(build)
