"""`ledgershare run`: the stack, every service, a look at it working, until Ctrl-C."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import httpx
import nats
from nats.aio.client import Client as NATS
from rich.console import Console

from cli.demo import demo
from cli.operate import ask_all
from cli.stackcmds import local_stack, status_table
from deploy.stack import PartStatus
from runtime.eventstore import EventStore
from runtime.settings import Settings, load_settings
from services.registry import SERVICES, names


def run(console: Console) -> int:
    stack = local_stack()
    started_stack = not stack.running()
    if started_stack:
        console.rule("starting the local stack")
        stack.up(progress=console.print)
    else:
        console.print("the local stack was already running; it will be left running")
    settings = load_settings()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs = start_services(settings, console)
        asyncio.run(show(settings, console, stack.status()))
        demo(console)
        wait_for_interrupt(console, settings)
    finally:
        stop_services(procs, console)
        if started_stack:
            stack.down(progress=console.print)
    return 0


def start_services(settings: Settings, console: Console) -> list[subprocess.Popen[bytes]]:
    """Launch each service with its log under <home>/logs, then wait until it answers."""
    procs = []
    logs = os.path.join(settings.home, "logs")
    os.makedirs(logs, exist_ok=True)
    for service in SERVICES:
        with open(os.path.join(logs, f"{service.name}.log"), "ab") as log:
            procs.append(subprocess.Popen([sys.executable, "-m", service.module],
                                          stdout=log, stderr=subprocess.STDOUT,
                                          start_new_session=True))
    asyncio.run(wait_for_services(settings, names()))
    for name in names():
        console.print(f"service {name:<9} answering on NATS")
    with open(os.path.join(logs, "gateway.log"), "ab") as log:
        procs.append(subprocess.Popen([sys.executable, "-m", "gateway"], stdout=log,
                                      stderr=subprocess.STDOUT, start_new_session=True))
    served = wait_for_gateway(settings)
    console.print(f"gateway   answering on HTTP: desktop API {api_url(settings)} "
                  f"({served} operations; {api_url(settings)}/openapi.json)")
    console.print(f"gateway   Member Center {member_center_url(settings)} sends a browser to "
                  f"{wechat_login_page(settings)}")
    return procs


def api_url(settings: Settings) -> str:
    """Where the desktop API of the local gateway is."""
    return f"http://{settings.gateway_host}:{settings.gateway_port}/api/v1"


def member_center_url(settings: Settings) -> str:
    """Where the WeChat Member Center of the local gateway is (open it in a browser: the
    local WeChat stand-in asks which WeChat user you are)."""
    return f"http://{settings.gateway_host}:{settings.gateway_port}/wx"


def wechat_login_page(settings: Settings) -> str:
    """Where the Member Center sends a browser that has no session: WeChat's authorize
    page (the local stand-in's, under `make run`)."""
    answer = httpx.get(member_center_url(settings), follow_redirects=True, timeout=5.0)
    answer.raise_for_status()
    return str(answer.url.copy_with(query=None, fragment=None))


def wait_for_gateway(settings: Settings, within: float = 30.0) -> int:
    """Once the gateway answers, the number of operations its API serves."""
    deadline = time.monotonic() + within
    while True:
        try:
            doc = httpx.get(f"{api_url(settings)}/openapi.json", timeout=1.0).json()
            return len(doc["paths"])
        except (httpx.HTTPError, ValueError, KeyError):
            if time.monotonic() > deadline:
                raise RuntimeError("the gateway did not start; see its log") from None
            time.sleep(0.1)


async def wait_for_services(settings: Settings, expected: list[str],
                            within: float = 30.0) -> None:
    """Return once every named service answers ``$SRV.PING.<name>``."""
    nc = await nats.connect(settings.nats_servers)
    try:
        deadline = time.monotonic() + within
        for name in expected:
            while True:
                try:
                    await nc.request(f"$SRV.PING.{name}", b"", timeout=0.5)
                    break
                except Exception:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"service {name} did not start; see its log") from None
                    await asyncio.sleep(0.1)
    finally:
        await nc.close()


async def show(settings: Settings, console: Console, parts: list[PartStatus]) -> None:
    """Print the stack, the event log and the running services."""
    console.print(status_table(parts))
    nc = await nats.connect(settings.nats_servers)
    try:
        events = EventStore(nc, settings.stream)
        await events.ensure_stream(replicas=settings.stream_replicas,
                                  duplicate_window_s=settings.duplicate_window_s)
        info = await nc.jetstream().stream_info(settings.stream)
        console.print(f"event log: stream {settings.stream}, {info.state.messages} events, "
                      f"last sequence {info.state.last_seq}")
        console.print(f"services running: {', '.join(await discover(nc)) or 'none yet'}")
    finally:
        await nc.close()


async def discover(nc: NATS) -> list[str]:
    """Names and versions of every service instance answering ``$SRV.PING``."""
    return sorted(f"{p['name']} {p['version']}" for p in await ask_all(nc, "$SRV.PING"))


def wait_for_interrupt(console: Console, settings: Settings) -> None:
    console.rule("ledgershare is running")
    console.print(f"NATS        {settings.nats_url}")
    console.print(f"PostgreSQL  {settings.pg_dsn}")
    console.print(f"S3          {settings.s3_endpoint} (bucket {settings.s3_bucket})")
    console.print(f"desktop API {api_url(settings)}")
    console.print(f"Member Center {member_center_url(settings)} (WeChat is the local stand-in "
                  f"at {settings.wechat_open_base})")
    console.print("try `ledgershare status` in another terminal; press Ctrl-C to stop")
    if os.environ.get("LEDGERSHARE_RUN_ONCE"):
        return
    try:
        signal.pause()
    except KeyboardInterrupt:
        console.print("\nstopping …")


def stop_services(procs: list[subprocess.Popen[bytes]], console: Console) -> None:
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
