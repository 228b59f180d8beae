"""deploy/probe.py: which ping answers make a service healthy, and the exit code it gives.
(tests/integration/test_nats_permissions.py pings real services with it.)"""

from __future__ import annotations

from typing import Any

import pytest

from deploy import probe
from runtime.settings import Settings


def answer(name: str, host: str | None = None) -> dict[str, Any]:
    return {"name": name, "id": "x", "version": "0.1.0", "type": "io.nats.micro.v1.ping_response",
            "metadata": {"host": host} if host else {}}


@pytest.mark.parametrize(("answers", "healthy"), [
    ([answer("social")], True),  # answers without hosts: any instance counts
    ([], False),
    ([answer("sharing")], False),  # another service's answer is not this one's
    ([answer("social", "pod-b")], False),  # with hosts: only this pod's counts
    ([answer("social", "pod-b"), answer("social", "pod-a")], True),
    ([{"name": "social", "metadata": None}], True),
])
def test_which_answers_make_a_service_healthy(answers: list[dict[str, Any]],
                                               healthy: bool) -> None:
    assert probe.healthy(answers, "social", "pod-a") is healthy


@pytest.mark.parametrize(("problem", "code"), [(None, 0), ("social did not answer", 1)])
def test_the_exit_code_says_healthy_or_not_and_why(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        problem: str | None, code: int) -> None:
    asked: list[tuple[str, float]] = []

    async def fake(settings: Settings, name: str, *, host: str, within: float) -> str | None:
        asked.append((name, within))
        return problem

    monkeypatch.setattr(probe, "probe", fake)
    assert probe.main(["social", "--within", "1.5"]) == code
    assert asked == [("social", 1.5)]
    assert capsys.readouterr().err.strip() == (problem or "")


async def test_an_unreachable_server_is_unhealthy_not_a_crash() -> None:
    settings = Settings(nats_url="nats://127.0.0.1:9")  # the discard port: nothing listens
    problem = await probe.probe(settings, "social", host="pod-a", within=0.5)
    assert problem is not None and problem.startswith("cannot reach NATS")
