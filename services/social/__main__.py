"""Run the social service: ``python -m services.social``."""

from __future__ import annotations

from runtime.app import Resources, Wiring, command_pipeline, main
from runtime.projector import Projector
from runtime.service import ServiceHost
from runtime.tokens import Verifier, configured_public_key
from services.social.handlers import Social
from services.social.projection import SocialProjection

VERSION = "0.1.0"


async def build(res: Resources) -> Wiring:
    """social's host and projector."""
    projector = Projector(res.nc, res.pool, SocialProjection(), schema="social",
                          stream=res.settings.stream)
    verifier = Verifier(configured_public_key(res.settings))
    social = Social(res.store, await command_pipeline(res, "social"), res.pool, projector,
                    verifier)
    host = ServiceHost(res.nc, name="social", version=VERSION,
                       description="friends and the member directory",
                       endpoints=social.endpoints(), max_in_flight=res.settings.max_in_flight)
    return Wiring(host=host, projectors=[projector])


if __name__ == "__main__":
    main(build)
