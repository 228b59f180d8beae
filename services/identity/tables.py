"""identity's read model in PostgreSQL: the only file of the service that speaks SQL."""

from __future__ import annotations

from datetime import datetime

import asyncpg


async def create_tables(conn: asyncpg.Connection, schema: str) -> None:
    await conn.execute(f"""
        CREATE TABLE IF NOT EXISTS {schema}.members (
            member_id text PRIMARY KEY,
            account text NOT NULL,
            account_key text NOT NULL UNIQUE,
            nickname text NOT NULL,
            openid text,
            drive_password_set boolean NOT NULL DEFAULT false,
            password_version int NOT NULL DEFAULT 0,
            registered_at timestamptz NOT NULL);
        CREATE TABLE IF NOT EXISTS {schema}.openids (
            openid text PRIMARY KEY,
            member_id text NOT NULL);
    """)


async def insert_member(conn: asyncpg.Connection, schema: str, *, member_id: str,
                        account: str, account_key: str, nickname: str, at: datetime) -> None:
    await conn.execute(
        f"INSERT INTO {schema}.members (member_id, account, account_key, nickname, "
        "registered_at) VALUES ($1, $2, $3, $4, $5)",
        member_id, account, account_key, nickname, at)


async def set_nickname(conn: asyncpg.Connection, schema: str, member_id: str,
                       nickname: str) -> None:
    await conn.execute(f"UPDATE {schema}.members SET nickname = $2 WHERE member_id = $1",
                       member_id, nickname)


async def bump_password_version(conn: asyncpg.Connection, schema: str, member_id: str) -> None:
    await conn.execute(f"UPDATE {schema}.members SET password_version = password_version + 1 "
                       "WHERE member_id = $1", member_id)


async def set_openid(conn: asyncpg.Connection, schema: str, member_id: str,
                     openid: str | None) -> None:
    await conn.execute(f"UPDATE {schema}.members SET openid = $2 WHERE member_id = $1",
                       member_id, openid)


async def mark_drive_password(conn: asyncpg.Connection, schema: str, member_id: str) -> None:
    await conn.execute(f"UPDATE {schema}.members SET drive_password_set = true "
                       "WHERE member_id = $1", member_id)


async def claim_openid(conn: asyncpg.Connection, schema: str, openid: str,
                       member_id: str) -> None:
    await conn.execute(
        f"INSERT INTO {schema}.openids VALUES ($1, $2) "
        "ON CONFLICT (openid) DO UPDATE SET member_id = EXCLUDED.member_id", openid, member_id)


async def release_openid(conn: asyncpg.Connection, schema: str, openid: str,
                         member_id: str) -> None:
    await conn.execute(f"DELETE FROM {schema}.openids WHERE openid = $1 AND member_id = $2",
                       openid, member_id)


async def member_by_account(conn: asyncpg.Connection | asyncpg.Pool, schema: str,
                            account_key: str) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(
        f"SELECT * FROM {schema}.members WHERE account_key = $1", account_key)
    return row


TABLES = ("members", "openids")
