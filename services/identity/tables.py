"""identity's own store in PostgreSQL: the only file of the service that speaks SQL.

The secrets the log must not hold: the Argon2id hashes of login and cloud-drive
passwords, and the security question with its answer's hash. Each is a *credential*
with an id; the events name the id (``MemberRegistered.credential`` …), never the
secret. This is not a read model: nothing here can be rebuilt from the log, and replay
never touches it. A credential's id is made from the command that created it, so a
repeated command writes the same row again (with an equivalent hash) instead of leaving
orphans; a command whose event never made it to the log leaves a row no event names.
"""

from __future__ import annotations

from typing import Final, Literal

import asyncpg
import msgspec

SCHEMA: Final = "identity"
Kind = Literal["password", "drive", "recovery"]


class Credential(msgspec.Struct, frozen=True, kw_only=True):
    """One stored secret: a hash, and for a recovery credential its question."""

    credential_id: str
    member_id: str
    kind: Kind
    secret_hash: str
    question: str = ""


async def create_tables(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await conn.execute(f"""
            CREATE SCHEMA IF NOT EXISTS {SCHEMA};
            CREATE TABLE IF NOT EXISTS {SCHEMA}.credentials (
                credential_id text PRIMARY KEY, member_id text NOT NULL,
                kind text NOT NULL, secret_hash text NOT NULL,
                question text NOT NULL DEFAULT '',
                stored_at timestamptz NOT NULL DEFAULT now());
            CREATE INDEX IF NOT EXISTS credentials_member
                ON {SCHEMA}.credentials (member_id);
        """)


async def put(pool: asyncpg.Pool, credential: Credential) -> None:
    """Store a credential (again, for a repeated command: the same id, a new salt)."""
    await pool.execute(
        f"INSERT INTO {SCHEMA}.credentials (credential_id, member_id, kind, secret_hash, "
        "question) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (credential_id) DO UPDATE SET "
        "secret_hash = EXCLUDED.secret_hash, question = EXCLUDED.question "
        "WHERE credentials.member_id = EXCLUDED.member_id",
        credential.credential_id, credential.member_id, credential.kind,
        credential.secret_hash, credential.question)


async def get(pool: asyncpg.Pool, credential_id: str) -> Credential | None:
    row = await pool.fetchrow(
        f"SELECT credential_id, member_id, kind, secret_hash, question "
        f"FROM {SCHEMA}.credentials WHERE credential_id = $1", credential_id)
    return None if row is None else Credential(**dict(row))


async def rehash(pool: asyncpg.Pool, credential_id: str, old_hash: str, new_hash: str) -> None:
    """Replace a hash by a stronger one of the same secret (unless it changed meanwhile)."""
    await pool.execute(f"UPDATE {SCHEMA}.credentials SET secret_hash = $3 "
                       "WHERE credential_id = $1 AND secret_hash = $2",
                       credential_id, old_hash, new_hash)


async def forget(pool: asyncpg.Pool, member_id: str) -> None:
    """Drop every credential of a member (erasure)."""
    await pool.execute(f"DELETE FROM {SCHEMA}.credentials WHERE member_id = $1", member_id)
