"""Rebuild a read model from sequence 1 into a fresh schema, and compare two schemas.

A rebuild runs the same projection code through its own consumer, so the live projector
is never touched; `compare` gives row counts and a content checksum per table.
"""

from __future__ import annotations

import contextlib
import uuid

import asyncpg
import msgspec
from nats.aio.client import Client as NATS
from nats.js.errors import NotFoundError

from runtime.eventstore import EventStore
from runtime.projector import Projection, Projector


class TableDigest(msgspec.Struct, frozen=True, kw_only=True):
    """A table's row count and an order-independent checksum of its rows."""

    table: str
    rows: int
    checksum: str


async def rebuild(nc: NATS, pool: asyncpg.Pool, projection: Projection, schema: str, *,
                  stream: str = "EVENTS", within: float = 600.0) -> int:
    """Project the whole log into ``schema`` (dropped first); returns the sequence reached."""
    async with pool.acquire() as conn:
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    token = await EventStore(nc, stream).last_sequence()
    consumer = f"rebuild_{schema}_{uuid.uuid4().hex[:8]}"
    projector = Projector(nc, pool, projection, schema=schema, stream=stream, consumer=consumer)
    await projector.start()
    try:
        await projector.wait_until(token, within=within)
    finally:
        await projector.stop()
        with contextlib.suppress(NotFoundError):
            await nc.jetstream().delete_consumer(stream, consumer)
    return token


async def digest(pool: asyncpg.Pool, schema: str, table: str) -> TableDigest:
    """Row count and md5 of the sorted rows of one table."""
    row = await pool.fetchrow(
        f"SELECT count(*) AS n, coalesce(md5(string_agg(r::text, '|' ORDER BY r::text)), '') "
        f"AS sum FROM {schema}.{table} r")
    return TableDigest(table=table, rows=int(row["n"]), checksum=str(row["sum"]))


async def compare(pool: asyncpg.Pool, left: str, right: str,
                  tables: tuple[str, ...]) -> list[str]:
    """Differences between two schemas' tables (empty when they match)."""
    problems = []
    for table in tables:
        a, b = await digest(pool, left, table), await digest(pool, right, table)
        if a.rows != b.rows:
            problems.append(f"{table}: {a.rows} rows in {left}, {b.rows} in {right}")
        elif a.checksum != b.checksum:
            problems.append(f"{table}: same row count, different content")
    return problems
