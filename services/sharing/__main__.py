"""Run the sharing service: ``python -m services.sharing``."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from contracts.social import FriendRemoved
from runtime.app import Resources, Wiring, command_pipeline, main
from runtime.projector import Projector
from runtime.service import Call, ServiceHost
from runtime.tokens import Sessions, Verifier, configured_public_key
from services.sharing import store
from services.sharing.handlers import Sharing
from services.sharing.policy import EndedGrant, UnfriendPolicy
from services.sharing.projection import AccessIndex, AccessProjection

VERSION = "0.1.0"
SCHEMA = "sharing"


async def build(res: Resources) -> Wiring:
    """sharing's host, its access projection and the unfriend policy."""
    index = AccessIndex()
    access = Projector(res.nc, res.pool, AccessProjection(), schema=SCHEMA,
                       stream=res.settings.stream, mirror=index)
    sharing = Sharing(res.store, await command_pipeline(res, "sharing"), res.pool, access,
                      Sessions(Verifier(configured_public_key(res.settings)), res.store),
                      schema=SCHEMA, index=index)

    async def ended(removed: FriendRemoved, seq: int) -> list[EndedGrant]:
        await access.wait_until(seq, within=30)
        return await store.ended_by_unfriending(res.pool, SCHEMA, removed.member_id,
                                                removed.friend_id, removed.at)

    async def revoke(owner: str, set_id: str, friend: str, msg_id: str) -> None:
        call = Call(correlation_id=f"policy-{uuid.uuid4().hex}", received_at=datetime.now(UTC),
                    headers={})
        await sharing.revoke_for(owner, set_id, friend, msg_id, call, reason="unfriended")

    policy = Projector(res.nc, res.pool, UnfriendPolicy(revoke, ended), schema=SCHEMA,
                       stream=res.settings.stream)
    host = ServiceHost(res.nc, name="sharing", version=VERSION,
                       description="grants, revocations and who may see which account-set year",
                       endpoints=sharing.endpoints(), max_in_flight=res.settings.max_in_flight)
    return Wiring(host=host, projectors=[access, policy], app=sharing)


if __name__ == "__main__":
    main(build)
