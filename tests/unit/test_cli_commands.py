"""The command's tables agree with the modules it loads only when needed."""

from __future__ import annotations

import io
import subprocess
import sys

import msgspec
import pytest
from rich.console import Console

from cli import operate
from runtime.eventstore import FOREIGN


def test_the_operator_commands_load_no_service_code() -> None:
    # Replay is an operation of the service that owns the read model: the operator's
    # command is a client of the bus, and works where it has no database access.
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, cli.main, cli.operate; "
         "print(sorted(m for m in sys.modules if m.split('.')[0] in ('services', 'asyncpg')))"],
        capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "[]"


def test_a_foreign_message_is_shown_as_such_and_never_breaks_the_listing(
        capsys: pytest.CaptureFixture[str]) -> None:
    out = io.StringIO()
    console = Console(file=out, width=200)
    subject = "evt.identity.member.m1.[bold]MemberRegistered"
    operate.print_event(console, 7, subject, {}, b"\xff not json", as_json=False)
    assert "foreign" in out.getvalue() and "[bold]" in out.getvalue()
    operate.print_event(console, 7, subject, {}, b"\xff not json", as_json=True)
    doc = msgspec.json.decode(capsys.readouterr().out)
    assert doc["foreign"].startswith(FOREIGN) and doc["seq"] == 7
