"""The HTTP transport agrees with the gateway on paths and statuses, and the CLI says
clearly what it cannot do through a gateway."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from contracts.errors import GENERIC, BadRequest
from contracts.http import STATUS_CLASS, api_path, gateway_base
from gateway.api import STATUS, Exposed
from services.registry import SERVICES

ROOT = Path(__file__).resolve().parents[2]


def test_the_client_posts_to_the_path_the_gateway_serves() -> None:
    for service in SERVICES:
        for op in service.client.operations():
            served = Exposed(service.client.context, op, None)  # type: ignore[arg-type]
            assert api_path(service.client.context, op.name) == served.path


def test_an_undeclared_code_gets_the_class_its_status_stands_for() -> None:
    assert set(STATUS_CLASS) <= {status for _cls, status in STATUS}
    for cls, status in STATUS:
        if status in STATUS_CLASS:
            assert issubclass(cls, STATUS_CLASS[status]), (cls, status)
        else:  # its code is known to every operation's table
            assert cls in GENERIC, (cls, status)


@pytest.mark.parametrize(("given", "base"), [
    ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
    ("http://127.0.0.1:8080/api/v1/", "http://127.0.0.1:8080"),
    ("https://edge.example/ledgershare/api/v1", "https://edge.example/ledgershare"),
])
def test_a_gateway_url_may_be_its_origin_or_the_api_url(given: str, base: str) -> None:
    assert gateway_base(given) == base


@pytest.mark.parametrize("bad", ["127.0.0.1:8080", "ftp://host", "http://", "nonsense"])
def test_a_url_that_names_no_http_server_is_refused(bad: str) -> None:
    with pytest.raises(BadRequest, match="not a gateway URL"):
        gateway_base(bad)


BUS_ONLY = [["member", "bind", "--wechat-user", "a", "--account", "a", "--nickname", "A"],
            ["events", "tail"], ["services"], ["replay", "sharing"], ["status"], ["demo"]]


@pytest.mark.parametrize("argv", BUS_ONLY, ids=" ".join)
def test_a_command_that_needs_the_bus_refuses_a_gateway_in_one_line_with_status_2(
        argv: list[str], tmp_path: Path) -> None:
    env = {**os.environ, "LEDGERSHARE_HOME": str(tmp_path), "PYTHONPATH": str(ROOT),
           "LEDGERSHARE_GATEWAY_URL": "http://127.0.0.1:1"}
    done = subprocess.run([sys.executable, "-m", "cli.main", *argv], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1, done.stderr
    assert f"`ledgershare {argv[0]}" in done.stderr
    assert "not available through the gateway" in done.stderr


def test_the_gateway_option_overrides_the_environment_and_names_the_url(
        tmp_path: Path) -> None:
    env = {**os.environ, "LEDGERSHARE_HOME": str(tmp_path), "PYTHONPATH": str(ROOT),
           "LEDGERSHARE_GATEWAY_URL": "http://127.0.0.1:2", "LEDGERSHARE_PASSWORD": "pw-123"}
    done = subprocess.run([sys.executable, "-m", "cli.main", "--gateway",
                           "http://127.0.0.1:1/api/v1", "member", "login", "alice"], env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
    assert "the gateway at http://127.0.0.1:1 is not reachable" in done.stderr
    assert "[unavailable]" in done.stderr
