"""deploy/nats/production.conf and cluster.conf: TLS only, each user only its own subjects,
nothing a reply subject can write into a stream, and the whole system works under them."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import subprocess
import tempfile
from collections.abc import AsyncIterator, Awaitable, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import msgspec
import nats
import pytest
from nats.aio.client import Client as NATS
from nats.js.api import AckPolicy, ConsumerConfig
from rich.console import Console

from cli.demo import Walkthrough
from cli.operate import events_tail
from cli.syncdemo import SyncWalk
from contracts.admin import AdminClient, replay
from contracts.errors import RateLimited
from contracts.identity import IdentityClient
from deploy.bootstrap import create_streams
from deploy.freeports import free_port
from deploy.nats.permissions import users
from deploy.parts import find_binary
from deploy.probe import probe
from gateway.limits import limiter_for
from runtime.eventstore import EventStore
from runtime.service import ServiceHost
from runtime.settings import Settings
from services.registry import SERVICES
from tests.integration.pki import HOST, Pki, make_pki
from tests.services import running, service_settings

NATS_DIR = Path(__file__).resolve().parents[2] / "deploy" / "nats"
USERS = [u.name for u in users()]
VIOLATION = "permissions violation"


def server_env(pki: Pki, store: Path, name: str, port: int) -> dict[str, str]:
    """What production.conf reads from the environment, for one node on 127.0.0.1."""
    return {**os.environ, "NATS_SERVER_NAME": name, "NATS_LISTEN": f"{HOST}:{port}",
            "NATS_STORE_DIR": str(store), "NATS_TLS_CERT": str(pki.cert),
            "NATS_TLS_KEY": str(pki.key),
            **{f"{u.upper()}_PASSWORD": f"pw-{u}" for u in USERS}}


@dataclass
class Secured:
    """nats-server running a shipped configuration, and how to connect to it as a user."""

    hostport: str
    pki: Pki
    errors: dict[str, list[str]] = field(default_factory=dict)

    async def connect(self, user: str, **options: object) -> NATS:
        """A TLS connection as ``user`` (its private inbox); the permission errors the
        server sends it are kept in ``errors[user]``."""
        seen = self.errors.setdefault(user, [])

        async def on_error(err: Exception) -> None:
            seen.append(str(err))

        return await nats.connect(f"tls://{user}:pw-{user}@{self.hostport}",
                                  tls=self.pki.client_context(), inbox_prefix=f"_INBOX_{user}",
                                  error_cb=on_error, **options)

    def violations(self) -> dict[str, list[str]]:
        """The permission errors every connection got, by user."""
        return {u: [e for e in errs if VIOLATION in e.lower()]
                for u, errs in self.errors.items() if any(VIOLATION in e.lower() for e in errs)}

    async def refused(self, user: str, action: Awaitable[object], nc: NATS) -> bool:
        """Whether the server refused what ``action`` sends (it answers before a PONG)."""
        self.errors[user].clear()
        await action
        await nc.flush()
        await asyncio.sleep(0.05)
        return any(VIOLATION in e.lower() for e in self.errors[user])


def start(config: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """nats-server with ``config``."""
    return subprocess.Popen([find_binary("nats-server"), "-c", str(config)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def first_start(server: Secured, *, replicas: int = 1) -> None:
    """Wait for the server, then create the streams and the bucket as the operator does
    at first start (deploy/bootstrap.py)."""
    host, port = server.hostport.split(":")
    for _ in range(200):
        try:
            _, writer = await asyncio.open_connection(host, int(port))
            writer.close()
            break
        except OSError:
            await asyncio.sleep(0.05)
    else:
        raise AssertionError("nats-server with the shipped configuration did not start")
    nc = await server.connect("operator", allow_reconnect=False)
    try:
        for _ in range(100):  # a cluster answers once it has elected its meta leader
            try:
                await create_streams(nc, Settings(stream_replicas=replicas))
                return
            except Exception:
                await asyncio.sleep(0.1)
        await create_streams(nc, Settings(stream_replicas=replicas))
    finally:
        await nc.close()


def _serve(config: Path, folder: Path) -> Iterator[Secured]:
    pki = make_pki(folder / "pki")
    port = free_port()
    proc = start(config, server_env(pki, folder / "js", "secured", port))
    try:
        server = Secured(f"{HOST}:{port}", pki)
        asyncio.run(first_start(server))
        server.errors.clear()
        yield server
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[Secured]:
    """nats-server running deploy/nats/production.conf, streams created, for one test."""
    yield from _serve(NATS_DIR / "production.conf", tmp_path)


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    """The same, for the tests that only try what is refused (they change nothing)."""
    yield from _serve(NATS_DIR / "production.conf", tmp_path_factory.mktemp("shared"))


# ---- TLS and authentication ---------------------------------------------------------------

async def test_a_plain_connection_is_refused(shared: Secured) -> None:
    host, port = shared.hostport.split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        info = json.loads((await reader.readline()).split(b" ", 1)[1])
        assert info["tls_required"] is True
        writer.write(b'CONNECT {"user":"operator","pass":"pw-operator","verbose":false}\r\n'
                     b"PING\r\n")
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(4096), 5)
    finally:
        writer.close()
    assert b"PONG" not in answer  # the server closes (or sends garbage TLS records back)


@pytest.mark.parametrize(("user", "password"), [("operator", "wrong"), ("", "")])
async def test_without_a_users_password_nobody_connects(shared: Secured, user: str,
                                                        password: str) -> None:
    auth = f"{user}:{password}@" if user else ""
    with pytest.raises(Exception, match=r"(?i)authorization"):
        await nats.connect(f"tls://{auth}{shared.hostport}", tls=shared.pki.client_context(),
                           allow_reconnect=False, max_reconnect_attempts=0)


# ---- what each user may not do ------------------------------------------------------------

GATEWAY_CALLS_OFF_THEIR_LIST = [
    ("desktop", "identity.login_wechat"),  # WeChat's audience only
    ("desktop", "sharing.check"),  # services'
    ("wechat", "sharing.check"),
    ("desktop", "storage.set_quota"),  # operators'
    ("wechat", "storage.set_quota"),
    ("desktop", "admin.sharing.replay"),
    ("wechat", "admin.identity.replay"),
    ("wechat", "identity.not_an_operation"),  # an allow-list: nothing undeclared
]

REFUSED_PUBLISH = [
    *GATEWAY_CALLS_OFF_THEIR_LIST,
    # another context's events and command records
    ("identity", "evt.social.friendship.x.FriendAdded"),
    ("social", "evt.sharing.share.x.ShareGranted"),
    ("storage", "evt.identity.member.x.PasswordChanged"),
    ("social", "cmd.identity.x"),
    ("wechat", "evt.identity.member.x.MemberRegistered"),
    ("wechat", "cmd.storage.x"),
    # a service calling what is not its call
    ("sharing", "storage.set_quota"),
    ("identity", "sharing.check"),
    ("social", "identity.login"),
    # consumers: identity has none; nobody touches another service's
    ("identity", "$JS.API.CONSUMER.DURABLE.CREATE.EVENTS.x"),
    ("identity", "$JS.API.CONSUMER.CREATE.EVENTS.x.evt.social.>"),
    ("storage", "$JS.API.CONSUMER.DELETE.EVENTS.proj_social_social"),
    ("social", "$JS.API.CONSUMER.DURABLE.CREATE.EVENTS.proj_sharing_access"),
    ("sharing", "$JS.API.CONSUMER.MSG.NEXT.EVENTS.proj_storage_storage"),
    ("storage", "$JS.ACK.EVENTS.proj_sharing_unfriend_policy.1.1.1.1.1.0"),
    # the streams: nobody deletes, purges or changes them; only the operator creates
    ("identity", "$JS.API.STREAM.PURGE.EVENTS"),
    ("sharing", "$JS.API.STREAM.CREATE.EVENTS"),
    ("desktop", "$JS.API.STREAM.DELETE.EVENTS"),
    ("desktop", "$JS.API.STREAM.CREATE.KV_LIMITS"),
    ("wechat", "$JS.API.STREAM.PURGE.KV_LIMITS"),
    ("desktop", "$JS.API.DIRECT.GET.EVENTS"),  # gateways never read the log
    # the operator reads and replays; it writes nothing to the log or the streams
    ("operator", "evt.identity.member.x.NicknameChanged"),
    ("operator", "cmd.sharing.x"),
    ("operator", "$KV.LIMITS.client.x"),
    ("operator", "$JS.API.STREAM.DELETE.EVENTS"),
    ("operator", "$JS.API.STREAM.PURGE.EVENTS"),
    ("operator", "$JS.API.STREAM.UPDATE.EVENTS"),
    ("operator", "$JS.API.STREAM.MSG.DELETE.EVENTS"),
    ("operator", "$JS.API.CONSUMER.DELETE.EVENTS.proj_social_social"),
    ("operator", "identity.login"),  # never a member's operations
    # no answers outside the callers' inboxes, whatever a request's reply subject says
    ("identity", "_INBOX.x"),
    ("social", "_INBOX_sharing.x"),
]

REFUSED_SUBSCRIBE = [
    ("identity", "admin.identity.>"),
    ("desktop", "evt.>"),
    ("desktop", "_INBOX_wechat.>"),
    ("wechat", "identity.>"),
    ("social", "identity.login"),  # another service's requests carry passwords
    ("storage", "_INBOX_sharing.>"),
    ("social", "admin.sharing.>"),
    ("operator", "identity.>"),
    ("operator", "evt.>"),
    ("operator", ">"),
]


@pytest.mark.parametrize(("user", "subject"), REFUSED_PUBLISH)
async def test_each_forbidden_publish_is_refused(shared: Secured, user: str,
                                                 subject: str) -> None:
    nc = await shared.connect(user)
    try:
        assert await shared.refused(user, nc.publish(subject, b"{}"), nc)
    finally:
        await nc.close()


@pytest.mark.parametrize(("user", "subject"), REFUSED_SUBSCRIBE)
async def test_each_forbidden_subscribe_is_refused(shared: Secured, user: str,
                                                   subject: str) -> None:
    nc = await shared.connect(user)
    try:
        assert await shared.refused(user, nc.subscribe(subject), nc)
    finally:
        await nc.close()


async def test_allowed_calls_are_not_refused(shared: Secured) -> None:
    nc = await shared.connect("identity")
    try:
        assert not await shared.refused(
            "identity", nc.publish("evt.identity.member.x.NicknameChanged", b"{}"), nc)
    finally:
        await nc.close()


async def test_a_chosen_reply_subject_puts_nothing_in_the_log_or_the_journal(
        secured: Secured) -> None:
    """JetStream answers on the reply subject a request names, with the stream account's
    authority: in one account, a direct get by storage, or by a gateway from its own
    bucket, with reply ``evt.social.…`` was stored there as an event."""
    identity, storage, gateway, social, operator = [
        await secured.connect(u) for u in ("identity", "storage", "wechat", "social",
                                           "operator")]
    try:
        await identity.jetstream().publish("evt.identity.member.m.NicknameChanged", b"{}",
                                           headers={"Ledger-Event-Type": "NicknameChanged"})
        forged = {"Ledger-Event-Type": "FriendAdded"}
        await gateway.jetstream().publish("$KV.LIMITS.client.x", b"{}", headers=forged)
        for target in ("evt.social.friendship.p.FriendAdded", "cmd.social.k"):
            await storage.publish("$JS.API.DIRECT.GET.EVENTS", b'{"seq": 1}', reply=target)
            await gateway.publish("$JS.API.DIRECT.GET.KV_LIMITS.$KV.LIMITS.client.x", b"",
                                  reply=target)
            await gateway.publish("$KV.LIMITS.client.y", b"{}", headers=forged, reply=target)
        # a push consumer delivers inside the log's account only
        await social.jetstream().add_consumer("EVENTS", ConsumerConfig(
            durable_name="rebuild_social_rebuild_push", deliver_subject="cmd.identity.k",
            ack_policy=AckPolicy.NONE))
        for nc in (storage, gateway, social):
            await nc.flush()
        await asyncio.sleep(0.5)
        js = operator.jetstream()
        assert (await js.stream_info("EVENTS")).state.messages == 1
        assert (await js.stream_info("COMMANDS")).state.messages == 0
    finally:
        for nc in (identity, storage, gateway, social, operator):
            await nc.close()
    assert secured.violations() == {}


# ---- the whole system under the configuration ----------------------------------------------

@pytest.fixture
async def system(secured: Secured, settings: Settings, pool: asyncpg.Pool
                 ) -> AsyncIterator[NATS]:
    """Every service, each connected as its own user over TLS; yields the WeChat gateway.
    No connection may have been refused anything by the end."""
    configured = service_settings(settings)
    async with AsyncExitStack() as stack:
        for service in SERVICES:
            nc = await secured.connect(service.name)
            stack.push_async_callback(nc.close)
            await stack.enter_async_context(running(service.build, configured, nc, pool,
                                                    EventStore(nc)))
        gateway = await secured.connect("wechat")
        stack.push_async_callback(gateway.close)
        yield gateway
    assert secured.violations() == {}


async def test_the_whole_walkthrough_works_under_the_production_permissions(
        system: NATS, settings: Settings, secured: Secured,
        capsys: pytest.CaptureFixture[str]) -> None:
    out = io.StringIO()
    console = Console(file=out, width=400)
    with tempfile.TemporaryDirectory() as folder:
        walk = Walkthrough(system, console, "4242", Path(folder), settings)
        await walk.run()
        assert walk.steps == 21
        # sync under its own user calls storage for its uploads and pulls, and storage
        # answers into sync's inbox (a refused answer would be a violation below).
        await SyncWalk(walk).run()
    assert "[device_revoked]" in out.getvalue()
    # and the operator reads what it did (an ordered consumer pushing to its inbox)
    operator = await secured.connect("operator")
    capsys.readouterr()
    try:
        await events_tail(operator, console, argparse.Namespace(
            context=None, count=3, follow=False, json=True))
    finally:
        await operator.close()
    tailed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(tailed) == 3 and all(e["subject"].startswith("evt.") for e in tailed)


async def test_an_operator_replays_a_read_model_over_the_bus_alone(
        system: NATS, secured: Secured) -> None:
    operator = await secured.connect("operator")
    try:
        rebuilt = await replay(AdminClient(operator, context="sharing", timeout=60),
                               swap=True, progress=lambda _p: None)
    finally:
        await operator.close()
    assert rebuilt.differences == [] and rebuilt.swapped and rebuilt.tables


async def test_a_service_keeps_its_consumer_whoever_tries_to_delete_it(
        system: NATS, secured: Secured) -> None:
    storage, operator = await secured.connect("storage"), await secured.connect("operator")
    try:
        with pytest.raises(nats.errors.TimeoutError):  # refused: no answer comes
            await storage.jetstream(timeout=0.5).delete_consumer("EVENTS", "proj_social_social")
        info = await operator.jetstream().consumer_info("EVENTS", "proj_social_social")
        assert info.config.durable_name == "proj_social_social"
    finally:
        await storage.close()
        await operator.close()
    assert secured.violations().keys() == {"storage"}
    secured.errors.clear()


async def test_the_probe_pings_a_service_with_its_own_credentials(
        system: NATS, secured: Secured, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(secured.pki.ca))  # as the pods trust the CA
    social = Settings(nats_url=f"tls://social:pw-social@{secured.hostport}",
                      nats_inbox_prefix="_INBOX_social")
    assert await probe(social, "social", host="any", within=2) is None
    problem = await probe(social, "nobody", host="any", within=0.3)
    assert problem is not None and "did not answer" in problem


@pytest.mark.parametrize("user", ["desktop", "wechat"])
async def test_a_gateway_is_discoverable_under_its_own_user_and_serves_nothing_else(
        secured: Secured, user: str) -> None:
    nc = await secured.connect(user)
    presence = ServiceHost(nc, name="gateway", version="1.0.0", description="edge",
                           endpoints=[])
    await presence.start()
    operator = await secured.connect("operator")
    try:
        pong = await operator.request("$SRV.PING.gateway", b"", timeout=2)
        assert msgspec.json.decode(pong.data)["name"] == "gateway"
        assert secured.violations() == {}
        assert await secured.refused(user, nc.subscribe("identity.>"), nc)
    finally:
        await presence.stop()
        await operator.close()
        await nc.close()


@pytest.mark.parametrize("user", ["desktop", "wechat"])
async def test_a_gateway_counts_its_rate_limits_in_the_operators_bucket(
        secured: Secured, user: str) -> None:
    nc = await secured.connect(user)
    limiter = limiter_for(nc, Settings(gateway_limit_per_client=2))
    try:
        for _ in range(2):
            await limiter.admit(IdentityClient.login, "198.51.100.1", "")
        with pytest.raises(RateLimited):
            await limiter.admit(IdentityClient.login, "198.51.100.1", "")
    finally:
        await nc.close()
    assert secured.violations() == {}


# ---- three nodes ----------------------------------------------------------------------------

def test_three_nodes_replicate_the_log_over_mutually_authenticated_routes(
        tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    clients, routes = [free_port() for _ in range(3)], [free_port() for _ in range(3)]
    urls = {f"NATS_ROUTE_{i + 1}": f"nats-route://{HOST}:{p}" for i, p in enumerate(routes)}
    procs = [start(NATS_DIR / "cluster.conf", {
        **server_env(pki, tmp_path / f"js{i}", f"node-{i}", clients[i]), **urls,
        "NATS_CLUSTER_NAME": "ledgershare", "NATS_CLUSTER_LISTEN": f"{HOST}:{routes[i]}",
        "NATS_ROUTE_TLS_CERT": str(pki.cert), "NATS_ROUTE_TLS_KEY": str(pki.key),
        "NATS_TLS_CA": str(pki.ca)}) for i in range(3)]
    try:
        node = Secured(f"{HOST}:{clients[0]}", pki)
        asyncio.run(first_start(node, replicas=3))
        asyncio.run(_append_and_check_replicas(Secured(f"{HOST}:{clients[2]}", pki)))
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=10)


async def _append_and_check_replicas(node: Secured) -> None:
    identity, operator = await node.connect("identity"), await node.connect("operator")
    try:
        ack = await identity.jetstream().publish(
            "evt.identity.member.m.NicknameChanged", b"{}",
            headers={"Ledger-Event-Type": "NicknameChanged"})
        info = await operator.jetstream().stream_info("EVENTS")
    finally:
        await identity.close()
        await operator.close()
    assert ack.seq == 1 and info.config.num_replicas == 3
    assert info.cluster is not None and len(info.cluster.replicas or []) == 2
