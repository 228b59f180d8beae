"""The local stack is locked: nobody connects without the stack's secrets, each user may do
only what it may do in production, and the system runs with every service under its own
credentials. The secrets are readable by their owner alone, and `status --json` hands
an operator working ones."""

from __future__ import annotations

import asyncio
import io
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from pathlib import Path

import asyncpg
import httpx
import msgspec
import nats
import pytest
from botocore.exceptions import ClientError
from rich.console import Console

from cli.demo import Walkthrough
from contracts.admin import AdminClient, replay
from deploy.credentials import SUPERUSER, schema_of, secrets_file
from deploy.stack import Stack
from runtime.app import create_pool
from runtime.eventstore import EventStore
from runtime.s3 import s3_client
from runtime.settings import Settings, load_settings
from services.registry import SERVICES
from tests.integration.test_nats_permissions import REFUSED_PUBLISH, REFUSED_SUBSCRIBE
from tests.services import running, service_settings
from tests.support import free_stack_ports

ROOT = Path(__file__).resolve().parents[2]
VIOLATION = "permissions violation"
SERVICE_NAMES = [s.name for s in SERVICES]


@pytest.fixture(scope="module")
def locked() -> Iterator[Stack]:
    """A whole local stack, as `ledgershare up` starts it, for this module."""
    home = tempfile.mkdtemp(prefix="ledgershare-locked-")
    stack = Stack.local(Settings(home=str(Path(home) / "home")), free_stack_ports(), fast=True)
    try:
        stack.up(detach=False, progress=lambda _m: None)
        yield stack
    finally:
        stack.down(progress=lambda _m: None)
        shutil.rmtree(home, ignore_errors=True)


def user_url(stack: Stack, user: str) -> str:
    return stack.users()[user]["nats_url"]


# ---- files -----------------------------------------------------------------------------------

def test_the_secrets_are_readable_by_their_owner_alone(locked: Stack) -> None:
    secrets = secrets_file(locked.home)
    assert secrets.stat().st_mode & 0o777 == 0o600
    assert secrets.parent.stat().st_mode & 0o777 == 0o700
    assert locked.state_file.stat().st_mode & 0o777 == 0o600
    assert (locked.data / "nats" / "nats.conf").stat().st_mode & 0o777 == 0o600
    assert (locked.data / "s3" / "s3.json").stat().st_mode & 0o777 == 0o600
    for folder in (locked.logs, locked.data / "nats", locked.data / "s3"):
        assert folder.stat().st_mode & 0o077 == 0, folder
    # at most "search" for others, where PostgreSQL's own user must pass (as root)
    for folder in (locked.home, locked.data):
        assert folder.stat().st_mode & 0o077 in (0, 0o001), folder


def test_no_secret_is_in_the_nats_configuration(locked: Stack) -> None:
    assert locked.secrets is not None
    conf = (locked.data / "nats" / "nats.conf").read_text()
    assert not any(pw in conf for pw in locked.secrets.nats.values())
    assert "no_auth_user" not in conf


# ---- NATS ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("user", "password"), [("", ""), ("operator", "wrong"),
                                                ("admin", ""), ("nobody", "x")])
async def test_nats_refuses_anyone_without_a_users_password(locked: Stack, user: str,
                                                            password: str) -> None:
    # Spoken by hand: nats-py leaves its socket open after a refused connect.
    reader, writer = await asyncio.open_connection("127.0.0.1", locked.ports.nats)
    try:
        await reader.readline()  # INFO
        auth = {"user": user, "pass": password} if user else {}
        writer.write(b"CONNECT " + msgspec.json.encode({"verbose": False, **auth})
                     + b"\r\nPING\r\n")
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(4096), 5)
    finally:
        writer.close()
        await writer.wait_closed()
    assert b"Authorization Violation" in answer and b"PONG" not in answer


async def _refused(stack: Stack, user: str, act: str, subject: str) -> bool:
    """Whether the server refuses ``user`` publishing (or subscribing) to ``subject``."""
    seen: list[str] = []

    async def on_error(err: Exception) -> None:
        seen.append(str(err).lower())

    nc = await nats.connect(user_url(stack, user), error_cb=on_error,
                            inbox_prefix=f"_INBOX_{user}", allow_reconnect=False)
    try:
        if act == "publish":
            await nc.publish(subject, b"{}")
        else:
            await nc.subscribe(subject)
        await nc.flush()
        await asyncio.sleep(0.05)
    finally:
        await nc.close()
    return any(VIOLATION in e for e in seen)


@pytest.mark.parametrize(("user", "subject"), REFUSED_PUBLISH)
async def test_each_publish_refused_in_production_is_refused_here(
        locked: Stack, user: str, subject: str) -> None:
    assert await _refused(locked, user, "publish", subject)


@pytest.mark.parametrize(("user", "subject"), REFUSED_SUBSCRIBE)
async def test_each_subscribe_refused_in_production_is_refused_here(
        locked: Stack, user: str, subject: str) -> None:
    assert await _refused(locked, user, "subscribe", subject)


async def test_a_service_appends_its_own_events_and_nobody_elses(locked: Stack) -> None:
    nc = await nats.connect(user_url(locked, "social"), inbox_prefix="_INBOX_social")
    try:
        ack = await nc.jetstream().publish("evt.social.friendship.x.FriendAdded", b"{}")
        assert ack.stream == locked.settings.stream
        with pytest.raises(nats.errors.TimeoutError):  # refused: no acknowledgement
            await nc.jetstream(timeout=0.5).publish("evt.identity.member.x.MemberRegistered",
                                                    b"{}")
    finally:
        await nc.close()


# ---- PostgreSQL ------------------------------------------------------------------------------

def _dsn(stack: Stack, role: str, password: str | None) -> str:
    auth = role if password is None else f"{role}:{password}"
    return f"postgresql://{auth}@127.0.0.1:{stack.ports.pg}/ledgershare"


@pytest.mark.parametrize("password", [None, "", "wrong"])
@pytest.mark.parametrize("role", [SUPERUSER, "social"])
async def test_postgres_refuses_a_missing_or_wrong_password(
        locked: Stack, role: str, password: str | None, tmp_path: Path) -> None:
    # passfile: no ~/.pgpass of whoever runs the tests may supply one
    with pytest.raises((asyncpg.InvalidPasswordError,
                        asyncpg.InvalidAuthorizationSpecificationError)):
        await asyncpg.connect(_dsn(locked, role, password), passfile=tmp_path / "none",
                              timeout=5)


async def _as_role(stack: Stack, role: str) -> asyncpg.Connection:
    return await asyncpg.connect(stack.users()[role]["pg_dsn"], timeout=5)


@pytest.mark.parametrize(("reader", "owner"), [("social", "identity"), ("identity", "sharing"),
                                                ("storage", "social"), ("sharing", "storage")])
async def test_a_service_role_cannot_touch_another_services_schema(locked: Stack, reader: str,
                                                                   owner: str) -> None:
    schema = schema_of(owner)
    mine = await _as_role(locked, owner)
    theirs = await _as_role(locked, reader)
    try:
        await mine.execute(f"CREATE TABLE IF NOT EXISTS {schema}.locked_probe (x int)")
        await mine.execute(f"INSERT INTO {schema}.locked_probe VALUES (1)")
        for sql in (f"SELECT * FROM {schema}.locked_probe",
                    f"INSERT INTO {schema}.locked_probe VALUES (2)",
                    f"CREATE TABLE {schema}.planted (x int)",
                    f"DROP SCHEMA {schema} CASCADE"):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await theirs.execute(sql)
        assert await mine.fetchval(f"SELECT count(*) FROM {schema}.locked_probe") >= 1
    finally:
        await mine.close()
        await theirs.close()


async def test_a_service_role_is_no_superuser(locked: Stack) -> None:
    conn = await _as_role(locked, "storage")
    try:
        assert not await conn.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = 'storage'")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("CREATE ROLE intruder LOGIN")
    finally:
        await conn.close()


# ---- S3 --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("key", "secret"), [("ledgershare", "ledgershare-local-secret"),
                                             ("ledgershare", "wrong")])
async def test_s3_refuses_the_old_default_keys_and_wrong_ones(locked: Stack, key: str,
                                                              secret: str) -> None:
    wrong = locked.settings.with_overrides(s3_access_key=key, s3_secret_key=secret)
    async with s3_client(wrong, timeout_s=5) as s3:
        with pytest.raises(ClientError):
            await s3.get_object(Bucket=wrong.s3_bucket, Key=".ledgershare-probe")


async def test_s3_refuses_a_request_without_keys(locked: Stack) -> None:
    async with httpx.AsyncClient(timeout=5) as web:
        base = locked.settings.s3_endpoint
        bucket = locked.settings.s3_bucket
        assert (await web.get(f"{base}/{bucket}/.ledgershare-probe")).status_code == 403
        assert (await web.put(f"{base}/{bucket}/planted", content=b"x")).status_code == 403
        assert (await web.get(f"{base}/{bucket}")).status_code == 403


async def test_the_filer_and_volume_ports_refuse_requests_without_a_token(locked: Stack) -> None:
    """weed's own HTTP ports, behind the S3 gateway, want the JWT it or the master signs."""
    async with httpx.AsyncClient(timeout=5) as web:
        filer = f"http://127.0.0.1:{locked.ports.weed_filer}"
        bucket = locked.settings.s3_bucket
        read = await web.get(f"{filer}/buckets/{bucket}/.ledgershare-probe")
        write = await web.post(f"{filer}/buckets/{bucket}/planted", files={"f": b"x"})
        assert read.status_code in (401, 403) and write.status_code in (401, 403)
        # The master still hands out a file id to anyone (docs/security.md); the volume
        # server takes nothing for it without the token the master signs with it.
        assign = (await web.post(f"http://127.0.0.1:{locked.ports.weed_master}/dir/assign")
                  ).json()
        planted = await web.post(f"http://{assign['url']}/{assign['fid']}", files={"f": b"x"})
        assert planted.status_code == 401


async def test_s3_answers_the_stacks_keys(locked: Stack) -> None:
    async with s3_client(locked.settings, timeout_s=5) as s3:
        reply = await s3.get_object(Bucket=locked.settings.s3_bucket, Key=".ledgershare-probe")
        async with reply["Body"] as body:
            assert await body.read() == b"ok"


# ---- status --json ---------------------------------------------------------------------------

def _status(stack: Stack) -> dict[str, object]:
    env = {**os.environ, "LEDGERSHARE_HOME": str(stack.home), "PYTHONPATH": str(ROOT),
           **{f"LEDGERSHARE_PORT_{k.upper()}": str(v)
              for k, v in msgspec.structs.asdict(stack.ports).items()}}
    done = subprocess.run([sys.executable, "-m", "cli.main", "status", "--json"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr + done.stdout
    doc: dict[str, object] = msgspec.json.decode(done.stdout)
    return doc


async def test_status_gives_the_operator_working_credentials(locked: Stack) -> None:
    endpoints = _status(locked)["endpoints"]
    assert isinstance(endpoints, dict)
    nc = await nats.connect(endpoints["nats_url"], inbox_prefix=endpoints["nats_inbox_prefix"],
                            allow_reconnect=False)
    try:
        info = await nc.jetstream().stream_info(locked.settings.stream)
        assert info.config.name == locked.settings.stream
    finally:
        await nc.close()
    conn = await asyncpg.connect(endpoints["pg_dsn"], timeout=5)
    try:
        assert await conn.fetchval("SELECT current_user") == SUPERUSER
    finally:
        await conn.close()


# ---- the system, every service under its own credentials -------------------------------------

@pytest.fixture
async def as_themselves(locked: Stack) -> AsyncIterator[Settings]:
    """Every service, each on a NATS connection of its own user and a pool of its own
    role (their sections of stack.json, as `python -m services.<name>` reads them);
    yields the settings of the WeChat gateway's user. Nothing may be refused to anyone."""
    refused: list[str] = []

    async def on_error(err: Exception) -> None:
        refused.append(str(err))

    base = service_settings(load_settings({"LEDGERSHARE_HOME": str(locked.home)}))
    async with AsyncExitStack() as stack:
        for service in SERVICES:
            own = base.with_overrides(**locked.users()[service.name])
            nc = await nats.connect(own.nats_url, inbox_prefix=own.nats_inbox_prefix,
                                    error_cb=on_error)
            stack.push_async_callback(nc.close)
            pool = await create_pool(own.pg_dsn, size=10)  # as `runtime.app.connect`
            stack.push_async_callback(pool.close)
            await stack.enter_async_context(running(service.build, own, nc, pool,
                                                    EventStore(nc)))
        yield base.with_overrides(**locked.users()["wechat"])
    assert [e for e in refused if VIOLATION in e.lower()] == []


async def test_the_walkthrough_and_a_replay_work_with_every_service_as_itself(
        as_themselves: Settings, locked: Stack) -> None:
    gateway = await nats.connect(as_themselves.nats_url,
                                 inbox_prefix=as_themselves.nats_inbox_prefix)
    try:
        with tempfile.TemporaryDirectory() as folder:
            walk = Walkthrough(gateway, Console(file=io.StringIO()), "5151", Path(folder),
                               as_themselves)
            await walk.run()
        assert walk.steps == 21
    finally:
        await gateway.close()
    operator = await nats.connect(user_url(locked, "operator"), inbox_prefix="_INBOX_operator")
    try:
        rebuilt = await replay(AdminClient(operator, context="sharing", timeout=60), swap=True,
                               progress=lambda _p: None)
    finally:
        await operator.close()
    assert rebuilt.differences == [] and rebuilt.swapped
