"""A small projection used to test the projector: running totals per account.

Its update is deliberately not idempotent (total = total + amount), so an event applied
twice or lost shows up in the totals.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence

import asyncpg
import msgspec
import nats

from contracts.base import Event
from contracts.subjects import context_subjects, split_event_subject
from runtime.app import create_pool
from runtime.eventstore import StoredEvent
from runtime.projector import Projector


class Deposited(Event, frozen=True, kw_only=True):
    amount: int


class Balances:
    """Projection: test.account.<id>.Deposited -> balances(account, total, events)."""

    name = "balances"
    subjects: Sequence[str] = (context_subjects("test", "account"),)
    _decoder = msgspec.json.Decoder(Deposited)

    async def setup(self, conn: asyncpg.Connection, schema: str) -> None:
        await conn.execute(
            f"CREATE TABLE IF NOT EXISTS {schema}.balances ("
            "account text PRIMARY KEY, total bigint NOT NULL, events int NOT NULL)")

    async def apply(self, conn: asyncpg.Connection, schema: str, event: StoredEvent) -> None:
        deposit = self._decoder.decode(event.data)
        account = split_event_subject(event.subject)[2]
        await conn.execute(
            f"INSERT INTO {schema}.balances VALUES ($1, $2, 1) ON CONFLICT (account) DO "
            "UPDATE SET total = balances.total + $2, events = balances.events + 1",
            account, deposit.amount)


class BatchBalances(Balances):
    """The same tables, written a batch at a time (the projector's BatchProjection path)."""

    def prepare(self, events: list[StoredEvent]) -> list[StoredEvent]:
        for event in events:
            self._decoder.decode(event.data)  # a bad one: the batch goes one by one
        return events

    async def apply_prepared(self, conn: asyncpg.Connection, schema: str,
                             prepared: list[StoredEvent]) -> None:
        for event in prepared:
            await self.apply(conn, schema, event)


async def rows(pool: asyncpg.Pool, schema: str) -> list[tuple[str, int, int]]:
    records = await pool.fetch(f"SELECT account, total, events FROM {schema}.balances "
                               "ORDER BY account")
    return [(r["account"], r["total"], r["events"]) for r in records]


async def _work(nats_url: str, dsn: str, schema: str) -> None:
    nc = await nats.connect(nats_url)
    pool = await create_pool(dsn, size=4)
    projector = Projector(nc, pool, Balances(), schema=schema, batch=50)
    await projector.start()
    print("started", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(_work(sys.argv[1], sys.argv[2], sys.argv[3]))
