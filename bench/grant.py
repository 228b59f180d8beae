"""`sharing.grant` as users meet it: the sharing service in its own process, over the read
model a replay of `bench.log` left in its schema, and 64 clients here, each the owner of
its own account set, granting it again and again (read-only, read-write, ...)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
from nats.aio.client import Client as NATS

from bench import log
from cli.run import wait_for_services
from contracts.sharing import Grant, SharingClient
from runtime.settings import Settings
from runtime.tokens import Signer

CLIENTS = 64


async def measure(nc: NATS, pool: asyncpg.Pool, settings: Settings, env: dict[str, str],
                  members: int, count: int, seq: int) -> float:
    """Grant commands/s. ``seq``: the log's end, where the replay left the schema."""
    async with sharing_process(pool, settings, env, seq):
        return await _grants(nc, settings, members, count, seq)


@asynccontextmanager
async def sharing_process(pool: asyncpg.Pool, settings: Settings, env: dict[str, str],
                          seq: int) -> AsyncIterator[None]:
    """`python -m services.sharing` over the read model the replay left in its schema
    (the log's end at ``seq``), once it answers and its projector leads."""
    async with pool.acquire() as conn:
        # The log's FriendRemoved events were written without the revokes the unfriend
        # policy would have made; the policy starts after them.
        await conn.execute("INSERT INTO sharing.checkpoints VALUES ('unfriend_policy', $1) "
                           "ON CONFLICT (projection) DO UPDATE SET last_seq = $1", seq)
    service = await asyncio.to_thread(_start, settings, env)
    try:
        await wait_for_services(settings, ["sharing"])
        await _leading(settings, "proj_sharing_access")
        yield
    finally:
        service.terminate()
        await asyncio.to_thread(service.wait, 30)


async def _leading(settings: Settings, consumer: str) -> None:
    """Wait until the service's projector leads (its in-memory index loaded): before
    that, a standby answers from the tables, which is not what is measured here."""
    path = _log_path(settings)
    deadline = time.monotonic() + 120
    while f"projector {consumer} leads" not in await asyncio.to_thread(path.read_text):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{consumer} did not take the lead; see {path}")
        await asyncio.sleep(0.1)


def _log_path(settings: Settings) -> Path:
    return Path(settings.home) / "logs" / "bench-sharing.log"


def _start(settings: Settings, env: dict[str, str]) -> subprocess.Popen[bytes]:
    path = _log_path(settings)
    path.parent.mkdir(exist_ok=True)
    path.unlink(missing_ok=True)
    with path.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "services.sharing"], env=env,
                                stdout=out, stderr=subprocess.STDOUT)


async def _grants(nc: NATS, settings: Settings, members: int, count: int,
                  seq: int) -> float:
    client = SharingClient(nc, timeout=30)
    owners = [c * (members // CLIENTS) for c in range(CLIENTS)]
    now = datetime.now(UTC)
    signer = Signer(settings.token_private_key)
    sessions = [signer.issue(member_id=log.member(o), kind="session", now=now,
                             ttl=timedelta(hours=1), pv=0)[0] for o in owners]
    per_client = count // CLIENTS

    async def owner(c: int) -> None:
        friend = f"user{(owners[c] + 3 * log.FRIEND_STEP) % members}"
        for n in range(per_client):
            await client.grant(Grant(command_id=f"bench-grant-{c}-{n}", session=sessions[c],
                                     set_id="set1", friends=[friend], seq=seq,
                                     permission="read-only" if n % 2 else "read-write"))

    started = time.perf_counter()
    await asyncio.gather(*(owner(c) for c in range(CLIENTS)))
    return CLIENTS * per_client / (time.perf_counter() - started)


def service_env(settings: Settings) -> dict[str, str]:
    """The environment a service process needs to find this stack, connecting as the
    bench itself does (the local superuser: what it measures shares its connections)."""
    return {**os.environ, "LEDGERSHARE_HOME": settings.home, "LEDGERSHARE_LOG_LEVEL": "INFO",
            "LEDGERSHARE_NATS_URL": settings.nats_url, "LEDGERSHARE_PG_DSN": settings.pg_dsn,
            "LEDGERSHARE_NATS_INBOX_PREFIX": settings.nats_inbox_prefix}
