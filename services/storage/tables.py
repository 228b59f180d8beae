"""storage's read model in PostgreSQL: the only file of the service that speaks SQL."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from contracts.storage import BackupUploaded, UploadReserved

TABLES = ("drives", "versions", "reservations")


async def create_tables(conn: asyncpg.Connection, schema: str) -> None:
    await conn.execute(f"""
        CREATE TABLE IF NOT EXISTS {schema}.drives (
            owner_id text PRIMARY KEY, quota bigint);
        CREATE TABLE IF NOT EXISTS {schema}.versions (
            version_id text PRIMARY KEY, owner_id text NOT NULL, set_id text NOT NULL,
            set_name text NOT NULL, year int NOT NULL, period int NOT NULL,
            remark text NOT NULL, uploader_id text NOT NULL, uploaded_at timestamptz NOT NULL,
            size bigint NOT NULL, sha256 text NOT NULL, object_key text NOT NULL,
            base_version text, conflict_with text);
        CREATE INDEX IF NOT EXISTS versions_by_set ON {schema}.versions (owner_id, set_id, year);
        CREATE TABLE IF NOT EXISTS {schema}.reservations (
            upload_id text PRIMARY KEY, owner_id text NOT NULL, uploader_id text NOT NULL,
            charged bigint NOT NULL, expires_at timestamptz NOT NULL);
    """)


async def set_quota(conn: asyncpg.Connection, schema: str, owner_id: str, quota: int) -> None:
    await conn.execute(f"INSERT INTO {schema}.drives VALUES ($1, $2) ON CONFLICT (owner_id) "
                       "DO UPDATE SET quota = EXCLUDED.quota", owner_id, quota)


async def add_reservation(conn: asyncpg.Connection, schema: str, r: UploadReserved) -> None:
    await conn.execute(f"INSERT INTO {schema}.reservations VALUES ($1, $2, $3, $4, $5)",
                       r.upload_id, r.owner_id, r.uploader_id, r.charged, r.expires_at)


async def close_reservation(conn: asyncpg.Connection, schema: str, upload_id: str) -> None:
    await conn.execute(f"DELETE FROM {schema}.reservations WHERE upload_id = $1", upload_id)


async def add_version(conn: asyncpg.Connection, schema: str, e: BackupUploaded) -> None:
    await conn.execute(
        f"INSERT INTO {schema}.versions VALUES "
        "($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
        e.version_id, e.owner_id, e.set_id, e.set_name, e.year, e.period, e.remark,
        e.uploader_id, e.at, e.size, e.sha256, e.key, e.base_version, e.conflict_with)


async def delete_version(conn: asyncpg.Connection, schema: str, version_id: str) -> None:
    await conn.execute(f"DELETE FROM {schema}.versions WHERE version_id = $1", version_id)


async def owners_with_expired(pool: asyncpg.Pool, schema: str, now: datetime) -> list[str]:
    rows = await pool.fetch(f"SELECT DISTINCT owner_id FROM {schema}.reservations "
                            "WHERE expires_at <= $1", now)
    return [str(r["owner_id"]) for r in rows]
