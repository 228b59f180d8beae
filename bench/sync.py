"""A sync lease's round trip as a device makes it: take, renew, release, three commands
through the sync service (in its own process), each a session check, a device check in
the log (two direct gets), the command journal and an append with OCC; 16 devices at
once, each on a set-year of its own. The baseline is the raw JetStream publish with OCC
of the same run (`bench.__main__.bench_append`)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from nats.aio.client import Client as NATS

from cli.run import wait_for_services
from contracts.sync import (
    DeviceRegistered,
    OnSetYear,
    SyncClient,
    SyncTurnedOn,
    TakeLease,
    device_subject,
    device_subjects,
    set_year_id,
    set_year_subject,
    set_year_subjects,
)
from runtime.eventstore import EventStore, Outgoing
from runtime.settings import Settings
from runtime.tokens import Signer

DEVICES = 16
NOW = datetime.now(UTC)


@dataclass(frozen=True)
class RoundTrips:
    """Round trips per second, and their latency."""

    rate: float
    p50_ms: float
    p99_ms: float


@dataclass(frozen=True)
class Device:
    session: str
    device_id: str
    set_id: str

    def lease(self, n: int, step: str) -> TakeLease:
        return TakeLease(command_id=f"bench-{self.device_id[:8]}-{n}-{step}",
                         session=self.session, device_id=self.device_id,
                         set_id=self.set_id, year=2024, ttl_s=60)

    def release(self, n: int) -> OnSetYear:
        return OnSetYear(command_id=f"bench-{self.device_id[:8]}-{n}-release",
                         session=self.session, device_id=self.device_id,
                         set_id=self.set_id, year=2024)


async def measure(nc: NATS, settings: Settings, env: dict[str, str],
                  count: int) -> RoundTrips:
    """``count`` round trips over ``DEVICES`` devices, the service in its own process."""
    devices = await seed(EventStore(nc), settings)
    async with sync_process(settings, env):
        return await _round_trips(SyncClient(nc, timeout=30), devices, count // DEVICES)


async def seed(events: EventStore, settings: Settings) -> list[Device]:
    """A member, a registered device and a synced set-year per device, written to the log
    (setup, not measured)."""
    signer = Signer(settings.token_private_key)
    devices = []
    for i in range(DEVICES):
        member, device_id = str(uuid.uuid4()), str(uuid.uuid4())
        registered = DeviceRegistered(device_id=device_id, member_id=member, name=f"pc{i}",
                                      at=NOW)
        await events.append(device_subjects(device_id), [Outgoing(
            subject=device_subject(device_id, registered), event=registered)], expected=0,
            msg_id=f"bench-dev-{device_id}")
        sy = set_year_id(member, f"set{i}", 2024)
        on = SyncTurnedOn(set_year_id=sy, member_id=member, set_id=f"set{i}", year=2024,
                          device_id=device_id, at=NOW, set_name=f"set{i}")
        await events.append(set_year_subjects(sy), [Outgoing(
            subject=set_year_subject(sy, on), event=on)], expected=0,
            msg_id=f"bench-on-{sy}")
        session, _ = signer.issue(member_id=member, kind="session", now=NOW,
                                  ttl=timedelta(hours=2), pv=0)
        devices.append(Device(session=session, device_id=device_id, set_id=f"set{i}"))
    return devices


async def _round_trips(client: SyncClient, devices: list[Device], each: int) -> RoundTrips:
    latencies: list[float] = []

    async def device(d: Device) -> None:
        for n in range(each):
            started = time.perf_counter()
            await client.take_lease(d.lease(n, "take"))
            await client.renew_lease(d.lease(n, "renew"))
            await client.release_lease(d.release(n))
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(device(d) for d in devices))
    total = time.perf_counter() - started
    latencies.sort()
    return RoundTrips(len(latencies) / total, latencies[len(latencies) // 2] * 1e3,
                      latencies[int(len(latencies) * 0.99)] * 1e3)


@asynccontextmanager
async def sync_process(settings: Settings, env: dict[str, str]) -> AsyncIterator[None]:
    """`python -m services.sync`, once it answers."""
    service = await asyncio.to_thread(_start, settings, env)
    try:
        await wait_for_services(settings, ["sync"])
        yield
    finally:
        service.terminate()
        await asyncio.to_thread(service.wait, 30)


def _start(settings: Settings, env: dict[str, str]) -> subprocess.Popen[bytes]:
    path = Path(settings.home) / "logs" / "bench-sync.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as out:
        return subprocess.Popen([sys.executable, "-m", "services.sync"], env=env,
                                stdout=out, stderr=subprocess.STDOUT)
