"""The local stack's secrets, made once per stack, and the settings each user connects with.

``ledgershare up`` writes ``<home>/keys/stack-secrets.json``: a password for every NATS user
of the production accounts (`deploy.nats.permissions`) and the local superuser ``admin``,
one for PostgreSQL's superuser and one per service role, the S3 keys, and SeaweedFS's JWT
signing keys. The folder is created 0700 and the file 0600, both from creation (never
chmod'ed after): nothing but their owner (and root) reads them. From the secrets, `users`
gives each user's connection settings, which the stack writes into ``stack.json`` (also
0600) for `runtime.settings.load_settings`.
"""

from __future__ import annotations

import base64
import os
import secrets
from pathlib import Path

import msgspec

from deploy.nats.permissions import ADMIN, GATEWAYS, OPERATOR, users
from services.registry import SERVICES

LOOPBACK = "127.0.0.1"
SUPERUSER = "postgres"
DATABASE = "ledgershare"
WEED_KEYS = ("WEED_JWT_SIGNING_KEY", "WEED_JWT_SIGNING_READ_KEY",
             "WEED_JWT_FILER_SIGNING_KEY", "WEED_JWT_FILER_SIGNING_READ_KEY")


class Secrets(msgspec.Struct, frozen=True, kw_only=True):
    """Every secret of one local stack."""

    nats: dict[str, str]  # password per NATS user
    postgres: dict[str, str]  # password per PostgreSQL role
    s3_access_key: str
    s3_secret_key: str
    weed: dict[str, str]  # SeaweedFS's JWT signing keys, by environment variable
    # identity's key for the keyed hash that names claim subjects (base64): made once and
    # kept, since another key would lose every claim in the log.
    subject_key: str = ""


def nats_users() -> list[str]:
    """Every NATS user of the local stack: production's, and the local superuser."""
    return [*(u.name for u in users()), ADMIN]


def roles() -> list[str]:
    """Every PostgreSQL role with a password: the superuser and one per service."""
    return [SUPERUSER, *(s.name for s in SERVICES)]


def schema_of(service: str) -> str:
    """The schema a service's role owns: its read model's, else its own name (identity's
    credential store, services/identity/tables.py)."""
    found = next(s for s in SERVICES if s.name == service)
    return found.read_model.schema if found.read_model is not None else found.name


def _new() -> str:
    # Hex only: safe unquoted in URLs, DSNs, SQL literals and nats-server's variables
    # (a value that lexes as a number would not be a string there); the letter first
    # keeps it from lexing as one.
    return "s" + secrets.token_hex(24)


def secrets_file(home: Path) -> Path:
    """Where a stack's secrets are kept."""
    return home / "keys" / "stack-secrets.json"


def load_secrets(home: Path) -> Secrets | None:
    """The stack's secrets, or None before its first ``up``."""
    path = secrets_file(home)
    if not path.exists():
        return None
    return msgspec.json.decode(path.read_bytes(), type=Secrets)


def ensure_secrets(home: Path) -> Secrets:
    """The stack's secrets, made on first use; a user or role added since (a new service)
    gets its own secret, the others keep theirs."""
    found = load_secrets(home)
    fresh = Secrets(nats={}, postgres={}, s3_access_key="ls" + secrets.token_hex(8),
                    s3_secret_key=_new(), weed={k: _new() for k in WEED_KEYS})
    base = found or fresh
    wanted = Secrets(
        nats={u: base.nats.get(u) or _new() for u in nats_users()},
        postgres={r: base.postgres.get(r) or _new() for r in roles()},
        s3_access_key=base.s3_access_key, s3_secret_key=base.s3_secret_key,
        weed={k: base.weed.get(k) or _new() for k in WEED_KEYS},
        subject_key=base.subject_key or base64.b64encode(secrets.token_bytes(32)).decode())
    if wanted != found:
        write_private(secrets_file(home), msgspec.json.encode(wanted))
    return wanted


def write_private(path: Path, data: bytes) -> None:
    """Write a file only its owner may read: its folder made 0700 if missing, the file
    0600 from its creation (a fresh file renamed into place, so no reader ever sees it
    half written or with other permissions)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


# ---- what each user connects with -----------------------------------------------------------

def nats_url(found: Secrets, user: str, port: int) -> str:
    """``user``'s NATS URL, password included."""
    return f"nats://{user}:{found.nats[user]}@{LOOPBACK}:{port}"


def pg_dsn(found: Secrets, role: str, port: int) -> str:
    """``role``'s DSN for the stack's database, password included."""
    return f"postgresql://{role}:{found.postgres[role]}@{LOOPBACK}:{port}/{DATABASE}"


def inbox(user: str) -> str:
    """The private inbox prefix a user's replies come to (``_INBOX_<user>``)."""
    return f"_INBOX_{user}"


def users_settings(found: Secrets, nats_port: int, pg_port: int) -> dict[str, dict[str, str]]:
    """Each user's settings (`runtime.settings` fields): a service connects as itself to
    NATS and as its own role to PostgreSQL, only storage gets the S3 keys and only
    identity the claim subjects' key; a gateway
    has a NATS user only; the operator and ``admin`` use PostgreSQL's superuser."""
    no_pg = f"postgresql://{LOOPBACK}:{pg_port}/{DATABASE}"  # no role: refused
    no_s3 = {"s3_access_key": "", "s3_secret_key": ""}
    superuser = pg_dsn(found, SUPERUSER, pg_port)
    found_users: dict[str, dict[str, str]] = {}
    for service in SERVICES:
        s3 = {} if service.name == "storage" else no_s3
        found_users[service.name] = {**_nats(found, service.name, nats_port),
                                     "pg_dsn": pg_dsn(found, service.name, pg_port), **s3}
    found_users["identity"]["subject_key"] = found.subject_key  # identity's alone
    for gateway in GATEWAYS:
        found_users[gateway] = {**_nats(found, gateway, nats_port), "pg_dsn": no_pg, **no_s3}
    found_users[OPERATOR] = {**_nats(found, OPERATOR, nats_port), "pg_dsn": superuser}
    # admin: every right, any inbox (the tests use nats-py's default one)
    found_users[ADMIN] = {"nats_url": nats_url(found, ADMIN, nats_port),
                          "nats_inbox_prefix": "_INBOX", "pg_dsn": superuser}
    return found_users


def _nats(found: Secrets, user: str, port: int) -> dict[str, str]:
    return {"nats_url": nats_url(found, user, port), "nats_inbox_prefix": inbox(user)}
