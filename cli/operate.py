"""Operator commands: read the log, rebuild and verify read models, list services."""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import asyncpg
import msgspec
import nats
from nats.aio.client import Client as NATS
from nats.js.api import ConsumerConfig, DeliverPolicy
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn
from rich.table import Table

from cli.client import table
from contracts.base import HDR_ACTOR, HDR_EVENT_TYPE
from contracts.errors import BadRequest
from contracts.subjects import all_events, context_subjects
from runtime.app import create_pool
from runtime.eventstore import EventStore, foreign_reason
from runtime.projector import Projection
from runtime.replay import compare, digest, rebuild, swap
from runtime.settings import Settings
from services.identity import tables as identity_tables
from services.identity.projection import IdentityProjection
from services.sharing import tables as sharing_tables
from services.sharing.projection import AccessProjection
from services.social import tables as social_tables
from services.social.projection import SocialProjection
from services.storage import tables as storage_tables
from services.storage.projection import StorageProjection

READ_MODELS: dict[str, tuple[str, type[Any], tuple[str, ...]]] = {
    "identity": ("identity", IdentityProjection, identity_tables.TABLES),
    "social": ("social", SocialProjection, social_tables.TABLES),
    "storage": ("storage", StorageProjection, storage_tables.TABLES),
    "sharing": ("sharing", AccessProjection, sharing_tables.TABLES),
}


# ---- events -------------------------------------------------------------------------------

async def events_tail(nc: NATS, console: Console, a: argparse.Namespace) -> None:
    """The last N events (of one context), oldest first; --follow keeps printing."""
    subject = context_subjects(a.context) if a.context else all_events()
    last = await EventStore(nc).last_sequence()
    start = max(1, last - a.count + 1)
    sub = await nc.jetstream().subscribe(subject, ordered_consumer=True, config=ConsumerConfig(
        deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start))
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=None if a.follow else 1.0)
            except nats.errors.TimeoutError:
                return
            print_event(console, msg.metadata.sequence.stream, msg.subject,
                        dict(msg.headers or {}), msg.data, a.json)
            if not a.follow and msg.metadata.num_pending == 0:
                return
    finally:
        await sub.unsubscribe()


async def events_show(nc: NATS, console: Console, a: argparse.Namespace) -> None:
    """Every event of one aggregate (its subject filter, or one event subject)."""
    subject = a.subject if a.subject.count(".") == 4 else a.subject.rstrip(".*") + ".*"
    if not subject.startswith("evt."):
        raise BadRequest("give an event subject, e.g. evt.identity.member.<id>.*")
    events = await EventStore(nc).messages(subject)  # foreign ones too, marked as such
    if not events:
        console.print(f"no events on {subject}")
    for e in events:
        print_event(console, e.seq, e.subject, e.headers, e.data, a.json)


def print_event(console: Console, seq: int, subject: str, headers: dict[str, str],
                data: bytes, as_json: bool) -> None:
    foreign = foreign_reason(headers, subject)
    if as_json:
        doc = {"seq": seq, "subject": subject, "event": _json_or_text(data)}
        print(msgspec.json.encode({**doc, "foreign": foreign} if foreign else doc).decode())
        return
    # Headers and subjects are whatever was published: escaped, never markup.
    kind = f"[red]{escape(foreign)}[/]" if foreign else (
        f"[cyan]{escape(headers.get(HDR_EVENT_TYPE, ''))}[/]")
    when = headers.get("Nats-Time-Stamp", "")[:19]
    console.print(f"[bold]{seq:>7}[/] {when} {kind} {escape(subject)} "
                  f"actor={escape(headers.get(HDR_ACTOR, '-'))}", highlight=False)
    console.print(f"        {data.decode(errors='replace')}", highlight=False, markup=False)


def _json_or_text(data: bytes) -> Any:
    # A foreign message (not written by an append) need not be JSON, nor even text.
    try:
        return msgspec.json.decode(data)
    except msgspec.DecodeError:
        return data.decode(errors="replace")


# ---- replay -------------------------------------------------------------------------------

async def replay(nc: NATS, settings: Settings, console: Console,
                 a: argparse.Namespace) -> int:
    """Rebuild a service's read model into a fresh schema, verify it, swap if asked."""
    schema, projection_type, tables = READ_MODELS[a.service]
    fresh = f"{schema}_rebuild"
    pool = await create_pool(settings.pg_dsn, size=4)
    try:
        started = time.monotonic()
        reached = await _rebuild_with_bar(nc, pool, projection_type(), fresh, console)
        seconds = time.monotonic() - started
        await _catch_up_live(pool, schema, reached)
        problems = await compare(pool, schema, fresh, tables)
        await _report(pool, schema, fresh, tables, console, a.json)
        console.print(f"replayed {reached} events in {seconds:.1f}s "
                      f"({reached / max(seconds, 1e-9):,.0f} events/s)")
        swapped = a.swap and await _swap(pool, schema, fresh, tables, console)
        return _verdict(problems, swapped, console)
    finally:
        await pool.close()


async def _rebuild_with_bar(nc: NATS, pool: asyncpg.Pool, projection: Projection, schema: str,
                            console: Console) -> int:
    with Progress("replay", BarColumn(), MofNCompleteColumn(), "{task.fields[rate]} ev/s",
                  TimeRemainingColumn(), console=console) as bar:
        task = bar.add_task("replay", total=None, rate="-")
        started = time.monotonic()

        def progress(position: int, target: int) -> None:
            rate = position / max(time.monotonic() - started, 1e-9)
            bar.update(task, completed=position, total=target, rate=f"{rate:,.0f}")

        reached = await rebuild(nc, pool, projection, schema, progress=progress)
        bar.update(task, completed=reached, total=reached)
        return reached


async def _catch_up_live(pool: asyncpg.Pool, schema: str, reached: int) -> None:
    # Compare like with like: wait (bounded) for the live projection to reach the rebuild.
    for _ in range(100):
        live = await pool.fetchval(f"SELECT min(last_seq) FROM {schema}.checkpoints")
        if live is None or live >= reached:
            return
        await asyncio.sleep(0.1)


async def _report(pool: asyncpg.Pool, live: str, fresh: str, tables: tuple[str, ...],
                  console: Console, as_json: bool) -> None:
    rows = []
    for t in tables:
        a, b = await digest(pool, live, t), await digest(pool, fresh, t)
        rows.append([t, a.rows, b.rows, "match" if a == b else "DIFFERENT"])
    if as_json:
        print(msgspec.json.encode([dict(zip(["table", "live", "rebuilt", "verdict"], r,
                                            strict=True)) for r in rows]).decode())
    else:
        console.print(table(f"{live} vs {fresh}", ["table", "live rows", "rebuilt rows",
                                                   "content"], rows))


async def _swap(pool: asyncpg.Pool, live: str, fresh: str, tables: tuple[str, ...],
                console: Console) -> bool:
    old = await swap(pool, live, fresh, tables)
    console.print(f"swapped: {live} now holds the rebuilt rows; the previous ones are kept "
                  f"in {old}")
    return True


def _verdict(problems: list[str], swapped: bool, console: Console) -> int:
    for p in problems:
        console.print(f"[red]difference:[/] {p}")
    if not problems:
        console.print("[green]verified: the rebuilt read model equals the live one[/]")
    return 0 if not problems or swapped else 1


# ---- services -----------------------------------------------------------------------------

async def services(nc: NATS, console: Console, a: argparse.Namespace) -> None:
    """Every service instance answering $SRV.PING, with its endpoints and figures."""
    found = []
    for ping in await ask_all(nc, "$SRV.PING"):
        stats = msgspec.json.decode((await nc.request(
            f"$SRV.STATS.{ping['name']}.{ping['id']}", b"", timeout=2)).data)
        found.append(stats)
    if a.json:
        print(msgspec.json.encode(found).decode())
        return
    console.print(_services_table(found))


def _services_table(found: list[dict[str, Any]]) -> Table:
    rows = []
    for s in sorted(found, key=lambda s: (s["name"], s["id"])):
        for ep in s["endpoints"]:
            data = ep.get("data") or {}
            rows.append([s["name"], s["version"], s["id"][:8], ep["subject"],
                         data.get("requests", ep["num_requests"]),
                         data.get("errors", ep["num_errors"]),
                         f"{data.get('average_ns', 0) / 1000:.0f} µs"])
    return table("services", ["service", "version", "instance", "endpoint", "requests",
                              "errors", "avg latency"], rows)


async def ask_all(nc: NATS, subject: str) -> list[dict[str, Any]]:
    """Every answer to a request sent to all (e.g. ``$SRV.PING``), for 0.3 s."""
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    await nc.publish(subject, b"", reply=inbox)
    found = []
    try:
        while True:
            msg = await sub.next_msg(timeout=0.3)
            if not (msg.headers and msg.headers.get("Status")):
                found.append(msgspec.json.decode(msg.data))
    except nats.errors.TimeoutError:
        return found
    finally:
        await sub.unsubscribe()
