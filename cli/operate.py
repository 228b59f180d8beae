"""Operator commands: read the log, rebuild and verify read models, list services."""

from __future__ import annotations

import argparse
from typing import Any

import msgspec
import nats
from nats.aio.client import Client as NATS
from nats.js.api import ConsumerConfig, DeliverPolicy
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn
from rich.table import Table

from cli.client import table
from contracts import admin
from contracts.admin import AdminClient, Rebuilt
from contracts.base import HDR_ACTOR, HDR_EVENT_TYPE
from contracts.errors import BadRequest, Unavailable
from contracts.subjects import admin_subject, all_events, context_subjects, token
from runtime.eventstore import EventStore, foreign_reason

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

async def replay(nc: NATS, console: Console, a: argparse.Namespace) -> int:
    """Have a service rebuild its read model and verify it (and swap, if asked), showing
    its progress: the service does the work, so a bus connection is all this needs."""
    client = AdminClient(nc, context=token(a.service), timeout=a.timeout)
    try:
        result = await _replay_with_bar(client, a.swap, console)
    except Unavailable:
        raise Unavailable(f"no {a.service} service answers admin.{a.service}.replay "
                          f"(services that do: {', '.join(await replayable(nc)) or 'none'})"
                          ) from None
    _report(result, console, a.json)
    return _verdict(result, console)


async def _replay_with_bar(client: AdminClient, swap: bool, console: Console) -> Rebuilt:
    with Progress("replay", BarColumn(), MofNCompleteColumn(), "{task.fields[rate]} ev/s",
                  TimeRemainingColumn(), console=console) as bar:
        task = bar.add_task("replay", total=None, rate="-")

        def progress(p: admin.Progress) -> None:
            bar.update(task, completed=p.position, total=p.target, rate=f"{p.rate:,.0f}")

        result = await admin.replay(client, swap=swap, progress=progress)
        bar.update(task, completed=result.reached, total=result.reached)
        return result


async def replayable(nc: NATS) -> list[str]:
    """The services that serve ``admin.<name>.replay`` now."""
    return sorted({info["name"] for info in await ask_all(nc, "$SRV.INFO")
                   for ep in info.get("endpoints", [])
                   if ep.get("subject") == admin_subject(info["name"], "replay")})


def _report(result: Rebuilt, console: Console, as_json: bool) -> None:
    rows = [[t.table, t.live_rows, t.rebuilt_rows, "match" if t.same else "DIFFERENT"]
            for t in result.tables]
    if as_json:
        print(msgspec.json.encode([dict(zip(["table", "live", "rebuilt", "verdict"], r,
                                            strict=True)) for r in rows]).decode())
    else:
        console.print(table(f"{result.schema} vs {result.schema}_rebuild",
                            ["table", "live rows", "rebuilt rows", "content"], rows))
    console.print(f"replayed {result.reached} events in {result.seconds:.1f}s "
                  f"({result.reached / max(result.seconds, 1e-9):,.0f} events/s)")
    if result.swapped:
        console.print(f"swapped: {result.schema} now holds the rebuilt rows; the previous "
                      f"ones are kept in {result.kept_in}")


def _verdict(result: Rebuilt, console: Console) -> int:
    for p in result.differences:
        console.print(f"[red]difference:[/] {p}")
    if not result.differences:
        console.print("[green]verified: the rebuilt read model equals the live one[/]")
    return 0 if not result.differences or result.swapped else 1


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
