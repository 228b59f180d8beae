"""Rebuild a read model from sequence 1 into a fresh schema, and compare two schemas.

A rebuild runs the same projection code through its own consumer, so the live projector
is never touched; `compare` gives row counts and a content checksum per table.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable

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
                  stream: str = "EVENTS", within: float = 600.0,
                  progress: Callable[[int, int], None] | None = None) -> int:
    """Project the whole log into ``schema`` (dropped first); returns the sequence reached.

    ``progress(position, target)`` is called a few times a second while it runs.
    """
    async with pool.acquire() as conn:
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    seq = await EventStore(nc, stream).last_sequence()
    consumer = f"rebuild_{schema}_{uuid.uuid4().hex[:8]}"
    projector = Projector(nc, pool, projection, schema=schema, stream=stream, consumer=consumer,
                          batch=4096)
    await projector.start()
    reporter = asyncio.create_task(_report(projector, seq, progress))
    try:
        await projector.wait_until(seq, within=within)
    finally:
        reporter.cancel()
        await projector.stop()
        with contextlib.suppress(NotFoundError):
            await nc.jetstream().delete_consumer(stream, consumer)
    return seq


async def _report(projector: Projector, seq: int,
                  progress: Callable[[int, int], None] | None) -> None:
    while progress is not None:
        progress(projector.position, seq)
        await asyncio.sleep(0.2)


async def swap(pool: asyncpg.Pool, live: str, rebuilt: str, tables: tuple[str, ...]) -> str:
    """Make the rebuilt rows the live ones, in one transaction; returns where the old rows
    were kept.

    Rows are copied into the live tables rather than schemas renamed: services keep
    prepared statements bound to the live tables, and a renamed schema would leave them
    writing into the old one. The live projector waits on its checkpoint row meanwhile,
    then finds the checkpoint moved and restarts its cursor from it, so nothing between
    the two is lost or doubled.
    """
    old = f"{live}_old_{time.strftime('%Y%m%d%H%M%S')}"
    async with pool.acquire() as conn, conn.transaction():
        # Same lock order as a projector's batch: checkpoints first, then the rows.
        await conn.execute(f"SELECT * FROM {live}.checkpoints FOR UPDATE")
        await conn.execute(f"CREATE SCHEMA {old}")
        for table in (*tables, "checkpoints", "dead_letters"):
            await conn.execute(f"CREATE TABLE {old}.{table} AS TABLE {live}.{table}")
        for table in (*tables, "dead_letters"):
            await conn.execute(f"TRUNCATE {live}.{table}")
            await conn.execute(f"INSERT INTO {live}.{table} SELECT * FROM {rebuilt}.{table}")
        # Only the rebuilt projections move; policies sharing the schema keep their place.
        await conn.execute(
            f"UPDATE {live}.checkpoints l SET last_seq = r.last_seq "
            f"FROM {rebuilt}.checkpoints r WHERE l.projection = r.projection")
        await conn.execute(f"DROP SCHEMA {rebuilt} CASCADE")
    return old


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
