"""A three-node NATS cluster on 127.0.0.1 with EVENTS at R3: kill the stream leader mid-load."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import nats
import pytest
from nats.aio.client import Client as NATS

from deploy.freeports import free_port
from deploy.parts import find_binary
from runtime.eventstore import EventStore
from runtime.settings import Settings
from tests.reliability.test_faults import SERVICES, Services, under_load
from tests.services import service_settings

pytestmark = pytest.mark.reliability


class Cluster:
    """Three nats-servers routed to each other, each with its own file store."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.client = {f"n{i}": free_port() for i in range(1, 4)}
        self.route = {f"n{i}": free_port() for i in range(1, 4)}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    @property
    def url(self) -> str:
        return ",".join(f"nats://127.0.0.1:{p}" for p in self.client.values())

    def start(self, name: str) -> None:
        conf = self.folder / f"{name}.conf"
        routes = [f"nats-route://127.0.0.1:{p}" for n, p in self.route.items() if n != name]
        conf.write_text(
            f"server_name: {name}\nlisten: 127.0.0.1:{self.client[name]}\n"
            f"jetstream {{ store_dir: {json.dumps(str(self.folder / name))} }}\n"
            f"cluster {{ name: ledgershare, listen: 127.0.0.1:{self.route[name]}, "
            f"routes: {json.dumps(routes)} }}\n")
        log = (self.folder / f"{name}.log").open("ab")
        self.procs[name] = subprocess.Popen([find_binary("nats-server"), "-c", str(conf)],
                                            stdout=log, stderr=subprocess.STDOUT)
        log.close()

    def kill(self, name: str) -> None:
        self.procs[name].send_signal(signal.SIGKILL)
        self.procs[name].wait()

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.terminate()
        for proc in self.procs.values():
            proc.wait(timeout=30)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path)
    for name in c.client:
        c.start(name)
    try:
        yield c
    finally:
        c.stop()


async def ready(url: str) -> tuple[NATS, EventStore]:
    """A connection once the cluster has elected a meta leader and holds EVENTS at R3."""
    nc = await nats.connect(url.split(","), max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    events = EventStore(nc, timeout=5)
    for _ in range(150):
        try:
            await events.ensure_stream(replicas=3)
            return nc, events
        except Exception:
            await asyncio.sleep(0.2)
    raise AssertionError("the cluster did not form")


@pytest.fixture
async def on_cluster(cluster: Cluster, settings: Settings, pool: asyncpg.Pool,
                     tmp_path: Path) -> AsyncIterator[tuple[NATS, EventStore, Services]]:
    nc, events = await ready(cluster.url)
    configured = service_settings(settings).with_overrides(nats_url=cluster.url,
                                                           stream_replicas=3)
    services = Services(configured, tmp_path)
    for name in SERVICES:
        services.start(name)
    await asyncio.sleep(3)
    try:
        yield nc, events, services
    finally:
        services.stop_all()
        await nc.close()


async def test_killing_the_stream_leader_loses_and_doubles_nothing(
        cluster: Cluster, on_cluster: tuple[NATS, EventStore, Services], pool: asyncpg.Pool,
        tmp_path: Path) -> None:
    nc, events, _ = on_cluster

    async def kill_leader() -> None:
        info = await nc.jetstream().stream_info("EVENTS")
        assert info.cluster is not None and info.cluster.leader
        leader = info.cluster.leader
        cluster.kill(leader)
        await asyncio.sleep(2.0)
        cluster.start(leader)

    await under_load(nc, events, pool, tmp_path, [("kill EVENTS leader (R3)", kill_leader)])
