"""sharing's read model in PostgreSQL: the only file of the service that speaks SQL."""

from __future__ import annotations

from datetime import datetime
from typing import TypeAlias

import asyncpg

from contracts.sharing import ShareGranted
from contracts.storage import BackupUploaded

Conn: TypeAlias = "asyncpg.Connection | asyncpg.Pool"
TABLES = ("directory", "friends", "backups", "grants", "grant_history")


async def create_tables(conn: asyncpg.Connection, schema: str) -> None:
    await conn.execute(f"""
        CREATE TABLE IF NOT EXISTS {schema}.directory (
            member_id text PRIMARY KEY, account text NOT NULL,
            account_key text NOT NULL UNIQUE, nickname text NOT NULL);
        CREATE TABLE IF NOT EXISTS {schema}.friends (
            member_id text NOT NULL, friend_id text NOT NULL,
            PRIMARY KEY (member_id, friend_id));
        CREATE TABLE IF NOT EXISTS {schema}.backups (
            version_id text PRIMARY KEY, owner_id text NOT NULL, set_id text NOT NULL,
            set_name text NOT NULL, year int NOT NULL, period int NOT NULL,
            remark text NOT NULL, uploader_id text NOT NULL, uploaded_at timestamptz NOT NULL,
            size bigint NOT NULL, sha256 text NOT NULL, base_version text,
            conflict_with text);
        CREATE INDEX IF NOT EXISTS backups_by_set ON {schema}.backups (owner_id, set_id, year);
        CREATE TABLE IF NOT EXISTS {schema}.grants (
            owner_id text NOT NULL, set_id text NOT NULL, friend_id text NOT NULL,
            set_name text NOT NULL, scope text NOT NULL, years int[],
            expires_at timestamptz, since timestamptz NOT NULL,
            PRIMARY KEY (owner_id, set_id, friend_id));
        CREATE INDEX IF NOT EXISTS grants_by_friend ON {schema}.grants (friend_id);
        CREATE TABLE IF NOT EXISTS {schema}.grant_history (
            owner_id text NOT NULL, set_id text NOT NULL, friend_id text NOT NULL,
            granted_at timestamptz NOT NULL, ended_at timestamptz, expires_at timestamptz,
            PRIMARY KEY (owner_id, set_id, friend_id, granted_at));
    """)


# ---- writes (projection) --------------------------------------------------------------

async def add_member(conn: asyncpg.Connection, schema: str, member_id: str, account: str,
                     account_key: str, nickname: str) -> None:
    await conn.execute(f"INSERT INTO {schema}.directory VALUES ($1, $2, $3, $4)",
                       member_id, account, account_key, nickname)


async def set_nickname(conn: asyncpg.Connection, schema: str, member_id: str,
                       nickname: str) -> None:
    await conn.execute(f"UPDATE {schema}.directory SET nickname = $2 WHERE member_id = $1",
                       member_id, nickname)


async def befriend(conn: asyncpg.Connection, schema: str, a: str, b: str) -> None:
    await conn.executemany(f"INSERT INTO {schema}.friends VALUES ($1, $2) "
                           "ON CONFLICT DO NOTHING", [(a, b), (b, a)])


async def unfriend(conn: asyncpg.Connection, schema: str, a: str, b: str,
                   at: datetime) -> None:
    await conn.execute(f"DELETE FROM {schema}.friends WHERE (member_id, friend_id) IN "
                       "(($1, $2), ($2, $1))", a, b)
    await conn.execute(
        f"UPDATE {schema}.grant_history SET ended_at = $3 WHERE ended_at IS NULL AND "
        "((owner_id = $1 AND friend_id = $2) OR (owner_id = $2 AND friend_id = $1))", a, b, at)


async def add_backup(conn: asyncpg.Connection, schema: str, e: BackupUploaded) -> None:
    await conn.execute(
        f"INSERT INTO {schema}.backups VALUES "
        "($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        e.version_id, e.owner_id, e.set_id, e.set_name, e.year, e.period, e.remark,
        e.uploader_id, e.at, e.size, e.sha256, e.base_version, e.conflict_with)


async def delete_backup(conn: asyncpg.Connection, schema: str, version_id: str) -> None:
    await conn.execute(f"DELETE FROM {schema}.backups WHERE version_id = $1", version_id)


async def grant(conn: asyncpg.Connection, schema: str, e: ShareGranted) -> None:
    await conn.execute(
        f"INSERT INTO {schema}.grants VALUES ($1, $2, $3, $4, $5, $6, $7, $8) "
        "ON CONFLICT (owner_id, set_id, friend_id) DO UPDATE SET scope = EXCLUDED.scope, "
        "years = EXCLUDED.years, expires_at = EXCLUDED.expires_at, "
        "set_name = EXCLUDED.set_name",
        e.owner_id, e.set_id, e.friend_id, e.set_name, e.scope, e.years, e.expires_at, e.at)
    # A new grant (or new terms) starts a new interval of the history.
    await conn.execute(
        f"UPDATE {schema}.grant_history SET ended_at = $4 WHERE owner_id = $1 AND "
        "set_id = $2 AND friend_id = $3 AND ended_at IS NULL",
        e.owner_id, e.set_id, e.friend_id, e.at)
    await conn.execute(
        f"INSERT INTO {schema}.grant_history (owner_id, set_id, friend_id, granted_at, "
        "expires_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        e.owner_id, e.set_id, e.friend_id, e.at, e.expires_at)


async def revoke(conn: asyncpg.Connection, schema: str, owner_id: str, set_id: str,
                 friend_id: str, at: datetime) -> None:
    await conn.execute(f"DELETE FROM {schema}.grants WHERE owner_id = $1 AND set_id = $2 "
                       "AND friend_id = $3", owner_id, set_id, friend_id)
    await conn.execute(
        f"UPDATE {schema}.grant_history SET ended_at = $4 WHERE owner_id = $1 AND "
        "set_id = $2 AND friend_id = $3 AND ended_at IS NULL", owner_id, set_id, friend_id, at)


# ---- reads ------------------------------------------------------------------------------

async def member_by_account(conn: Conn, schema: str, key: str) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(
        f"SELECT * FROM {schema}.directory WHERE account_key = $1", key)
    return row


async def are_friends(conn: Conn, schema: str, a: str, b: str) -> bool:
    return bool(await conn.fetchval(
        f"SELECT 1 FROM {schema}.friends WHERE member_id = $1 AND friend_id = $2", a, b))


async def set_name(conn: Conn, schema: str, owner_id: str, set_id: str) -> str | None:
    name: str | None = await conn.fetchval(
        f"SELECT set_name FROM {schema}.backups WHERE owner_id = $1 AND set_id = $2 "
        "ORDER BY uploaded_at DESC LIMIT 1", owner_id, set_id)
    return name


async def active_grant(conn: Conn, schema: str, member_id: str, owner_id: str,
                       set_id: str) -> asyncpg.Record | None:
    """The grant of (owner, set) to member, only while the two are friends."""
    row: asyncpg.Record | None = await conn.fetchrow(
        f"SELECT g.scope, g.years, g.expires_at FROM {schema}.grants g "
        f"JOIN {schema}.friends f ON f.member_id = g.owner_id AND f.friend_id = g.friend_id "
        "WHERE g.owner_id = $1 AND g.set_id = $2 AND g.friend_id = $3",
        owner_id, set_id, member_id)
    return row


async def grants_between(conn: Conn, schema: str, owner_id: str,
                         friend_id: str) -> list[str]:
    rows = await conn.fetch(f"SELECT set_id FROM {schema}.grants WHERE owner_id = $1 AND "
                            "friend_id = $2", owner_id, friend_id)
    return [str(r["set_id"]) for r in rows]


async def owner_shares(conn: Conn, schema: str, owner_id: str) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        f"SELECT g.*, d.account, d.nickname FROM {schema}.grants g "
        f"JOIN {schema}.friends f ON f.member_id = g.owner_id AND f.friend_id = g.friend_id "
        f"JOIN {schema}.directory d ON d.member_id = g.friend_id "
        "WHERE g.owner_id = $1 ORDER BY g.set_name, g.set_id, g.since, d.account", owner_id)
    return rows


async def shared_with(conn: Conn, schema: str, member_id: str) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        f"SELECT g.*, d.account, d.nickname FROM {schema}.grants g "
        f"JOIN {schema}.friends f ON f.member_id = g.owner_id AND f.friend_id = g.friend_id "
        f"JOIN {schema}.directory d ON d.member_id = g.owner_id "
        "WHERE g.friend_id = $1 ORDER BY d.account, g.set_name, g.set_id", member_id)
    return rows


async def backups_of(conn: Conn, schema: str, owner_id: str,
                     set_id: str) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        f"SELECT * FROM {schema}.backups WHERE owner_id = $1 AND set_id = $2 "
        "ORDER BY year, uploaded_at DESC", owner_id, set_id)
    return rows


async def could_see(conn: Conn, schema: str, owner_id: str, set_id: str,
                    at: datetime) -> list[str]:
    rows = await conn.fetch(
        f"SELECT DISTINCT d.account FROM {schema}.grant_history h "
        f"JOIN {schema}.directory d ON d.member_id = h.friend_id "
        "WHERE h.owner_id = $1 AND h.set_id = $2 AND h.granted_at <= $3 "
        "AND (h.ended_at IS NULL OR h.ended_at > $3) "
        "AND (h.expires_at IS NULL OR h.expires_at > $3) ORDER BY d.account",
        owner_id, set_id, at)
    return [str(r["account"]) for r in rows]
