"""Run the identity service: ``python -m services.identity``."""

from __future__ import annotations

from datetime import timedelta

from runtime.app import Resources, Wiring, command_pipeline, main
from runtime.commands import Pipeline
from runtime.passwords import Hasher
from runtime.projector import Projector
from runtime.service import ServiceHost
from runtime.settings import Settings
from runtime.tokens import Signer, Verifier, public_key_of
from services.identity.domain import LockPolicy
from services.identity.handlers import Identity
from services.identity.projection import IdentityProjection

VERSION = "0.1.0"


def identity_from(settings: Settings, res: Resources, commands: Pipeline) -> Identity:
    """The service's operations, configured from settings."""
    if not settings.token_private_key:
        raise SystemExit("identity needs LEDGERSHARE_TOKEN_PRIVATE_KEY (ledgershare up makes one)")
    public = public_key_of(settings.token_private_key)
    return Identity(
        res.store, commands,
        Hasher(time_cost=settings.argon2_time_cost, memory_kib=settings.argon2_memory_kib,
               parallelism=settings.argon2_parallelism),
        Signer(settings.token_private_key), Verifier(public), public,
        policy=LockPolicy(free_attempts=settings.drive_free_attempts,
                          base=timedelta(seconds=settings.drive_lock_base_s),
                          cap=timedelta(seconds=settings.drive_lock_max_s)),
        session_ttl=timedelta(seconds=settings.session_ttl_s),
        drive_ttl=timedelta(seconds=settings.drive_ttl_s),
    )


async def build(res: Resources) -> Wiring:
    """identity's host and projector."""
    identity = identity_from(res.settings, res, await command_pipeline(res, "identity"))
    host = ServiceHost(res.nc, name="identity", version=VERSION,
                       description="members, WeChat binding, tokens, cloud-drive password",
                       endpoints=identity.endpoints(), max_in_flight=res.settings.max_in_flight)
    projector = Projector(res.nc, res.pool, IdentityProjection(), schema="identity",
                          stream=res.settings.stream)
    return Wiring(host=host, projectors=[projector])


if __name__ == "__main__":
    main(build)
