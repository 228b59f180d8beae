"""storage's read model in PostgreSQL: the only file of the service that speaks SQL.

Only open upload reservations: the sweeper asks which owners have expired ones. Every
other answer (quota, versions) folds the owner's drive aggregate."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from contracts.storage import UploadReserved

TABLES = ("reservations",)


async def create_tables(conn: asyncpg.Connection, schema: str) -> None:
    await conn.execute(f"""
        CREATE TABLE IF NOT EXISTS {schema}.reservations (
            upload_id text PRIMARY KEY, owner_id text NOT NULL,
            expires_at timestamptz NOT NULL);
        -- From the earlier shape: tables no query read, columns no query read.
        DROP TABLE IF EXISTS {schema}.drives, {schema}.versions;
        ALTER TABLE {schema}.reservations DROP COLUMN IF EXISTS uploader_id,
            DROP COLUMN IF EXISTS charged;
    """)


async def add_reservation(conn: asyncpg.Connection, schema: str, r: UploadReserved) -> None:
    await conn.execute(f"INSERT INTO {schema}.reservations (upload_id, owner_id, expires_at) "
                       "VALUES ($1, $2, $3)", r.upload_id, r.owner_id, r.expires_at)


async def close_reservation(conn: asyncpg.Connection, schema: str, upload_id: str) -> None:
    await conn.execute(f"DELETE FROM {schema}.reservations WHERE upload_id = $1", upload_id)


async def owners_with_expired(pool: asyncpg.Pool, schema: str, now: datetime) -> list[str]:
    rows = await pool.fetch(f"SELECT DISTINCT owner_id FROM {schema}.reservations "
                            "WHERE expires_at <= $1", now)
    return [str(r["owner_id"]) for r in rows]
