"""`make bench`: ledgershare's paths against raw baselines on the same servers, same run.

Prints each figure and writes bench/results.md. `--quick` runs a smaller subset; `--checks`
only the access-check rows (printed, not written).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path

import asyncpg
import msgspec
import nats
from nats.aio.client import Client as NATS
from nats.js.api import AckPolicy, ConsumerConfig
from rich.console import Console

from bench import gateway, grant, lag, replay, transfer
from bench import sync as sync_bench
from bench.check import Scale, bench_check, bench_scale, timed
from cli.run import start_services, stop_services
from contracts.base import Event
from contracts.subjects import aggregate_subjects, context_subjects, event_subject
from deploy.freeports import free_stack_ports
from deploy.parts import find_binary
from deploy.stack import Stack
from runtime.app import create_pool
from runtime.eventstore import EventStore, Outgoing, StoredEvent
from runtime.projector import Projector
from runtime.settings import Settings, load_settings


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


async def bench_append(nc: NATS, count: int) -> tuple[float, float]:
    js = nc.jetstream()
    events = EventStore(nc)
    payload = msgspec.json.encode(Ticked(n=0))

    async def raw(i: int) -> None:
        subject = f"evt.raw.agg.r{i}.Ticked"
        await js.publish(subject, payload, headers={
            "Nats-Msg-Id": f"raw{i}", "Nats-Expected-Last-Subject-Sequence": "0",
            "Nats-Expected-Last-Subject-Sequence-Subject": f"evt.raw.agg.r{i}.*"})

    async def ours(i: int) -> None:
        out = Outgoing(subject=event_subject("bench", "agg", f"a{i}", "Ticked"),
                       event=Ticked(n=i))
        await events.append(aggregate_subjects("bench", "agg", f"a{i}"), [out], expected=0,
                           msg_id=f"ours{i}")

    return (await timed(count, 16, raw)).rate, (await timed(count, 16, ours)).rate


async def bench_projector(nc: NATS, pool: asyncpg.Pool, count: int) -> tuple[float, float]:
    js = nc.jetstream()
    psub = await js.pull_subscribe(context_subjects("bench"), durable="rawread",
                                   config=ConsumerConfig(ack_policy=AckPolicy.NONE))
    started, seen = time.perf_counter(), 0
    while seen < count:
        seen += len(await psub.fetch(256, timeout=5))
    raw = count / (time.perf_counter() - started)
    seq = await EventStore(nc).last_sequence()
    projector = Projector(nc, pool, Counts(), schema="bench")
    started = time.perf_counter()
    await projector.start()
    await projector.wait_until(seq, within=600)
    ours = count / (time.perf_counter() - started)
    await projector.stop()
    return raw, ours


class Size(msgspec.Struct, frozen=True):
    """How big each row runs (`--quick`: about a minute in all)."""

    ops: int  # calls or events for the short rows
    log_members: int  # bench.log members for the replay (20 events each)
    scale_members: int  # the large access-check case: members x 10 grants
    lag_rate: float
    lag_seconds: float
    file_mb: int
    big_mb: int
    trials: int
    gateway_calls: int  # Cloud Share reads on each path of the gateway row


FULL = Size(ops=20_000, log_members=50_000, scale_members=100_000, lag_rate=3000,
            lag_seconds=10, file_mb=256, big_mb=1024, trials=3, gateway_calls=5_000)
QUICK = Size(ops=2_000, log_members=2_000, scale_members=10_000, lag_rate=1000,
             lag_seconds=3, file_mb=32, big_mb=64, trials=1, gateway_calls=500)


class Row(msgspec.Struct, frozen=True):
    """One line of the results: ours against its baseline, and the issue's bar."""

    path: str
    ours: str
    baseline: str
    base: str
    ratio: str
    bar: str
    met: bool | None  # None: no bar for this row


def _rate(value: float, unit: str = "/s") -> str:
    return f"{value:,.0f}{unit}"


async def measure_bus(settings: Settings, size: Size, say: Callable[[str], None],
                      *, only_checks: bool = False) -> list[Row]:
    """Every row that needs only NATS and PostgreSQL (or only the access checks'), in one
    process."""
    nc = await nats.connect(settings.nats_url)
    await EventStore(nc).ensure_stream()
    pool = await create_pool(settings.pg_dsn, size=10)
    try:
        if only_checks:
            return await _access_rows(nc, pool, size, say)
        return await _bus_rows(nc, pool, settings, size, say)
    finally:
        await pool.close()
        await nc.close()


async def _bus_rows(nc: NATS, pool: asyncpg.Pool, settings: Settings, size: Size,
                    say: Callable[[str], None]) -> list[Row]:
    say("replay: writing the log, reading it raw, rebuilding sharing's read model")
    events, raw_read, replayed = await replay.measure(nc, pool, size.log_members, say)
    rows = [Row(f"replay of {events:,} events into sharing's read model", _rate(replayed),
                "raw ordered consumer, no processing", _rate(raw_read),
                f"{replayed / raw_read:.2f}x", "≥ 0.25x and ≥ 50,000/s",
                replayed / raw_read >= 0.25 and replayed >= 50_000)]
    say("append with OCC against raw publishes")
    raw_pub, append = await bench_append(nc, size.ops)
    rows.append(Row("append with OCC + dedup, 16 in flight", _rate(append),
                    "raw JetStream publish with OCC, 16 in flight", _rate(raw_pub),
                    f"{append / raw_pub:.2f}x", "—", None))
    say("projector catch-up, one table")
    raw_fetch, project = await bench_projector(nc, pool, size.ops)
    rows.append(Row("projector catch-up (1 table)", _rate(project),
                    "raw pull fetch, no processing", _rate(raw_fetch),
                    f"{project / raw_fetch:.2f}x", "—", None))
    say("sync leases: take + renew + release round trips, 16 devices")
    rows.append(_lease_row(await sync_bench.measure(
        nc, settings, grant.service_env(settings), size.ops // 3), raw_pub))
    rows += await _access_rows(nc, pool, size, say)
    say("grant commands: the sharing service as a process, 64 clients on their own sets")
    grants = await grant.measure(nc, pool, settings, grant.service_env(settings),
                                 size.log_members, size.ops, events)
    rows.append(Row("`sharing.grant` command, 64 clients, service in its own process",
                    _rate(grants),
                    "raw JetStream publish with OCC, 16 in flight", _rate(raw_pub),
                    f"{grants / raw_pub:.2f}x", "≥ 0.2x", grants / raw_pub >= 0.2))
    say("Cloud Share through the gateway as a process (HTTP) and over NATS, 16 in flight")
    rows.append(_gateway_row(await gateway.measure(
        nc, pool, settings, grant.service_env(settings), size.log_members,
        size.gateway_calls, events)))
    say(f"projector lag: {size.lag_rate:,.0f} events/s for {size.lag_seconds:.0f} s")
    lag_ = await lag.measure(nc, pool, size.lag_rate, size.lag_seconds)
    rows.append(Row(f"sharing projector under a mixed load (lag p50 {lag_.p50_ms:.0f} ms, "
                    f"p99 {lag_.p99_ms:.0f} ms, max {lag_.max_ms:.0f} ms)",
                    _rate(lag_.applied), "the load's own rate", _rate(lag_.offered),
                    f"{lag_.applied / lag_.offered:.2f}x", "keeps up; p99 lag printed",
                    lag_.applied >= 0.97 * lag_.offered))
    return rows


def _lease_row(r: sync_bench.RoundTrips, raw_pub: float) -> Row:
    # Three commands per round trip: the ratio compares commands with raw publishes.
    return Row(f"sync lease take + renew + release round trip, 16 devices on their own "
               f"set-years, service in its own process (p50 {r.p50_ms:.1f} ms, "
               f"p99 {r.p99_ms:.1f} ms)", _rate(r.rate, " round trips/s"),
               "raw JetStream publish with OCC, 16 in flight", _rate(raw_pub),
               f"{3 * r.rate / raw_pub:.2f}x (commands)", "—", None)


def _gateway_row(o: gateway.Overhead) -> Row:
    def ms(us: float) -> str:
        return f"{us / 1000:.1f} ms"
    return Row(f"`sharing.cloud_shares` through the gateway: uvicorn over TCP, httpx keeping "
               f"connections alive, 16 in flight (p50 {ms(o.gateway.p50_us)}, "
               f"p99 {ms(o.gateway.p99_us)})", _rate(o.gateway.rate),
               f"the same request over NATS, 16 in flight (p50 {ms(o.nats.p50_us)}, "
               f"p99 {ms(o.nats.p99_us)})", _rate(o.nats.rate),
               f"{o.gateway.rate / o.nats.rate:.2f}x; p50 "
               f"{o.gateway.p50_us / o.nats.p50_us:.2f}x",
               f"— (aiohttp as the client: {_rate(o.aiohttp.rate)}, p50 "
               f"{ms(o.aiohttp.p50_us)})", None)


async def _access_rows(nc: NATS, pool: asyncpg.Pool, size: Size,
                       say: Callable[[str], None]) -> list[Row]:
    say("sharing.check against a nats.micro echo")
    check, echo = await bench_check(nc, pool, size.ops)
    rows = [Row(f"`sharing.check`, 64 in flight (p50 {check.p50_us:,.0f} µs, "
                f"p99 {check.p99_us:,.0f} µs)", _rate(check.rate),
                f"nats.micro echo (p50 {echo.p50_us:,.0f} µs, p99 {echo.p99_us:,.0f} µs)",
                _rate(echo.rate),
                f"{check.rate / echo.rate:.2f}x; p50 {check.p50_us / echo.p50_us:.2f}x",
                "≥ 0.5x; p50 ≤ 1.5x",
                check.rate >= 0.5 * echo.rate and check.p50_us <= 1.5 * echo.p50_us)]
    say("sharing.check over 1,000 grants and 100 agency memberships")
    small = await bench_scale(nc, pool, 100, 10, size.ops, say)
    big = size.scale_members
    say(f"sharing.check over {big:,} members, {big * 10:,} grants and "
        f"{big // 10:,} agencies of ten")
    large = await bench_scale(nc, pool, big, 10, size.ops, say)
    rows.append(_scale_row(large, small))
    return rows


def _scale_row(large: Scale, small: Scale) -> Row:
    mix = "friends' grants, agency supervisors and administrators, owners: a third each"

    def case(s: Scale) -> str:
        return (f"{s.grants:,} grants, {s.memberships:,} agency memberships "
                f"({s.agencies:,} agencies, {s.access_rows:,} access rows; index loaded in "
                f"{s.loaded_s:.1f} s; p50 {s.figures.p50_us:,.0f} µs)")

    return Row(f"`sharing.check` with {large.members:,} members, {case(large)}; {mix}",
               f"p99 {large.figures.p99_us:,.0f} µs", f"the same mix with {case(small)}",
               f"p99 {small.figures.p99_us:,.0f} µs",
               f"{large.figures.p99_us / small.figures.p99_us:.2f}x", "p99 ≤ 1.5x",
               large.figures.p99_us <= 1.5 * small.figures.p99_us)


def measure_files(stack: Stack, size: Size, say: Callable[[str], None]) -> list[Row]:
    """The transfer rows: the four services run as processes, `ledgershare` commands."""
    home = stack.settings.home
    env = {**os.environ, "LEDGERSHARE_HOME": home, "LEDGERSHARE_QUOTA_BYTES": str(16 << 30),
           "LEDGERSHARE_PASSWORD": "bench-pass-1", "LEDGERSHARE_LOG_LEVEL": "WARNING"}
    say(f"transfers: {size.file_mb} MB through `ledgershare backup` and raw aiobotocore")
    procs = _services(env)
    try:
        f = transfer.measure(stack.settings, env, Path(home), size_mb=size.file_mb,
                             big_mb=size.big_mb, trials=size.trials)
    finally:
        stop_services(procs, Console(stderr=True))
    note = "process to process; in this process the raw one does {:,.0f} MB/s"
    return [
        Row(f"`ledgershare backup upload` of {f.size_mb} MB", _rate(f.upload, " MB/s"),
            "`python -m bench.rawcopy put`: aiobotocore multipart PUT, 4 parts at a time",
            _rate(f.raw_upload, " MB/s"), f"{f.upload / f.raw_upload:.2f}x",
            "≥ 0.85x (" + note.format(f.raw_upload_inproc) + ")",
            f.upload >= 0.85 * f.raw_upload),
        Row(f"`ledgershare backup download` of {f.size_mb} MB", _rate(f.download, " MB/s"),
            "`python -m bench.rawcopy get`: aiobotocore GET streamed to a file",
            _rate(f.raw_download, " MB/s"), f"{f.download / f.raw_download:.2f}x",
            "≥ 0.85x (" + note.format(f.raw_download_inproc) + ")",
            f.download >= 0.85 * f.raw_download),
        Row(f"client peak RSS, {f.big_mb} MB upload / download",
            f"{f.upload_rss_mb:.0f} / {f.download_rss_mb:.0f} MB", "—", "—", "—",
            "≤ 100 MB", max(f.upload_rss_mb, f.download_rss_mb) <= 100),
    ]


def _services(env: dict[str, str]) -> list[subprocess.Popen[bytes]]:
    saved = dict(os.environ)
    os.environ.update(env)  # start_services passes its environment on
    try:
        return start_services(load_settings(), Console(stderr=True))
    finally:
        os.environ.clear()
        os.environ.update(saved)


def report(rows: list[Row], size: Size, quick: bool, seconds: float) -> str:
    lines = [
        "# ledgershare benchmarks", "",
        f"`make bench{' QUICK=1' if quick else ''}`: {size.ops:,} calls per short row; "
        f"{_machine()}; took {seconds:.0f} s.", "",
        "| path | ours | baseline | baseline figure | ratio | bar | met |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        met = "—" if r.met is None else ("yes" if r.met else "**no**")
        lines.append(f"| {r.path} | {r.ours} | {r.baseline} | {r.base} | {r.ratio} | "
                     f"{r.bar} | {met} |")
    return "\n".join(lines) + "\n"


def _machine() -> str:
    versions = ", ".join(f"{name} {metadata.version(name)}" for name in
                         ("nats-py", "msgspec", "asyncpg", "aiobotocore"))
    server = subprocess.run([find_binary("nats-server"), "--version"], capture_output=True,
                            text=True, check=False).stdout.strip()
    return (f"{os.cpu_count()} cores, {platform.machine()}, Python "
            f"{sys.version.split()[0]}, {server}, {versions}, "
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")


def main() -> None:
    args = argparse.ArgumentParser(prog="bench")
    args.add_argument("--quick", action="store_true")
    args.add_argument("--checks", action="store_true",
                      help="only the access-check rows; print them, write nothing")
    given = args.parse_args()
    quick = given.quick
    size = QUICK if quick else FULL
    started = time.perf_counter()

    def say(text: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f} s] {text}", flush=True)

    # Two stacks, one after the other: what the transfer rows leave behind (services'
    # consumers, SeaweedFS's background work) stays out of the bus rows.
    if given.checks:
        print(report(_checks_alone(size, say), size, quick, time.perf_counter() - started))
        return
    with tempfile.TemporaryDirectory() as home:
        files = Stack.local(Settings(home=f"{home}/files"), free_stack_ports(), fast=True)
        files.up(detach=False, progress=say)
        try:
            rows = measure_files(files, size, say)
        finally:
            files.down(progress=say)
        bus = Stack.local(Settings(home=f"{home}/bus"), free_stack_ports(), fast=True,
                          only=("nats", "postgres"))
        bus.up(detach=False, progress=say)
        try:
            settings = load_settings({**os.environ, "LEDGERSHARE_HOME": f"{home}/bus"},
                                     user="admin")  # in-process: every right
            rows = asyncio.run(measure_bus(settings, size, say)) + rows
        finally:
            bus.down(progress=say)
    text = report(rows, size, quick, time.perf_counter() - started)
    print(text)
    Path(__file__).with_name("results.md").write_text(text)


def _checks_alone(size: Size, say: Callable[[str], None]) -> list[Row]:
    with tempfile.TemporaryDirectory() as home:
        bus = Stack.local(Settings(home=home), free_stack_ports(), fast=True,
                          only=("nats", "postgres"))
        bus.up(detach=False, progress=say)
        try:
            settings = load_settings({**os.environ, "LEDGERSHARE_HOME": home}, user="admin")
            return asyncio.run(measure_bus(settings, size, say, only_checks=True))
        finally:
            bus.down(progress=say)


if __name__ == "__main__":
    main()
