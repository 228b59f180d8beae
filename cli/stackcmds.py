"""`ledgershare up | down | status`: the local stack from a terminal."""

from __future__ import annotations

import asyncio

import asyncpg
import msgspec
from rich.console import Console
from rich.table import Table

from deploy.parts import ports_from_env
from deploy.stack import PartStatus, Stack
from runtime.eventstore import FOREIGN
from runtime.settings import Settings, load_settings
from services.registry import SERVICES


def local_stack(settings: Settings | None = None) -> Stack:
    """The stack described by settings and ``LEDGERSHARE_PORT_*``."""
    return Stack.local(settings or load_settings(), ports_from_env())


def up(console: Console) -> int:
    stack = local_stack()
    if not stack.running():
        console.print(f"starting the local stack in {stack.home} …")
    stack.up(progress=console.print)
    console.print("[green]stack is up[/]; `ledgershare status` shows it, `down` stops it")
    return 0


def down(console: Console) -> int:
    stopped = local_stack().down(progress=console.print)
    if not stopped:
        console.print("nothing was running")
    return 0


# Where projections keep their dead letters: each service's read-model schema.
SCHEMAS = tuple(s.read_model.schema for s in SERVICES if s.read_model is not None)


def status(console: Console, *, as_json: bool) -> int:
    stack = local_stack()
    parts = stack.status()
    postgres_up = any(p.name == "postgres" and p.healthy for p in parts)
    parked, foreign = (asyncio.run(dead_letters(stack.settings.pg_dsn)) if postgres_up
                       else ({}, {}))
    if as_json:
        doc = {"home": str(stack.home), "endpoints": stack.endpoints(),
               "parts": [msgspec.to_builtins(p) for p in parts], "dead_letters": parked,
               "foreign_messages": foreign}
        print(msgspec.json.format(msgspec.json.encode(doc)).decode())
    else:
        console.print(status_table(parts))
        for where, count in parked.items():
            console.print(f"[yellow]{count} poison event(s) parked in {where}.dead_letters[/]"
                          " (projections went on without them)")
            if foreign.get(where):
                console.print(f"  {foreign[where]} of them foreign: in the log, but written "
                              "by no append")
    return 0 if all(p.healthy for p in parts) else 1


async def dead_letters(dsn: str) -> tuple[dict[str, int], dict[str, int]]:
    """Parked events per schema, and how many of them are foreign messages (in the log,
    but written by no append); schemas not created yet count as none."""
    conn = await asyncpg.connect(dsn, timeout=3)
    try:
        found: dict[str, tuple[int, int]] = {}
        for schema in SCHEMAS:
            exists = await conn.fetchval("SELECT to_regclass($1)", f"{schema}.dead_letters")
            if exists is not None:
                found[schema] = await _parked(conn, schema)
        return ({k: n for k, (n, _) in found.items() if n},
                {k: f for k, (_, f) in found.items() if f})
    finally:
        await conn.close()


async def _parked(conn: asyncpg.Connection, schema: str) -> tuple[int, int]:
    # A message is parked once per projection that reads it: count messages, not rows.
    row = await conn.fetchrow(
        f"SELECT count(DISTINCT stream_seq) AS n, count(DISTINCT stream_seq) "
        f"FILTER (WHERE starts_with(reason, $1)) AS f FROM {schema}.dead_letters", FOREIGN)
    return int(row["n"]), int(row["f"])


def status_table(parts: list[PartStatus]) -> Table:
    """Parts as a table: name, pid, health, endpoint."""
    table = Table(title="ledgershare local stack")
    for column in ("part", "pid", "health", "endpoint", "detail"):
        table.add_column(column)
    for p in parts:
        health = "[green]healthy[/]" if p.healthy else "[red]down[/]"
        table.add_row(p.name, str(p.pid or "-"), health, p.endpoint, p.detail)
    return table
