"""The sharing service: its descriptor, and how it is wired from the shared connections."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from contracts.sharing import AnySharingEvent, SharingClient
from contracts.social import FriendRemoved
from runtime.app import ReadModel, Resources, Service, Wiring, command_pipeline
from runtime.projector import Projector
from runtime.service import Call
from runtime.tokens import Sessions, verifier_for
from services.sharing import tables
from services.sharing.handlers import Sharing
from services.sharing.index import AccessIndex
from services.sharing.policy import EndedGrant, UnfriendPolicy
from services.sharing.projection import AccessProjection

SCHEMA = "sharing"


async def build(res: Resources) -> Wiring:
    """sharing's host, its access projection and the unfriend policy."""
    index = AccessIndex()
    access = Projector(res.nc, res.pool, AccessProjection(), schema=SCHEMA,
                       stream=res.settings.stream, mirror=index)
    sharing = Sharing(res.events, await command_pipeline(res, "sharing"), res.pool, access,
                      Sessions(verifier_for(res.settings), res.events),
                      schema=SCHEMA, index=index)

    async def ended(removed: FriendRemoved, seq: int) -> list[EndedGrant]:
        await access.wait_until(seq, within=30)
        return await tables.ended_by_unfriending(res.pool, SCHEMA, removed.member_id,
                                                removed.friend_id, removed.at)

    async def revoke(owner: str, set_id: str, friend: str, msg_id: str) -> None:
        call = Call(correlation_id=f"policy-{uuid.uuid4().hex}", received_at=datetime.now(UTC),
                    headers={})
        await sharing.revoke_for(owner, set_id, friend, msg_id, call, reason="unfriended")

    policy = Projector(res.nc, res.pool, UnfriendPolicy(revoke, ended), schema=SCHEMA,
                       stream=res.settings.stream)
    host = SERVICE.host(res, sharing.endpoints())
    return Wiring(host=host, projectors=[access, policy], app=sharing)


SERVICE = Service(
    name="sharing", version="0.1.0",
    description="grants, revocations and who may see which account-set year",
    client=SharingClient, events=AnySharingEvent, build=build,
    read_model=ReadModel(schema=SCHEMA, tables=tables.TABLES,
                         projection=AccessProjection))
