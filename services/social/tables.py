"""social's read model in PostgreSQL: the member directory and both sides of each friendship."""

from __future__ import annotations

from datetime import datetime
from typing import TypeAlias

import asyncpg

Conn: TypeAlias = "asyncpg.Connection | asyncpg.Pool"
TABLES = ("directory", "friends", "agencies", "agency_places")


async def create_tables(conn: asyncpg.Connection, schema: str) -> None:
    await conn.execute(f"""
        CREATE TABLE IF NOT EXISTS {schema}.directory (
            member_id text PRIMARY KEY,
            account text NOT NULL,
            account_key text NOT NULL UNIQUE,
            nickname text NOT NULL);
        CREATE TABLE IF NOT EXISTS {schema}.friends (
            member_id text NOT NULL,
            friend_id text NOT NULL,
            since timestamptz NOT NULL,
            PRIMARY KEY (member_id, friend_id));
        CREATE TABLE IF NOT EXISTS {schema}.agencies (
            agency_id text PRIMARY KEY,
            state jsonb NOT NULL);
        CREATE TABLE IF NOT EXISTS {schema}.agency_places (
            agency_id text NOT NULL,
            member_id text NOT NULL,
            role text NOT NULL,
            invited boolean NOT NULL,
            PRIMARY KEY (member_id, agency_id));
        -- From the earlier shape: sessions are checked against the log now.
        ALTER TABLE {schema}.directory DROP COLUMN IF EXISTS password_version;
    """)


async def add_member(conn: asyncpg.Connection, schema: str, *, member_id: str, account: str,
                     account_key: str, nickname: str) -> None:
    await conn.execute(f"INSERT INTO {schema}.directory (member_id, account, account_key, "
                       "nickname) VALUES ($1, $2, $3, $4)",
                       member_id, account, account_key, nickname)


async def set_nickname(conn: asyncpg.Connection, schema: str, member_id: str,
                       nickname: str) -> None:
    await conn.execute(f"UPDATE {schema}.directory SET nickname = $2 WHERE member_id = $1",
                       member_id, nickname)


async def remove_member(conn: asyncpg.Connection, schema: str, member_id: str) -> None:
    await conn.execute(f"DELETE FROM {schema}.directory WHERE member_id = $1", member_id)


async def friend_ids(conn: Conn, schema: str, member_id: str) -> list[str]:
    """The ids of a member's friends (erased ones included)."""
    rows = await conn.fetch(f"SELECT friend_id FROM {schema}.friends WHERE member_id = $1",
                            member_id)
    return [r["friend_id"] for r in rows]


async def befriend(conn: asyncpg.Connection, schema: str, a: str, b: str, at: datetime) -> None:
    await conn.executemany(f"INSERT INTO {schema}.friends VALUES ($1, $2, $3)",
                           [(a, b, at), (b, a, at)])


async def unfriend(conn: asyncpg.Connection, schema: str, a: str, b: str) -> None:
    await conn.execute(f"DELETE FROM {schema}.friends WHERE (member_id, friend_id) IN "
                       "(($1, $2), ($2, $1))", a, b)


async def member(conn: Conn, schema: str, member_id: str) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(
        f"SELECT * FROM {schema}.directory WHERE member_id = $1", member_id)
    return row


async def member_by_account(conn: Conn, schema: str, account_key: str) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(
        f"SELECT * FROM {schema}.directory WHERE account_key = $1", account_key)
    return row


async def friends_of(conn: Conn, schema: str, member_id: str) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        f"SELECT d.member_id, d.account, d.nickname, f.since FROM {schema}.friends f "
        f"JOIN {schema}.directory d ON d.member_id = f.friend_id "
        "WHERE f.member_id = $1 ORDER BY f.since, d.account", member_id)
    return rows


# ---- agencies: each one's folded state, and who has a place (or an invitation) in it ----

async def agency_state(conn: Conn, schema: str, agency_id: str) -> bytes | None:
    """One agency's state as stored (JSON), None before its first event."""
    row = await conn.fetchrow(f"SELECT state::text FROM {schema}.agencies WHERE agency_id = $1",
                              agency_id)
    return None if row is None else str(row[0]).encode()


async def put_agency(conn: asyncpg.Connection, schema: str, agency_id: str, state: bytes,
                     places: list[tuple[str, str, bool]]) -> None:
    """Store an agency's state and replace its places (member, role, invited)."""
    await conn.execute(f"INSERT INTO {schema}.agencies VALUES ($1, $2::jsonb) ON CONFLICT "
                       "(agency_id) DO UPDATE SET state = EXCLUDED.state",
                       agency_id, state.decode())
    await conn.execute(f"DELETE FROM {schema}.agency_places WHERE agency_id = $1", agency_id)
    await conn.executemany(f"INSERT INTO {schema}.agency_places VALUES ($1, $2, $3, $4)",
                           [(agency_id, m, role, inv) for m, role, inv in places])


async def places_of(conn: Conn, schema: str, member_id: str) -> list[asyncpg.Record]:
    """A member's agencies and invitations, with each agency's name and administrator."""
    rows: list[asyncpg.Record] = await conn.fetch(
        f"SELECT p.agency_id, p.role, p.invited, a.state->>'name' AS name, "
        f"coalesce(d.account, '') AS administrator FROM {schema}.agency_places p "
        f"JOIN {schema}.agencies a ON a.agency_id = p.agency_id "
        f"LEFT JOIN {schema}.directory d ON d.member_id = a.state->>'admin_id' "
        "WHERE p.member_id = $1 ORDER BY name, p.agency_id", member_id)
    return rows


async def members_named(conn: Conn, schema: str,
                        member_ids: list[str]) -> dict[str, asyncpg.Record]:
    """The directory's rows of these members (an erased one is missing)."""
    rows = await conn.fetch(f"SELECT * FROM {schema}.directory WHERE member_id = ANY($1)",
                            member_ids)
    return {r["member_id"]: r for r in rows}
