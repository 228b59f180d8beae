"""Rebuild a read model from sequence 1 into a fresh schema, and compare two schemas.

A rebuild runs the same projection code through its own consumer, so the live projector
is never touched; `compare` gives row counts and a content checksum per table. A service
with a read model serves `Rebuilder.replay` as its ``admin.<context>.replay`` operation.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import msgspec
from nats.aio.client import Client as NATS
from nats.js.errors import NotFoundError

from contracts.admin import AdminClient, Progress, Rebuild, Rebuilt, ReplayRunning, TableCheck
from contracts.errors import BadRequest
from contracts.subjects import safe_reply
from runtime.eventstore import EventStore
from runtime.projector import Projection, Projector
from runtime.service import Call, Endpoint

OnProgress = Callable[[int, int], Awaitable[None] | None]


class TableDigest(msgspec.Struct, frozen=True, kw_only=True):
    """A table's row count and an order-independent checksum of its rows."""

    table: str
    rows: int
    checksum: str


async def rebuild(nc: NATS, pool: asyncpg.Pool, projection: Projection, schema: str, *,
                  stream: str = "EVENTS", within: float = 600.0,
                  progress: OnProgress | None = None) -> int:
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


async def _report(projector: Projector, seq: int, progress: OnProgress | None) -> None:
    while progress is not None:
        reported = progress(projector.position, seq)
        if inspect.isawaitable(reported):
            await reported
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
            f"UPDATE {live}.checkpoints l SET last_seq = r.last_seq, "
            f"stream_created = r.stream_created "
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


async def catch_up_live(pool: asyncpg.Pool, schema: str, reached: int) -> None:
    """Wait (bounded) for the live projections to reach a rebuild: compare like with like."""
    for _ in range(100):
        live = await pool.fetchval(f"SELECT min(last_seq) FROM {schema}.checkpoints")
        if live is None or live >= reached:
            return
        await asyncio.sleep(0.1)


class Rebuilder:
    """One service's read model, rebuilt, verified and swapped on an operator's request."""

    def __init__(self, nc: NATS, pool: asyncpg.Pool, *, schema: str, tables: tuple[str, ...],
                 projection: Callable[[], Projection], stream: str = "EVENTS") -> None:
        self.nc, self.pool, self.stream = nc, pool, stream
        self.schema, self.tables, self.projection = schema, tables, projection

    def endpoint(self) -> Endpoint[Rebuild, Rebuilt]:
        """``admin.<context>.replay``."""
        return Endpoint(AdminClient.replay, self.replay)

    async def replay(self, req: Rebuild, call: Call) -> Rebuilt:
        """Rebuild into ``<schema>_rebuild``, compare with the live tables, swap if asked."""
        if req.progress and not safe_reply(req.progress):
            raise BadRequest("progress goes to a client inbox (_INBOX.…) only")
        fresh = f"{self.schema}_rebuild"
        async with self._alone():
            started = time.monotonic()
            reached = await rebuild(self.nc, self.pool, self.projection(), fresh,
                                    stream=self.stream, progress=self._reporter(req, started))
            seconds = time.monotonic() - started
            await catch_up_live(self.pool, self.schema, reached)
            checks = [await self._check(t, fresh) for t in self.tables]
            differences = await compare(self.pool, self.schema, fresh, self.tables)
            kept = await swap(self.pool, self.schema, fresh, self.tables) if req.swap else ""
        return Rebuilt(schema=self.schema, reached=reached, seconds=seconds, tables=checks,
                       differences=differences, swapped=bool(kept), kept_in=kept)

    def _reporter(self, req: Rebuild, started: float) -> OnProgress | None:
        if not req.progress:
            return None

        async def report(position: int, target: int) -> None:
            rate = position / max(time.monotonic() - started, 1e-9)
            await self.nc.publish(req.progress, msgspec.json.encode(
                Progress(position=position, target=target, rate=rate)))
        return report

    async def _check(self, table: str, fresh: str) -> TableCheck:
        live, rebuilt = await digest(self.pool, self.schema, table), await digest(
            self.pool, fresh, table)
        return TableCheck(table=table, live_rows=live.rows, rebuilt_rows=rebuilt.rows,
                          same=live == rebuilt)

    @contextlib.asynccontextmanager
    async def _alone(self) -> AsyncIterator[None]:
        # Instances of a service share one queue group: two operators' requests may land
        # on two instances, and both would rebuild into the same schema.
        async with self.pool.acquire() as conn:
            key = f"replay:{self.schema}"
            if not await conn.fetchval("SELECT pg_try_advisory_lock(hashtext($1))", key):
                raise ReplayRunning(f"a replay of {self.schema} is running already; "
                                    "wait for it to finish")
            try:
                yield
            finally:
                await conn.execute("SELECT pg_advisory_unlock(hashtext($1))", key)
