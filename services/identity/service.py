"""The identity service: its descriptor, and how it is wired from the shared connections."""

from __future__ import annotations

import base64
import binascii
from datetime import timedelta

from contracts.identity import AnyIdentityEvent, ClaimSubjects, IdentityClient
from runtime.app import Resources, Service, Wiring, command_pipeline
from runtime.commands import Pipeline
from runtime.passwords import Hasher, weaker_than_owasp
from runtime.personal import keyring_of
from runtime.projector import Projector
from runtime.settings import Settings
from runtime.tokens import Sessions, Signer, Verifier, previous_keys, public_key_of
from runtime.wechat import WeChatOAuth
from services.identity import tables
from services.identity.domain import LockPolicy
from services.identity.erasure import Eraser, ErasurePolicy
from services.identity.handlers import Identity
from services.identity.vault import Vault


def identity_from(settings: Settings, res: Resources, commands: Pipeline) -> Identity:
    """The service's operations, configured from settings."""
    if not settings.token_private_key:
        raise SystemExit("identity needs LEDGERSHARE_TOKEN_PRIVATE_KEY (ledgershare up makes one)")
    if not settings.argon2_below_owasp_for_tests and weaker_than_owasp(
            time_cost=settings.argon2_time_cost, memory_kib=settings.argon2_memory_kib):
        raise SystemExit(f"Argon2id costs t={settings.argon2_time_cost}, "
                         f"m={settings.argon2_memory_kib} KiB are below OWASP's minimum "
                         "(e.g. t=2 with m=19456 KiB); identity will not hash with them")
    public = public_key_of(settings.token_private_key)
    claims = ClaimSubjects(subject_key(settings))
    vault = Vault(res.pool, Hasher(time_cost=settings.argon2_time_cost,
                                   memory_kib=settings.argon2_memory_kib,
                                   parallelism=settings.argon2_parallelism,
                                   workers=settings.argon2_workers,
                                   queue=settings.argon2_queue))
    return Identity(
        res.events, commands, vault,
        Signer(settings.token_private_key),
        Sessions(Verifier(public, previous=previous_keys(settings)), res.events), public,
        WeChatOAuth(settings.wechat_api_base, settings.wechat_appid, settings.wechat_secret,
                    timeout=settings.request_timeout_s),
        claims, Eraser(res.events, commands, claims, vault, keyring_of(res.nc)),
        policy=LockPolicy(free_attempts=settings.drive_free_attempts,
                          base=timedelta(seconds=settings.drive_lock_base_s),
                          cap=timedelta(seconds=settings.drive_lock_max_s)),
        session_ttl=timedelta(seconds=settings.session_ttl_s),
        drive_ttl=timedelta(seconds=settings.drive_ttl_s),
        proof_ttl=timedelta(seconds=settings.wechat_proof_ttl_s),
    )


def subject_key(settings: Settings) -> bytes:
    """The key of the claim subjects' keyed hash (base64, at least 16 bytes)."""
    try:
        key = base64.b64decode(settings.subject_key, validate=True)
    except binascii.Error:
        key = b""
    if len(key) < 16:
        raise SystemExit("identity needs LEDGERSHARE_SUBJECT_KEY: 16 or more random bytes "
                         "in base64, the same for every instance and never changed "
                         "(ledgershare up makes one)")
    return key


async def build(res: Resources) -> Wiring:
    """identity's host. No read model: every answer folds the member's (or a claim's)
    events, so no query needs a table; its own store keeps the secrets (tables.py)."""
    await tables.create_tables(res.pool)
    commands = await command_pipeline(res, "identity")
    identity = identity_from(res.settings, res, commands)
    erasures = Projector(res.nc, res.pool, ErasurePolicy(identity.eraser, commands),
                         schema=tables.SCHEMA, stream=res.settings.stream)
    return Wiring(host=SERVICE.host(res, identity.endpoints()), app=identity,
                  projectors=[erasures], cleanup=[identity.wechat.close, identity.vault.close])


SERVICE = Service(
    name="identity", version="0.1.0",
    description="members, WeChat binding, tokens, cloud-drive password",
    client=IdentityClient, events=AnyIdentityEvent, build=build, read_model=None)
