"""`ledgershare run`: the stack, every service, a look at it working, until Ctrl-C.

Ctrl-C, SIGTERM (what `timeout`, systemd or a container runtime send) and SIGHUP (its
terminal closed) all stop it the same way: the services and the gateway, then the stack
if it started it. What it starts also ends with it if it is killed outright: each child
gets its stop signal from the kernel when the runner ends (`deploy.children`).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Any

import httpx
import nats
from nats.aio.client import Client as NATS
from rich.console import Console

from cli.demo import demo
from cli.operate import ask_all
from cli.stackcmds import local_stack, status_table
from deploy.children import die_with_parent
from deploy.stack import PartStatus, StackError, public
from runtime.eventstore import EventStore
from runtime.settings import STACK_USER, Settings, load_settings
from services.registry import SERVICES, names

Handler = Callable[[int, FrameType | None], Any] | int | None  # what signal.signal takes


class Stopped(KeyboardInterrupt):
    """A stop signal (Ctrl-C, SIGTERM, SIGHUP), raised where Ctrl-C raises
    KeyboardInterrupt: one way to stop."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class StopSignals:
    """While armed, SIGINT, SIGTERM and SIGHUP raise `Stopped` in the main thread, and raise
    it again every AGAIN_S, unless one is on its way up, until disarmed: Python runs a
    signal handler wherever the main thread is, and an exception raised in a weakref
    callback or a ``__del__`` is printed and dropped (seen: asyncio's WeakSet of tasks
    swallowed a SIGHUP's). Disarmed (the runner is stopping what it started), they are
    ignored, so the cleanup runs to its end."""

    caught = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    AGAIN_S = 0.25

    def __init__(self) -> None:
        self.armed = True
        self.pending = 0  # the first stop signal received
        self._before: dict[int, Handler] = {}

    def __enter__(self) -> StopSignals:
        for sig in (*self.caught, signal.SIGALRM):
            # One ignored when it started stays ignored: under nohup, a closed terminal
            # does not stop it.
            if signal.getsignal(sig) != signal.SIG_IGN:
                self._before[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.disarm()
        for sig, handler in self._before.items():
            if handler is not None:  # None: not set from Python, nothing to put back
                signal.signal(sig, handler)

    def disarm(self) -> None:
        self.armed = False
        signal.setitimer(signal.ITIMER_REAL, 0)

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if signum == signal.SIGHUP:
            _without_terminal()
        if signum != signal.SIGALRM:
            self.pending = self.pending or signum
        if not (self.armed and self.pending):
            return
        signal.setitimer(signal.ITIMER_REAL, self.AGAIN_S)
        # In an except or finally block, or an __exit__, of one on its way up: not again.
        if not isinstance(sys.exc_info()[1], Stopped):
            raise Stopped(self.pending)


def _without_terminal() -> None:
    # The terminal is gone: writing to it fails (EIO), and the cleanup must not fail.
    devnull = os.open(os.devnull, os.O_WRONLY)
    for fd in (1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)


STOP_WITHIN_S = 12.0  # a service drains for up to 10 s (ServiceHost.stop)


def run(console: Console) -> int:
    with StopSignals() as signals:
        try:
            return _run(console, signals)
        except Stopped as stop:
            return 128 + stop.signum


def _run(console: Console, signals: StopSignals) -> int:
    stack = local_stack()
    started_stack = not stack.running()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        if started_stack:
            console.rule("starting the local stack")
            try:
                stack.up(progress=console.print, tied=True)
            except StackError:
                started_stack = False  # nothing of ours runs (maybe someone else's stack)
                raise
        else:
            console.print("the local stack was already running; it will be left running")
        settings = load_settings()
        start_services(settings, console, procs)
        asyncio.run(show(settings, console, stack.status()))
        demo(console)
        wait_for_interrupt(console, settings)
    finally:
        signals.disarm()  # another signal must not cut the cleanup short
        stop_services(procs, console)
        if started_stack:
            stack.down(progress=console.print)
    return 0


def start_child(argv: list[str], log_path: str,
                env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """A child in a session of its own (Ctrl-C in the terminal reaches the runner only, which
    stops the children in order) that gets SIGTERM when the runner ends, however it ends."""
    with open(log_path, "ab", opener=_private) as log:
        return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True,
                                preexec_fn=die_with_parent(signal.SIGTERM), env=env)


def _private(path: str, flags: int) -> int:
    return os.open(path, flags, 0o600)


def start_services(settings: Settings, console: Console,
                   procs: list[subprocess.Popen[bytes]] | None = None,
                   ) -> list[subprocess.Popen[bytes]]:
    """Launch each service with its log under <home>/logs, then wait until it answers; each
    process goes into ``procs`` (returned) as soon as it exists, so that whoever stops them
    has every one even if starting fails half-way."""
    procs = [] if procs is None else procs
    logs = os.path.join(settings.home, "logs")
    os.makedirs(logs, mode=0o700, exist_ok=True)
    # On the local stack each service connects as itself (`runtime.app.main` reads its own
    # section of stack.json), the gateway as the WeChat gateway: one process serves both
    # the desktop API and the Member Center, and that audience covers both.
    for service in SERVICES:
        procs.append(start_child([sys.executable, "-m", service.module],
                                 os.path.join(logs, f"{service.name}.log")))
    asyncio.run(wait_for_services(settings, names()))
    for name in names():
        console.print(f"service {name:<9} answering on NATS")
    procs.append(start_child([sys.executable, "-m", "gateway"],
                             os.path.join(logs, "gateway.log"),
                             env={**os.environ, STACK_USER: "wechat"}))
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
    nc = await nats.connect(settings.nats_servers, inbox_prefix=settings.nats_inbox_prefix)
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
    nc = await nats.connect(settings.nats_servers, inbox_prefix=settings.nats_inbox_prefix)
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
    console.print(f"NATS        {public(settings.nats_url)}")
    console.print(f"PostgreSQL  {public(settings.pg_dsn)}")
    console.print("credentials `ledgershare status --json` (the operator's), "
                  f"{settings.home}/stack.json (everyone's; only you can read it)")
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
    """SIGTERM to each (they drain and close), SIGKILL to any still there after a while."""
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_WITHIN_S
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
