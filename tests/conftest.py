"""Fixtures: real servers. One PostgreSQL and one S3 for the session; a fresh NATS
server (and so a fresh ``EVENTS`` stream) and a fresh database for every test."""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import nats
import pytest
import uvicorn
from nats.aio.client import Client as NATS

from deploy.stack import Stack
from deploy.wechat import DEFAULT_APPID, DEFAULT_SECRET, WeChatStandIn
from deploy.wechat import app as wechat_app
from runtime.app import create_pool
from runtime.eventstore import EventStore
from runtime.settings import Settings
from tests.helpers import WeChat
from tests.services import running_all
from tests.support import free_port, free_stack_ports


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    """PostgreSQL and S3 for the whole session.

    Their data lives outside pytest's numbered temp folders: pytest deletes the older ones
    when other sessions start, which would pull the data from under a running server.
    """
    home = tempfile.mkdtemp(prefix="ledgershare-test-")
    st = Stack.local(Settings(home=home), free_stack_ports(), fast=True,
                     only=("postgres", "s3"))
    try:
        st.up(detach=False, progress=lambda _msg: None)
        yield st
    finally:
        st.down(progress=lambda _msg: None)
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def nats_stack(tmp_path: Path) -> Iterator[Stack]:
    """A NATS server of this test's own (fresh JetStream store); its settings are the
    local superuser's (``admin``: every right), and the tests make their own streams."""
    st = Stack.local(Settings(home=str(tmp_path / "nats")), free_stack_ports(), only=("nats",),
                     streams=False)
    st.up(detach=False, progress=lambda _msg: None)
    yield st
    st.down(progress=lambda _msg: None)


@pytest.fixture
def database(stack: Stack) -> Iterator[str]:
    """The DSN of a database of this test's own."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    base = stack.settings.pg_dsn.rpartition("/")[0]
    _admin(base, f'CREATE DATABASE "{name}"')
    yield f"{base}/{name}"
    _admin(base, f'DROP DATABASE "{name}" WITH (FORCE)')


def _admin(base: str, sql: str) -> None:
    import asyncio

    async def run() -> None:
        conn = await asyncpg.connect(f"{base}/postgres")
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run())


@pytest.fixture(scope="session")
def wechat() -> Iterator[WeChat]:
    """The WeChat OAuth stand-in (deploy/wechat.py) on a real port, for the session."""
    standin = WeChatStandIn({DEFAULT_APPID: DEFAULT_SECRET})
    server = uvicorn.Server(uvicorn.Config(wechat_app(standin), host="127.0.0.1",
                                           port=free_port(), log_config=None,
                                           lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
        assert thread.is_alive(), "the WeChat stand-in did not start"
    port = server.servers[0].sockets[0].getsockname()[1]
    yield WeChat(standin, f"http://127.0.0.1:{port}")
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def settings(stack: Stack, nats_stack: Stack, database: str, tmp_path: Path,
             wechat: WeChat) -> Settings:
    """Settings pointing at this test's servers (and the WeChat stand-in)."""
    return stack.settings.with_overrides(
        home=str(tmp_path), nats_url=nats_stack.settings.nats_url, pg_dsn=database,
        log_json=False, wechat_appid=DEFAULT_APPID, wechat_secret=DEFAULT_SECRET,
        wechat_api_base=wechat.url, wechat_open_base=wechat.url)


@pytest.fixture
async def nc(settings: Settings) -> AsyncIterator[NATS]:
    client = await nats.connect(settings.nats_url)
    yield client
    await client.close()


@pytest.fixture
async def events(nc: NATS) -> EventStore:
    es = EventStore(nc)
    await es.ensure_stream()
    return es


@pytest.fixture
async def pool(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    # Every service in one process: each leading projector holds a connection for its
    # lock (nine of them), and requests need the rest.
    p = await create_pool(settings.pg_dsn, size=24)
    yield p
    await p.close()


@pytest.fixture
async def all_services(settings: Settings, nc: NATS, pool: asyncpg.Pool,
                       events: EventStore) -> AsyncIterator[Settings]:
    """identity, social, storage and sharing running on this test's servers."""
    async with running_all(settings, nc, pool, events) as configured:
        yield configured
