"""The gateway's overhead on a sharing-backed read: Cloud Share (`sharing.cloud_shares`,
every account set friends share with a member, with its years and versions) asked through
the gateway served for real (`python -m gateway`: uvicorn over TCP; httpx here, keeping
its connections alive) against the same request sent over NATS from here, to the same
sharing service process, in the same run, at the same concurrency. aiohttp asks the same
gateway too: the difference between the two clients is the client's cost, not the
gateway's.

``python -m bench.gateway`` runs this row alone on servers of its own; `make bench` runs
it after the grant row, over the log the replay row wrote.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import asyncpg
import httpx
import msgspec
import nats
from nats.aio.client import Client as NATS

from bench import grant, log
from bench.check import Figures, timed
from cli.run import wait_for_gateway
from contracts.sharing import CloudShares, CloudSharesRequest, SharingClient
from deploy.freeports import free_port, free_stack_ports
from deploy.stack import Stack
from runtime.app import create_pool
from runtime.eventstore import EventStore
from runtime.replay import rebuild
from runtime.settings import Settings, load_settings
from runtime.tokens import Signer
from services.sharing.projection import AccessProjection

WIDTH = 16  # requests in flight on each path (over HTTP each on a kept-alive connection)
PATH = "/api/v1/sharing/cloud_shares"
READERS = 1000  # members whose Cloud Share is read, in turn


class Overhead(msgspec.Struct, frozen=True):
    """The same read through the gateway (httpx, and aiohttp as a second client) and
    straight over NATS."""

    gateway: Figures
    nats: Figures
    aiohttp: Figures


Reader = tuple[str, str]  # a member's session and drive token


async def measure(nc: NATS, pool: asyncpg.Pool, settings: Settings, env: dict[str, str],
                  members: int, count: int, seq: int) -> Overhead:
    """``count`` Cloud Share reads each way, ``WIDTH`` in flight, over the replayed log of
    ``members`` members (its end at ``seq``)."""
    readers = _readers(settings, members)
    async with grant.sharing_process(pool, settings, env, seq), \
            _gateway_process(settings, env) as url, _connections(url) as idle, \
            aiohttp.ClientSession(url, connector=aiohttp.TCPConnector(limit=WIDTH)) as other:
        paths = [_over_nats(nc, readers), _over_http(idle, readers),
                 _over_aiohttp(other, readers)]
        for path in paths:  # warm each: connections, caches
            await timed(4 * WIDTH, WIDTH, path)
        direct, through, second = [await timed(count, WIDTH, path) for path in paths]
    return Overhead(gateway=through, nats=direct, aiohttp=second)


def _readers(settings: Settings, members: int) -> list[Reader]:
    """Sessions and drive tokens of members spread over the log (each is shared some sets
    by friends there), signed as identity would."""
    signer, now = Signer(settings.token_private_key), datetime.now(UTC)

    def token(i: int, kind: str) -> str:
        return signer.issue(member_id=log.member(i), kind=kind, now=now,
                            ttl=timedelta(hours=1), pv=0)[0]
    return [(token(i, "session"), token(i, "drive"))
            for i in range(0, members, max(1, members // READERS))]


def _over_nats(nc: NATS, readers: list[Reader]) -> Callable[[int], Awaitable[None]]:
    client = SharingClient(nc, timeout=30)

    async def call(i: int) -> None:
        session, drive = readers[i % len(readers)]
        reply = await client.cloud_shares(CloudSharesRequest(session=session, drive_token=drive))
        assert reply.sharers
    return call


@asynccontextmanager
async def _connections(url: str) -> AsyncIterator[asyncio.Queue[httpx.AsyncClient]]:
    """``WIDTH`` httpx clients, each keeping one connection alive, for one request in
    flight each. One client shared by all of them serialises on its connection pool's lock
    (encode/httpx#3215): here 80-125/s with a p99 near a second, against 250/s with a
    client each, the same gateway answering."""
    idle: asyncio.Queue[httpx.AsyncClient] = asyncio.Queue()
    async with AsyncExitStack() as stack:
        for _ in range(WIDTH):
            idle.put_nowait(await stack.enter_async_context(httpx.AsyncClient(
                base_url=url, timeout=30, limits=httpx.Limits(max_connections=1))))
        yield idle


def _over_http(idle: asyncio.Queue[httpx.AsyncClient],
               readers: list[Reader]) -> Callable[[int], Awaitable[None]]:
    decode = msgspec.json.Decoder(CloudShares).decode

    async def call(i: int) -> None:
        session, drive = readers[i % len(readers)]
        http = idle.get_nowait()  # never empty: as many clients as requests in flight
        try:
            answer = await http.post(PATH, json={"drive_token": drive},
                                     headers={"Authorization": f"Bearer {session}"})
        finally:
            idle.put_nowait(http)
        assert answer.status_code == 200, answer.text
        assert decode(answer.content).sharers
    return call


def _over_aiohttp(http: aiohttp.ClientSession,
                  readers: list[Reader]) -> Callable[[int], Awaitable[None]]:
    decode = msgspec.json.Decoder(CloudShares).decode

    async def call(i: int) -> None:
        session, drive = readers[i % len(readers)]
        async with http.post(PATH, json={"drive_token": drive},
                             headers={"Authorization": f"Bearer {session}"}) as answer:
            assert answer.status == 200, await answer.text()
            assert decode(await answer.read()).sharers
    return call


@asynccontextmanager
async def _gateway_process(settings: Settings, env: dict[str, str]) -> AsyncIterator[str]:
    """`python -m gateway` on a free port, with the services' log level; its URL."""
    served = settings.with_overrides(gateway_port=free_port())
    process = await asyncio.to_thread(_start_gateway, served, env)
    try:
        await asyncio.to_thread(wait_for_gateway, served)
        yield f"http://{served.gateway_host}:{served.gateway_port}"
    finally:
        process.terminate()
        await asyncio.to_thread(process.wait, 30)


def _start_gateway(settings: Settings, env: dict[str, str]) -> subprocess.Popen[bytes]:
    path = Path(settings.home) / "logs" / "bench-gateway.log"
    path.parent.mkdir(exist_ok=True)
    with path.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "gateway"], stdout=out, stderr=subprocess.STDOUT,
            env={**env, "LEDGERSHARE_GATEWAY_PORT": str(settings.gateway_port)})


def summary(o: Overhead) -> str:
    """The figures as printed."""
    def line(name: str, f: Figures) -> str:
        return (f"{name}: {f.rate:,.0f}/s, p50 {f.p50_us / 1000:.2f} ms, "
                f"p99 {f.p99_us / 1000:.2f} ms")
    return "\n".join([line("through the gateway (httpx)", o.gateway),
                      line("through the gateway (aiohttp)", o.aiohttp),
                      line("over NATS", o.nats),
                      f"gateway (httpx) / NATS: {o.gateway.rate / o.nats.rate:.2f}x the rate, "
                      f"p50 {o.gateway.p50_us / o.nats.p50_us:.2f}x, "
                      f"p99 {o.gateway.p99_us / o.nats.p99_us:.2f}x; with aiohttp "
                      f"{o.aiohttp.rate / o.nats.rate:.2f}x the rate, "
                      f"p50 {o.aiohttp.p50_us / o.nats.p50_us:.2f}x"])


async def alone(settings: Settings, members: int, count: int,
                say: Callable[[str], None]) -> Overhead:
    """This row on its own: the log of ``members`` members written and replayed first."""
    nc = await nats.connect(settings.nats_url)
    pool = await create_pool(settings.pg_dsn, size=4)
    try:
        await EventStore(nc).ensure_stream()
        seq = await log.write(nc, members)
        say(f"wrote {seq:,} events; replaying them into sharing's read model")
        await rebuild(nc, pool, AccessProjection(), "sharing")
        say(f"{count:,} Cloud Share reads each way, {WIDTH} in flight")
        return await measure(nc, pool, settings, grant.service_env(settings), members,
                             count, seq)
    finally:
        await pool.close()
        await nc.close()


def main() -> None:
    args = argparse.ArgumentParser(prog="python -m bench.gateway")
    args.add_argument("--members", type=int, default=5_000)
    args.add_argument("--calls", type=int, default=5_000)
    given = args.parse_args()
    started = time.perf_counter()

    def say(text: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f} s] {text}", flush=True)

    with tempfile.TemporaryDirectory() as home:
        bus = Stack.local(Settings(home=home), free_stack_ports(), fast=True,
                          only=("nats", "postgres"))
        bus.up(detach=False, progress=say)
        try:
            settings = load_settings({**os.environ, "LEDGERSHARE_HOME": home},
                                     user="admin")  # in-process: every right
            print(summary(asyncio.run(alone(settings, given.members, given.calls, say))))
        finally:
            bus.down(progress=say)


if __name__ == "__main__":
    main()
