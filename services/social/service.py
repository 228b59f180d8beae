"""The social service: its descriptor, and how it is wired from the shared connections."""

from __future__ import annotations

from contracts.social import AnySocialEvent, SocialClient
from runtime.app import ReadModel, Resources, Service, Wiring, command_pipeline
from runtime.projector import Projector
from runtime.tokens import Sessions, verifier_for
from services.social import tables
from services.social.agencies import Agencies
from services.social.erasure import ErasurePolicy
from services.social.handlers import Social
from services.social.projection import SocialProjection


async def build(res: Resources) -> Wiring:
    """social's host and projector."""
    projector = Projector(res.nc, res.pool, SocialProjection(), schema="social",
                          stream=res.settings.stream)
    sessions = Sessions(verifier_for(res.settings), res.events)
    commands = await command_pipeline(res, "social")
    social = Social(res.events, commands, res.pool, projector, sessions)
    erasures = Projector(res.nc, res.pool, ErasurePolicy(commands, projector), schema="social",
                         stream=res.settings.stream)
    host = SERVICE.host(res, [*social.endpoints(), *Agencies(social).endpoints()])
    return Wiring(host=host, projectors=[projector, erasures])


SERVICE = Service(
    name="social", version="0.1.0",
    description="friends, bookkeeping agencies and the member directory",
    client=SocialClient, events=AnySocialEvent, build=build,
    read_model=ReadModel(schema="social", tables=tables.TABLES,
                         projection=SocialProjection))
