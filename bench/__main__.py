"""`make bench`: ledgershare's paths against raw baselines on the same servers, same run.

Prints each figure and writes bench/results.md. `--quick` runs a smaller subset.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import asyncpg
import msgspec
import nats
from nats.aio.client import Client as NATS
from nats.js.api import AckPolicy, ConsumerConfig

from bench.check import bench_check
from contracts.base import Event
from contracts.subjects import aggregate_subjects, context_subjects, event_subject
from deploy.freeports import free_stack_ports
from deploy.parts import StackPorts
from deploy.stack import Stack
from runtime.eventstore import EventStore, Outgoing, StoredEvent
from runtime.projector import Projector
from runtime.settings import Settings


class Ticked(Event, frozen=True, kw_only=True):
    n: int


class Counts:
    """A one-table projection: events per aggregate."""

    name = "counts"
    subjects: Sequence[str] = (context_subjects("bench"),)

    async def setup(self, conn: asyncpg.Connection, schema: str) -> None:
        await conn.execute(f"CREATE TABLE IF NOT EXISTS {schema}.counts "
                           "(id text PRIMARY KEY, n bigint NOT NULL)")

    async def apply(self, conn: asyncpg.Connection, schema: str, event: StoredEvent) -> None:
        await conn.execute(f"INSERT INTO {schema}.counts VALUES ($1, 1) ON CONFLICT (id) "
                           "DO UPDATE SET n = counts.n + 1", event.subject.split(".")[3])


async def in_flight(count: int, width: int, one: Callable[[int], Awaitable[object]]) -> float:
    """Run ``one(i)`` for i < count with ``width`` concurrent workers; return ops/s."""
    queue = iter(range(count))

    async def worker() -> None:
        for i in queue:
            await one(i)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(width)))
    return count / (time.perf_counter() - started)


async def bench_append(nc: NATS, count: int) -> tuple[float, float]:
    js = nc.jetstream()
    store = EventStore(nc)
    payload = msgspec.json.encode(Ticked(n=0))

    async def raw(i: int) -> None:
        subject = f"evt.raw.agg.r{i}.Ticked"
        await js.publish(subject, payload, headers={
            "Nats-Msg-Id": f"raw{i}", "Nats-Expected-Last-Subject-Sequence": "0",
            "Nats-Expected-Last-Subject-Sequence-Subject": f"evt.raw.agg.r{i}.*"})

    async def ours(i: int) -> None:
        out = Outgoing(subject=event_subject("bench", "agg", f"a{i}", "Ticked"),
                       event=Ticked(n=i))
        await store.append(aggregate_subjects("bench", "agg", f"a{i}"), [out], expected=0,
                           msg_id=f"ours{i}")

    return await in_flight(count, 16, raw), await in_flight(count, 16, ours)


async def bench_projector(nc: NATS, pool: asyncpg.Pool, count: int) -> tuple[float, float]:
    js = nc.jetstream()
    psub = await js.pull_subscribe(context_subjects("bench"), durable="rawread",
                                   config=ConsumerConfig(ack_policy=AckPolicy.NONE))
    started, seen = time.perf_counter(), 0
    while seen < count:
        seen += len(await psub.fetch(256, timeout=5))
    raw = count / (time.perf_counter() - started)
    token = await EventStore(nc).last_sequence()
    projector = Projector(nc, pool, Counts(), schema="bench")
    started = time.perf_counter()
    await projector.start()
    await projector.wait_until(token, within=600)
    ours = count / (time.perf_counter() - started)
    await projector.stop()
    return raw, ours


async def measure(settings: Settings, count: int) -> list[tuple[str, str, float, float]]:
    nc = await nats.connect(settings.nats_url)
    await EventStore(nc).ensure_stream()
    pool = await asyncpg.create_pool(settings.pg_dsn, min_size=1, max_size=4)
    raw_pub, append = await bench_append(nc, count)
    raw_read, project = await bench_projector(nc, pool, count)
    check, echo = await bench_check(nc, pool, count)
    await pool.close()
    await nc.close()
    return [
        ("append with OCC, 16 in flight", "raw JetStream publish with OCC", append, raw_pub),
        ("projector catch-up (1 table)", "raw pull fetch, no processing", project, raw_read),
        (f"sharing.check, 64 in flight (p50 {check.p50_us:.0f} µs, p99 {check.p99_us:.0f} µs)",
         f"nats.micro echo (p50 {echo.p50_us:.0f} µs, p99 {echo.p99_us:.0f} µs)",
         check.rate, echo.rate),
    ]


def report(rows: list[tuple[str, str, float, float]], count: int) -> str:
    lines = [
        "# ledgershare benchmarks", "",
        f"{count} events per row; {platform.processor() or platform.machine()}, "
        f"Python {sys.version.split()[0]}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        "", "| path | ours (ops/s) | baseline | baseline (ops/s) | ratio |",
        "|---|---|---|---|---|",
    ]
    for path, base, ours, raw in rows:
        lines.append(f"| {path} | {ours:,.0f} | {base} | {raw:,.0f} | {ours / raw:.2f}x |")
    return "\n".join(lines) + "\n"


def main() -> None:
    args = argparse.ArgumentParser(prog="bench")
    args.add_argument("--quick", action="store_true")
    count = 2000 if args.parse_args().quick else 20000
    with tempfile.TemporaryDirectory() as home:
        stack = Stack.local(Settings(home=home), _ports(), fast=True, only=("nats", "postgres"))
        stack.up(detach=False, progress=print)
        try:
            rows = asyncio.run(measure(stack.settings, count))
        finally:
            stack.down(progress=print)
    text = report(rows, count)
    print(text)
    Path(__file__).with_name("results.md").write_text(text)


def _ports() -> StackPorts:
    return free_stack_ports()


if __name__ == "__main__":
    main()
