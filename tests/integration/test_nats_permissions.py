"""deploy/nats/production.conf: each user only its own subjects, and the system works under it."""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from pathlib import Path

import asyncpg
import msgspec
import nats
import pytest
from nats.aio.client import Client as NATS
from rich.console import Console

from cli.demo import Walkthrough
from contracts.admin import AdminClient, replay
from contracts.errors import RateLimited
from contracts.identity import IdentityClient
from deploy.freeports import free_port
from deploy.parts import find_binary
from gateway.limits import limiter_for
from runtime.eventstore import EventStore
from runtime.journal import Journal
from runtime.service import ServiceHost
from runtime.settings import Settings
from services.registry import SERVICES
from tests.services import running, service_settings

CONF = Path(__file__).resolve().parents[2] / "deploy" / "nats" / "production.conf"
USERS = ["identity", "social", "storage", "sharing", "wechat", "desktop", "operator"]


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[str]:
    """nats-server running deploy/nats/production.conf; yields host:port."""
    port = free_port()
    env = {**os.environ, "NATS_SERVER_NAME": "secured", "NATS_LISTEN": f"127.0.0.1:{port}",
           "NATS_STORE_DIR": str(tmp_path / "js"),
           **{f"{u.upper()}_PASSWORD": f"pw-{u}" for u in USERS}}
    proc = subprocess.Popen([find_binary("nats-server"), "-c", str(CONF)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        asyncio.run(_until_up(f"nats://operator:pw-operator@127.0.0.1:{port}"))
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def _until_up(url: str) -> None:
    for _ in range(100):
        try:
            nc = await nats.connect(url, allow_reconnect=False, max_reconnect_attempts=0)
        except Exception:
            await asyncio.sleep(0.05)
            continue
        await EventStore(nc).ensure_stream()  # only the operator may create the streams
        await Journal(nc).ensure()
        await limiter_for(nc, Settings()).ensure()
        await nc.close()
        return
    raise AssertionError("nats-server with production.conf did not start")


class Recorder:
    """A connection as one user, remembering the permission errors the server sends."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    async def connect(self, hostport: str, user: str) -> NATS:
        async def on_error(err: Exception) -> None:
            self.errors.append(str(err))

        return await nats.connect(f"nats://{user}:pw-{user}@{hostport}", error_cb=on_error,
                                  inbox_prefix=f"_INBOX_{user}")

    async def refused(self, action: object) -> bool:
        self.errors.clear()
        await action  # type: ignore[misc]
        await asyncio.sleep(0.2)
        return any("permissions violation" in e.lower() for e in self.errors)


@pytest.mark.parametrize(("user", "kind", "subject"), [
    ("identity", "pub", "evt.social.friendship.x.FriendAdded"),
    ("social", "pub", "evt.sharing.share.x.ShareGranted"),
    ("storage", "pub", "evt.identity.member.x.PasswordChanged"),
    ("sharing", "pub", "storage.set_quota"),
    ("wechat", "pub", "evt.identity.member.x.MemberRegistered"),
    ("desktop", "pub", "identity.login_wechat"),
    ("desktop", "pub", "sharing.check"),
    ("desktop", "pub", "storage.set_quota"),
    ("desktop", "pub", "$JS.API.STREAM.DELETE.EVENTS"),
    ("desktop", "pub", "$JS.API.STREAM.CREATE.KV_LIMITS"),
    ("wechat", "pub", "$JS.API.STREAM.PURGE.KV_LIMITS"),
    ("identity", "pub", "$JS.API.STREAM.PURGE.EVENTS"),
    ("identity", "pub", "$JS.API.CONSUMER.CREATE.EVENTS.x"),
    ("identity", "sub", "admin.identity.>"),
    ("desktop", "sub", "evt.>"),
    ("desktop", "sub", "_INBOX_wechat.>"),
    ("wechat", "sub", "identity.>"),
    ("social", "sub", "identity.>"),
    ("storage", "sub", "_INBOX_sharing.>"),
    ("social", "pub", "cmd.identity.x"),
    ("wechat", "pub", "cmd.storage.x"),
    ("desktop", "pub", "admin.sharing.replay"),
    ("wechat", "pub", "admin.identity.replay"),
    ("social", "sub", "admin.sharing.>"),
])
def test_each_forbidden_publish_or_subscribe_is_refused(secured: str, user: str, kind: str,
                                                         subject: str) -> None:
    async def attempt() -> None:
        rec = Recorder()
        nc = await rec.connect(secured, user)
        try:
            if kind == "pub":
                assert await rec.refused(nc.publish(subject, b"{}"))
            else:
                assert await rec.refused(nc.subscribe(subject))
        finally:
            await nc.close()

    asyncio.run(attempt())


def test_allowed_calls_are_not_refused(secured: str) -> None:
    async def attempt() -> None:
        rec = Recorder()
        nc = await rec.connect(secured, "identity")
        assert not await rec.refused(nc.publish("evt.identity.member.x.NicknameChanged",
                                                b"{}"))
        await nc.close()

    asyncio.run(attempt())


@pytest.fixture
async def system(secured: str, settings: Settings, pool: asyncpg.Pool
                 ) -> AsyncIterator[NATS]:
    """Every service, each connected as its own user; yields the WeChat gateway."""
    configured = service_settings(settings)
    async with AsyncExitStack() as stack:
        for service in SERVICES:
            name = service.name
            nc = await nats.connect(f"nats://{name}:pw-{name}@{secured}",
                                    inbox_prefix=f"_INBOX_{name}")
            stack.push_async_callback(nc.close)
            await stack.enter_async_context(running(service.build, configured, nc, pool,
                                                    EventStore(nc)))
        gateway = await nats.connect(f"nats://wechat:pw-wechat@{secured}",
                                     inbox_prefix="_INBOX_wechat")
        stack.push_async_callback(gateway.close)
        yield gateway


async def test_the_whole_walkthrough_works_under_the_production_permissions(
        system: NATS, settings: Settings) -> None:
    console = Console(file=io.StringIO())
    with tempfile.TemporaryDirectory() as folder:
        walk = Walkthrough(system, console, "4242", Path(folder), settings)
        await walk.run()
    assert walk.steps == 21


async def test_an_operator_replays_a_read_model_over_the_bus_alone(
        system: NATS, secured: str) -> None:
    operator = await nats.connect(f"nats://operator:pw-operator@{secured}",
                                  inbox_prefix="_INBOX_operator")
    try:
        rebuilt = await replay(AdminClient(operator, context="sharing", timeout=60),
                               swap=True, progress=lambda _p: None)
    finally:
        await operator.close()
    assert rebuilt.differences == [] and rebuilt.swapped and rebuilt.tables


@pytest.mark.parametrize("user", ["desktop", "wechat"])
async def test_a_gateway_is_discoverable_under_its_own_user_and_serves_nothing_else(
        secured: str, user: str) -> None:
    rec = Recorder()
    nc = await rec.connect(secured, user)
    presence = ServiceHost(nc, name="gateway", version="1.0.0", description="edge",
                           endpoints=[])
    await presence.start()
    operator = await nats.connect(f"nats://operator:pw-operator@{secured}")
    try:
        pong = await operator.request("$SRV.PING.gateway", b"", timeout=2)
        assert msgspec.json.decode(pong.data)["name"] == "gateway"
        assert not [e for e in rec.errors if "permissions violation" in e.lower()]
        assert await rec.refused(nc.subscribe("identity.>"))  # never a service's requests
    finally:
        await presence.stop()
        await operator.close()
        await nc.close()


@pytest.mark.parametrize("user", ["desktop", "wechat"])
async def test_a_gateway_counts_its_rate_limits_in_the_operators_bucket(
        secured: str, user: str) -> None:
    rec = Recorder()
    nc = await rec.connect(secured, user)
    limiter = limiter_for(nc, Settings(gateway_limit_per_client=2))
    try:
        for _ in range(2):
            await limiter.admit(IdentityClient.login, "198.51.100.1", "")
        with pytest.raises(RateLimited):
            await limiter.admit(IdentityClient.login, "198.51.100.1", "")
        assert not [e for e in rec.errors if "permissions violation" in e.lower()]
    finally:
        await nc.close()
