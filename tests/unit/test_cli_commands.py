"""The command's tables agree with the modules it loads only when needed."""

from __future__ import annotations

import io

import msgspec
import pytest
from rich.console import Console

from cli import main, operate
from runtime.eventstore import FOREIGN


def test_replay_offers_exactly_the_read_models_it_can_rebuild() -> None:
    assert sorted(main.REPLAYABLE) == sorted(operate.READ_MODELS)


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
