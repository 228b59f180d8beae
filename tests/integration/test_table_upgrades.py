"""A service started on a database its earlier version made finds its tables upgraded in
place: the columns and tables no query read are gone, renamed ones carry the new name."""

from __future__ import annotations

import asyncpg
import pytest

from services.sharing import tables as sharing_tables
from services.social import tables as social_tables
from services.storage import tables as storage_tables

# The shapes the previous version created (before read models had to earn their keep).
EARLIER = {
    "storage": """
        CREATE TABLE {s}.drives (owner_id text PRIMARY KEY, quota bigint);
        CREATE TABLE {s}.versions (version_id text PRIMARY KEY, owner_id text NOT NULL);
        CREATE TABLE {s}.reservations (upload_id text PRIMARY KEY, owner_id text NOT NULL,
            uploader_id text NOT NULL, charged bigint NOT NULL,
            expires_at timestamptz NOT NULL);""",
    "social": """
        CREATE TABLE {s}.directory (member_id text PRIMARY KEY, account text NOT NULL,
            account_key text NOT NULL UNIQUE, nickname text NOT NULL,
            password_version int NOT NULL DEFAULT 0);""",
    "sharing": """
        CREATE TABLE {s}.grants (owner_id text NOT NULL, set_id text NOT NULL,
            friend_id text NOT NULL, set_name text NOT NULL, scope text NOT NULL,
            years int[], expires_at timestamptz, since timestamptz NOT NULL,
            PRIMARY KEY (owner_id, set_id, friend_id));""",
}
CREATE = {"storage": storage_tables.create_tables, "social": social_tables.create_tables,
          "sharing": sharing_tables.create_tables}


async def _shape(pool: asyncpg.Pool, schema: str) -> list[tuple[str, str, str]]:
    rows = await pool.fetch(
        "SELECT table_name, column_name, is_nullable FROM information_schema.columns "
        "WHERE table_schema = $1 ORDER BY table_name, column_name", schema)
    return [(r["table_name"], r["column_name"], r["is_nullable"]) for r in rows]


@pytest.mark.parametrize("service", sorted(EARLIER))
async def test_an_earlier_schema_is_upgraded_to_the_current_shape(
        pool: asyncpg.Pool, service: str) -> None:
    old, fresh = f"{service}_earlier", f"{service}_fresh"
    async with pool.acquire() as conn:
        await conn.execute(f"CREATE SCHEMA {old}; CREATE SCHEMA {fresh}")
        await conn.execute(EARLIER[service].format(s=old))
        await CREATE[service](conn, old)
        await CREATE[service](conn, old)  # and again: starting twice changes nothing
        await CREATE[service](conn, fresh)
    assert await _shape(pool, old) == await _shape(pool, fresh)
