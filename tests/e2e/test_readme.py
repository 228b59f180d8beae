"""The README's commands run as written, and every client command fails in one line."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from cli.run import wait_for_gateway
from deploy.stack import Stack
from runtime.settings import STACK_USER, Settings, load_settings
from services.registry import SERVICES
from tests.support import free_port, free_stack_ports

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def readme_commands() -> str:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- readme-commands -->\n```sh\n(.*?)```", text, re.S)
    assert block, "the README lost its command block"
    return block.group(1)


@pytest.fixture
def system(tmp_path: Path) -> Iterator[dict[str, str]]:
    """The local stack and the four services on free ports, as `make run` starts them."""
    ports = free_stack_ports()
    env = {**os.environ, "LEDGERSHARE_HOME": str(tmp_path / "home"), "COLUMNS": "160",
           "PATH": f"{BIN}:{os.environ['PATH']}", "PYTHONPATH": str(ROOT),
           **{f"LEDGERSHARE_PORT_{k.upper()}": str(v)
              for k, v in msgspec.structs.asdict(ports).items()}}
    stack = Stack.local(Settings(home=env["LEDGERSHARE_HOME"]), ports)
    stack.up(detach=False, progress=lambda _m: None)
    procs = [subprocess.Popen([sys.executable, "-m", service.module], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for service in SERVICES]
    try:
        subprocess.run([sys.executable, "-c", "import asyncio; from cli.run import "
                        "wait_for_services as w; from services.registry import names as n; "
                        "from runtime.settings import load_settings as l; "
                        "asyncio.run(w(l(), n()))"], env=env, check=True, timeout=60)
        yield env
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=30)
        stack.down(progress=lambda _m: None)


@pytest.fixture
def gateway(system: dict[str, str], tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """The gateway on the system, as `make run` starts it: its URL and its log."""
    # as `ledgershare run` starts it: the WeChat gateway's user of the stack
    env = {**system, "LEDGERSHARE_GATEWAY_PORT": str(free_port()), STACK_USER: "wechat"}
    log = tmp_path / "gateway.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "gateway"], env=env, stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        settings = load_settings(env)
        wait_for_gateway(settings)
        yield f"http://{settings.gateway_host}:{settings.gateway_port}", log
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def run_block(lines: list[str], env: dict[str, str], cwd: Path) -> str:
    """Run the lines as one bash script (stopping at the first failure); its output."""
    script = "set -euo pipefail\n" + "".join(f"echo '$ {line}'\n{line}\n" for line in lines)
    done = subprocess.run(["bash", "-c", script], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def assert_the_walkthrough_worked(out: str, home: str, here: Path) -> None:
    assert "bob (Bob) is now your friend" in out
    assert "1 account set(s) shared with 1 friend(s)" in out
    assert "saved mine.bak" in out
    assert "verified: the rebuilt read model equals the live one" in out
    assert (here / "mine.bak").read_bytes() == (here / "123-2018.bak").read_bytes()
    assert (Path(home) / "session.json").stat().st_mode & 0o777 == 0o600


def test_the_readme_command_block_runs(system: dict[str, str], tmp_path: Path) -> None:
    out = run_block([line for line in readme_commands().splitlines() if line], system,
                    tmp_path)
    assert_the_walkthrough_worked(out, system["LEDGERSHARE_HOME"], tmp_path)


# The block's commands that need the bus (the CLI refuses them with a gateway set).
BUS_ONLY = ("ledgershare member bind", "ledgershare events", "ledgershare services",
            "ledgershare replay")


def test_the_readme_command_block_runs_through_the_gateway(
        system: dict[str, str], gateway: tuple[str, Path], tmp_path: Path) -> None:
    url, log = gateway
    # Everything else gets a gateway and a NATS URL where nothing listens: a command
    # that succeeds went through the gateway. The bus commands get the stack's own
    # (each its user's: the operator's, or the WeChat gateway's for `member bind`).
    env = {**system, "LEDGERSHARE_GATEWAY_URL": url,
           "LEDGERSHARE_NATS_URL": "nats://127.0.0.1:1"}
    lines = [f"LEDGERSHARE_GATEWAY_URL= env -u LEDGERSHARE_NATS_URL {line}"
             if line.startswith(BUS_ONLY) else line
             for line in readme_commands().splitlines() if line]
    out = run_block(lines, env, tmp_path)
    assert_the_walkthrough_worked(out, system["LEDGERSHARE_HOME"], tmp_path)
    through = {line.split()[1] for line in lines if line.startswith("ledgershare ")}
    assert through >= {"member", "friend", "drive", "backup", "share", "cloudshare"}
    assert answered(log) >= {
        "identity/register", "identity/login", "identity/me", "social/add_friend",
        "social/list_friends", "storage/begin_upload", "storage/complete_upload",
        "storage/drive", "storage/versions", "sharing/grant", "sharing/shares",
        "identity/drive_password_set", "identity/drive_password_verify",
        "sharing/cloud_shares", "storage/download", "sharing/revoke"}, log.read_text()


def answered(log: Path) -> set[str]:
    """The operations the gateway answered with 200, from its access log (JSON lines)."""
    found = set()
    for line in log.read_text().splitlines():
        entry = msgspec.json.decode(line) if line.startswith("{") else {}
        if entry.get("logger") == "uvicorn.access":
            hit = re.search(r'"POST /api/v1/(\w+/\w+) HTTP/[\d.]+" 200$', entry["msg"])
            found |= {hit.group(1)} if hit else set()
    return found


BAD = [
    ["member"], ["member", "register"], ["member", "register", "x"],
    ["friend", "add", "bob"], ["backup", "upload"], ["backup", "upload", "f", "--set", "s"],
    ["backup", "versions", "--set", "s", "--year", "twenty"],
    ["backup", "download", "--year", "2018"], ["share", "grant", "--set", "s"],
    ["share", "grant", "bob", "--set", "s", "--expires", "tomorrow"],
    ["share", "grant", "bob", "--set", "s", "--expires", "2030-01-01T00:00"],
    ["cloudshare", "download", "--set", "s", "--year", "2018"],
    ["drive", "password", "shout"], ["replay", "everything"], ["events", "tail", "-n", "x"],
    ["no-such-command"], ["member", "me"], ["backup", "list"], ["friend", "list"],
    ["backup", "upload", "missing.bak", "--set", "s", "--year", "2018", "--period", "1"],
    ["events", "tail"], ["services"],
    ["member", "register", "x", "--nickname", "y", "--password", "z"],
]


@pytest.mark.parametrize("argv", BAD, ids=" ".join)
def test_bad_arguments_give_one_line_and_a_non_zero_exit(argv: list[str],
                                                         tmp_path: Path) -> None:
    env = {**os.environ, "LEDGERSHARE_HOME": str(tmp_path),
           "LEDGERSHARE_NATS_URL": "nats://127.0.0.1:1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "cli.main", *argv], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), done.stderr
    assert "Traceback" not in done.stderr + done.stdout


def test_status_reports_poison_events_and_the_services_go_on(system: dict[str, str],
                                                             tmp_path: Path) -> None:
    # Only the local superuser may write into the log what no service would.
    poison = ("import asyncio, nats\n"
              "async def main():\n"
              "    nc = await nats.connect(__import__('runtime.settings').settings"
              ".load_settings(user='admin').nats_url)\n"
              "    await nc.jetstream().publish('evt.social.friendship.x.FriendAdded', b'{oops')\n"
              "    await nc.close()\n"
              "asyncio.run(main())\n")
    subprocess.run([sys.executable, "-c", poison], env=system, check=True, timeout=30)

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ledgershare", *argv], env={
            **system, "LEDGERSHARE_PASSWORD": "pass-123"}, cwd=tmp_path, capture_output=True,
            text=True, timeout=60)

    assert run("member", "register", "after", "--nickname", "A").returncode == 0
    assert run("member", "login", "after").returncode == 0
    assert run("friend", "list").returncode == 0  # social waited past the poison event
    doc = msgspec.json.decode(run("status", "--json").stdout)
    assert doc["dead_letters"] == {"social": 1, "sharing": 1}
    # published raw, without the headers every append sets: a foreign message
    assert doc["foreign_messages"] == {"social": 1, "sharing": 1}
    out = run("status").stdout
    assert "poison event(s) parked in social.dead_letters" in out
    assert "1 of them foreign" in out
