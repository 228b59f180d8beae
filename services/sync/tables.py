"""sync's read model in PostgreSQL: the only file of the service that speaks SQL.

``devices`` answers the device list; ``set_years`` and ``device_versions`` the status
("what changed where") and the sweeper's question (which leases ran out). Every decision
folds the aggregates from the log instead."""

from __future__ import annotations

from datetime import datetime
from typing import TypeAlias

import asyncpg

from contracts.sync import (
    DeviceRegistered,
    LeaseTaken,
    SyncTurnedOn,
    VersionSynced,
)

Conn: TypeAlias = "asyncpg.Connection | asyncpg.Pool"
TABLES = ("devices", "set_years", "device_versions")


async def create_tables(conn: asyncpg.Connection, schema: str) -> None:
    await conn.execute(f"""
        CREATE TABLE IF NOT EXISTS {schema}.devices (
            device_id text PRIMARY KEY, member_id text NOT NULL, name text NOT NULL,
            first_seen timestamptz NOT NULL, last_seen timestamptz NOT NULL,
            revoked_at timestamptz);
        CREATE INDEX IF NOT EXISTS devices_by_member ON {schema}.devices (member_id);
        CREATE TABLE IF NOT EXISTS {schema}.set_years (
            set_year_id text PRIMARY KEY, member_id text NOT NULL, set_id text NOT NULL,
            set_name text NOT NULL, year int NOT NULL, sync_on boolean NOT NULL,
            current_version text, current_device text,
            lease_id text, lease_device text, lease_device_name text,
            lease_since timestamptz, lease_until timestamptz);
        CREATE INDEX IF NOT EXISTS set_years_by_member ON {schema}.set_years (member_id);
        CREATE INDEX IF NOT EXISTS set_years_by_lease_end ON {schema}.set_years (lease_until)
            WHERE lease_until IS NOT NULL;
        CREATE TABLE IF NOT EXISTS {schema}.device_versions (
            set_year_id text NOT NULL, device_id text NOT NULL, version_id text NOT NULL,
            at timestamptz NOT NULL, PRIMARY KEY (set_year_id, device_id));
    """)


# ---- writes (the projection) ------------------------------------------------------------

async def add_device(conn: asyncpg.Connection, schema: str, e: DeviceRegistered) -> None:
    await conn.execute(f"INSERT INTO {schema}.devices VALUES ($1, $2, $3, $4, $4, NULL) "
                       "ON CONFLICT (device_id) DO NOTHING", e.device_id, e.member_id, e.name,
                       e.at)


async def revoke_device(conn: asyncpg.Connection, schema: str, device_id: str,
                        at: datetime) -> None:
    await conn.execute(f"UPDATE {schema}.devices SET revoked_at = $2 WHERE device_id = $1",
                       device_id, at)


async def seen(conn: asyncpg.Connection, schema: str, device_id: str, at: datetime) -> None:
    await conn.execute(f"UPDATE {schema}.devices SET last_seen = greatest(last_seen, $2) "
                       "WHERE device_id = $1", device_id, at)


async def turned_on(conn: asyncpg.Connection, schema: str, e: SyncTurnedOn) -> None:
    await conn.execute(
        f"INSERT INTO {schema}.set_years (set_year_id, member_id, set_id, set_name, year, "
        "sync_on, current_version) VALUES ($1, $2, $3, $4, $5, true, $6) "
        "ON CONFLICT (set_year_id) DO UPDATE SET sync_on = true, set_name = $4, "
        "current_version = $6, current_device = NULL",
        e.set_year_id, e.member_id, e.set_id, e.set_name, e.year, e.current)


async def turned_off(conn: asyncpg.Connection, schema: str, set_year_id: str) -> None:
    await conn.execute(f"UPDATE {schema}.set_years SET sync_on = false, lease_id = NULL, "
                       "lease_device = NULL, lease_device_name = NULL, lease_since = NULL, "
                       "lease_until = NULL WHERE set_year_id = $1", set_year_id)


async def lease_taken(conn: asyncpg.Connection, schema: str, e: LeaseTaken) -> None:
    await conn.execute(f"UPDATE {schema}.set_years SET lease_id = $2, lease_device = $3, "
                       "lease_device_name = $4, lease_since = $5, lease_until = $6 "
                       "WHERE set_year_id = $1", e.set_year_id, e.lease_id, e.device_id,
                       e.device_name, e.at, e.until)


async def lease_renewed(conn: asyncpg.Connection, schema: str, set_year_id: str,
                        until: datetime) -> None:
    await conn.execute(f"UPDATE {schema}.set_years SET lease_until = $2 "
                       "WHERE set_year_id = $1", set_year_id, until)


async def lease_ended(conn: asyncpg.Connection, schema: str, set_year_id: str) -> None:
    await conn.execute(f"UPDATE {schema}.set_years SET lease_id = NULL, lease_device = NULL, "
                       "lease_device_name = NULL, lease_since = NULL, lease_until = NULL "
                       "WHERE set_year_id = $1", set_year_id)


async def synced(conn: asyncpg.Connection, schema: str, e: VersionSynced) -> None:
    await conn.execute(
        f"UPDATE {schema}.set_years SET current_version = $2, current_device = "
        "CASE WHEN $3 THEN current_device ELSE $4 END WHERE set_year_id = $1",
        e.set_year_id, e.current, e.conflict, e.device_id)
    await conn.execute(
        f"INSERT INTO {schema}.device_versions VALUES ($1, $2, $3, $4) "
        "ON CONFLICT (set_year_id, device_id) DO UPDATE SET version_id = $3, at = $4",
        e.set_year_id, e.device_id, e.version_id, e.at)


async def forget(conn: asyncpg.Connection, schema: str, member_id: str) -> None:
    """An erased member's names read "" (as their sealed text reads in a rebuild once
    their key is gone); the ids, times and states stay for the erasure policy to end."""
    await conn.execute(f"UPDATE {schema}.devices SET name = '' WHERE member_id = $1",
                       member_id)
    await conn.execute(f"UPDATE {schema}.set_years SET set_name = '', lease_device_name = "
                       "CASE WHEN lease_device_name IS NULL THEN NULL ELSE '' END "
                       "WHERE member_id = $1", member_id)


# ---- queries ----------------------------------------------------------------------------

async def devices_of(conn: Conn, schema: str, member_id: str) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        f"SELECT * FROM {schema}.devices WHERE member_id = $1 ORDER BY first_seen, device_id",
        member_id)
    return rows


async def set_years_of(conn: Conn, schema: str, member_id: str) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        f"SELECT * FROM {schema}.set_years WHERE member_id = $1 ORDER BY set_id, year",
        member_id)
    return rows


async def device_versions_of(conn: Conn, schema: str,
                             member_id: str) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        f"SELECT v.set_year_id, v.device_id, d.name, v.version_id, v.at "
        f"FROM {schema}.device_versions v JOIN {schema}.set_years s USING (set_year_id) "
        f"JOIN {schema}.devices d USING (device_id) WHERE s.member_id = $1 "
        "ORDER BY v.at, v.device_id", member_id)
    return rows


async def ended_leases(conn: Conn, schema: str, now: datetime) -> list[asyncpg.Record]:
    """Leases past their end that no event has ended yet (the sweeper's work)."""
    rows: list[asyncpg.Record] = await conn.fetch(
        f"SELECT set_year_id, member_id, set_id, year, lease_id, lease_device "
        f"FROM {schema}.set_years WHERE lease_until <= $1 ORDER BY lease_until LIMIT 500",
        now)
    return rows
