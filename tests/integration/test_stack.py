"""The local stack: data survives a restart, twins and taken ports are refused, status."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from pathlib import Path

import msgspec
import nats
import pytest

from deploy.stack import Stack, StackError
from runtime.settings import Settings
from tests.support import free_stack_ports


def nats_only(home: Path) -> Stack:
    return Stack.local(Settings(home=str(home)), free_stack_ports(), only=("nats",))


async def _publish_and_count(url: str, publish: bool) -> int:
    nc = await nats.connect(url)
    js = nc.jetstream()
    if publish:
        await js.add_stream(name="KEEP", subjects=["keep.>"])
        await js.publish("keep.one", b"kept")
    info = await js.stream_info("KEEP")
    await nc.close()
    return int(info.state.messages)


def test_an_event_appended_before_down_is_there_after_up(tmp_path: Path) -> None:
    stack = nats_only(tmp_path)
    stack.up(detach=False, progress=lambda _m: None)
    try:
        assert asyncio.run(_publish_and_count(stack.settings.nats_url, True)) == 1
    finally:
        stack.down(progress=lambda _m: None)
    again = Stack(stack.settings, stack.ports, only=("nats",))
    again.up(detach=False, progress=lambda _m: None)
    try:
        assert asyncio.run(_publish_and_count(again.settings.nats_url, False)) == 1
    finally:
        again.down(progress=lambda _m: None)


def test_a_second_up_says_it_is_running(tmp_path: Path) -> None:
    stack = nats_only(tmp_path)
    stack.up(detach=False, progress=lambda _m: None)
    try:
        with pytest.raises(StackError, match="already running: nats"):
            Stack(stack.settings, stack.ports, only=("nats",)).up(progress=lambda _m: None)
    finally:
        stack.down(progress=lambda _m: None)


def test_a_taken_port_is_named(tmp_path: Path) -> None:
    stack = nats_only(tmp_path)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", stack.ports.nats))
        holder.listen(1)
        with pytest.raises(StackError, match=rf"port {stack.ports.nats} on .*needed by nats"):
            stack.up(progress=lambda _m: None)


def test_the_command_brings_the_stack_up_reports_it_and_stops_it(tmp_path: Path) -> None:
    ports = free_stack_ports()
    env = {**os.environ, "LEDGERSHARE_HOME": str(tmp_path / "home"),
           **{f"LEDGERSHARE_PORT_{k.upper()}": str(v)
              for k, v in msgspec.structs.asdict(ports).items()}}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "cli.main", *args], env=env,
                              capture_output=True, text=True, timeout=120)

    assert cli("up").returncode == 0
    try:
        status = cli("status", "--json")
        doc = msgspec.json.decode(status.stdout)
        assert status.returncode == 0
        assert [(p["name"], p["healthy"]) for p in doc["parts"]] == [
            ("nats", True), ("postgres", True), ("s3", True), ("wechat", True)]
        assert doc["endpoints"]["wechat_open_base"] == f"http://127.0.0.1:{ports.wechat}"
        # the operator's: with a password, and refused to anyone without one
        assert doc["endpoints"]["nats_url"].startswith("nats://operator:")
        assert doc["endpoints"]["nats_url"].endswith(f"@127.0.0.1:{ports.nats}")
        assert doc["endpoints"]["nats_inbox_prefix"] == "_INBOX_operator"
        assert doc["endpoints"]["s3_bucket"] == "ledgershare"
        twin = cli("up")
        assert twin.returncode == 1 and "already running" in twin.stderr
        assert "Traceback" not in twin.stderr
    finally:
        assert cli("down").returncode == 0
    after = msgspec.json.decode(cli("status", "--json").stdout)
    assert [p["running"] for p in after["parts"]] == [False, False, False, False]
