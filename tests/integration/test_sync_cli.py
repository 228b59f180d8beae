"""`ledgershare device …` and `ledgershare sync …` as a member types them, over NATS and
through the gateway's desktop API, against the real services."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from nats.aio.client import Client as NATS

from gateway.app import create_app
from runtime.settings import Settings
from services.registry import SERVICES
from tests.support import free_port


@asynccontextmanager
async def gateway_on(nc: NATS, settings: Settings) -> AsyncIterator[str]:
    """The gateway on a loopback port, served from this loop; its URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(nc, settings,
                                                      [s.client for s in SERVICES]),
                                           host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), "the gateway did not start"
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


class Terminal:
    """One machine's `ledgershare` (its own home folder: its own session and device)."""

    def __init__(self, settings: Settings, home: Path, gateway: str = "") -> None:
        self.env = {**os.environ, "LEDGERSHARE_HOME": str(home),
                    "LEDGERSHARE_NATS_URL": settings.nats_url,
                    "LEDGERSHARE_PASSWORD": "secret-1", "LEDGERSHARE_GATEWAY_URL": gateway,
                    "COLUMNS": "200"}
        self.cwd = home
        home.mkdir(parents=True, exist_ok=True)

    async def run(self, *argv: str, ok: bool = True) -> str:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "cli.main", *argv, env=self.env, cwd=self.cwd,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert (proc.returncode == 0) == ok, (argv, out.decode(), err.decode())
        return (out + err).decode()

    async def json(self, *argv: str) -> Any:
        return json.loads(await self.run(*argv, "--json"))


SET = ("--set", "s123", "--year", "2024")


@pytest.mark.parametrize("through", ["nats", "gateway"])
async def test_two_machines_sync_from_the_command_line(
        nc: NATS, all_services: Settings, tmp_path: Path, through: str) -> None:
    async with gateway_on(nc, all_services) as url:
        office, home = (Terminal(all_services, tmp_path / name,
                                 url if through == "gateway" else "")
                        for name in ("office", "home"))
        await office.run("member", "register", "alice", "--nickname", "Alice")
        for machine, name in ((office, "办公室电脑"), (home, "家里电脑")):
            await machine.run("member", "login", "alice")
            await machine.run("device", "register", name)
        await office.run("sync", "on", *SET, "--name", "123")
        taken = await office.json("sync", "lease", "take", *SET, "--ttl", "60")
        assert taken["lease"]["device_name"] == "办公室电脑"
        refused = await home.run("sync", "lease", "take", *SET, ok=False)
        assert "in use on 办公室电脑" in refused and "[lease_held]" in refused
        (tmp_path / "v1.bak").write_bytes(os.urandom(50_000))
        first = await office.json("sync", "upload", str(tmp_path / "v1.bak"), *SET,
                                  "--period", "1")
        assert first["conflict"] is False
        await office.run("sync", "lease", "release", *SET)
        (tmp_path / "v2.bak").write_bytes(os.urandom(50_000))
        stale = await home.json("sync", "upload", str(tmp_path / "v2.bak"), *SET,
                                "--period", "2")  # no --base: it started from nothing
        assert (stale["conflict"], stale["current"]) == (True, first["version"]["version_id"])
        await home.run("sync", "pull", *SET, "-o", str(tmp_path / "pulled.bak"))
        assert (tmp_path / "pulled.bak").read_bytes() == (tmp_path / "v1.bak").read_bytes()
        status = await home.json("sync", "status")
        assert status["set_years"][0]["current"] == first["version"]["version_id"]
        devices = await home.json("device", "list")
        office_id = next(d["device_id"] for d in devices["devices"] if d["name"] == "办公室电脑")
        await home.run("device", "revoke", office_id)
        gone = await office.run("sync", "lease", "take", *SET, ok=False)
        assert "[device_revoked]" in gone
