"""Run the social service: ``python -m services.social``."""

from __future__ import annotations

from runtime.app import Resources, Wiring, main
from runtime.projector import Projector
from runtime.service import ServiceHost
from runtime.settings import Settings
from runtime.tokens import Verifier, public_key_of
from services.social.handlers import Social
from services.social.projection import SocialProjection

VERSION = "0.1.0"


def public_key(settings: Settings) -> str:
    """The token public key from settings (or derived from a local private key)."""
    if settings.token_public_key:
        return settings.token_public_key
    if settings.token_private_key:
        return public_key_of(settings.token_private_key)
    raise SystemExit("set LEDGERSHARE_TOKEN_PUBLIC_KEY (identity's public_key endpoint has it)")


async def build(res: Resources) -> Wiring:
    """social's host and projector."""
    projector = Projector(res.nc, res.pool, SocialProjection(), schema="social",
                          stream=res.settings.stream)
    social = Social(res.store, res.pool, projector, Verifier(public_key(res.settings)))
    host = ServiceHost(res.nc, name="social", version=VERSION,
                       description="friends and the member directory",
                       endpoints=social.endpoints(), max_in_flight=res.settings.max_in_flight)
    return Wiring(host=host, projectors=[projector])


if __name__ == "__main__":
    main(build)
