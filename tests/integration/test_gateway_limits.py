"""The gateway's rate limits, on real servers: a flooding client or a guessed-at account
is refused with a typed 429 decided at the edge (no service is asked), nobody else is
held up, the counts are shared by every gateway instance and survive races, a forwarded
address counts only from a trusted proxy, and the events a command appends name the
address it came from."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import nats
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from starlette.applications import Starlette

from contracts.base import HDR_CLIENT
from contracts.identity import IdentityClient, Register, member_subjects
from gateway.app import create_app
from gateway.limits import BUCKET
from runtime.eventstore import EventStore
from runtime.settings import Settings
from services.registry import SERVICES
from tests.helpers import cid

# One window for the whole test (a fixed window starts afresh at its end: at midnight UTC).
WINDOW = 86400.0


def gateway(nc: NATS, settings: Settings, **limits: Any) -> Starlette:
    """A gateway instance on ``nc`` with these limits."""
    return create_app(nc, settings.with_overrides(gateway_limit_window_s=WINDOW, **limits),
                      [s.client for s in SERVICES])


async def post(app: Starlette, address: str, path: str, body: dict[str, Any], *,
               headers: dict[str, str] | None = None) -> httpx.Response:
    """One HTTP request to ``app`` from a client at ``address``."""
    transport = httpx.ASGITransport(app=app, client=(address, 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as http:
        return await http.post(f"/api/v1/{path}", json=body, headers=headers or {})


async def login(app: Starlette, address: str, account: str, *,
                headers: dict[str, str] | None = None) -> httpx.Response:
    return await post(app, address, "identity/login",
                      {"account": account, "password": "a-wrong-guess"}, headers=headers)


def limited(answer: httpx.Response) -> bool:
    if answer.status_code != 429:
        return False
    assert answer.json()["code"] == "rate_limited", answer.text
    assert 1 <= int(answer.headers["Retry-After"]) <= WINDOW
    assert answer.json()["details"]["retry_after_s"] == answer.headers["Retry-After"]
    return True


@asynccontextmanager
async def requests_on(nc: NATS, subject: str) -> AsyncIterator[list[Msg]]:
    """The requests sent on ``subject`` meanwhile (a copy of each, besides the service's)."""
    seen: list[Msg] = []

    async def note(msg: Msg) -> None:
        seen.append(msg)

    sub = await nc.subscribe(subject, cb=note)
    await nc.flush()
    try:
        yield seen
    finally:
        await nc.flush()
        await asyncio.sleep(0.1)  # the callbacks of what the flush brought in
        await sub.unsubscribe()


async def test_a_flooding_client_gets_a_typed_429_from_the_edge_and_holds_up_nobody(
        all_services: Settings, nc: NATS) -> None:
    app = gateway(nc, all_services, gateway_limit_per_client=3,
                  gateway_limit_per_account=100)
    async with requests_on(nc, "identity.login") as seen:
        first = [await login(app, "198.51.100.1", "victim") for _ in range(3)]
        started = time.perf_counter()
        flood = await asyncio.gather(*(login(app, "198.51.100.1", f"user{n}")
                                       for n in range(30)))
        refused_within = time.perf_counter() - started
        other = await login(app, "198.51.100.2", "someone")
    assert [a.status_code for a in first] == [401] * 3
    assert all(limited(a) for a in flood)
    assert "too many attempts" in flood[0].json()["message"]
    assert refused_within < 3.0  # thirty refusals: a read of the bucket each
    assert other.status_code == 401, other.text  # another client is not held up
    assert len(seen) == 4  # the refused ones never reached identity


async def test_an_accounts_limit_holds_across_client_addresses(
        all_services: Settings, nc: NATS) -> None:
    app = gateway(nc, all_services, gateway_limit_per_client=100,
                  gateway_limit_per_account=3)
    answers = [await login(app, f"198.51.100.{n}", "Victim") for n in range(1, 6)]
    assert [a.status_code for a in answers[:3]] == [401] * 3
    assert all(limited(a) for a in answers[3:])
    # Accounts are counted case-insensitively, as identity names them; another is free.
    assert limited(await login(app, "198.51.100.9", "VICTIM"))
    assert (await login(app, "198.51.100.1", "another")).status_code == 401


async def test_a_sessions_calls_count_under_its_member(all_services: Settings,
                                                      nc: NATS) -> None:
    app = gateway(nc, all_services, gateway_limit_per_client=100,
                  gateway_limit_per_account=2)
    await post(app, "198.51.100.1", "identity/register", {
        "command_id": cid(), "account": "holder", "password": "secret-1", "nickname": "H"})
    session = (await post(app, "198.51.100.1", "identity/login", {
        "account": "holder", "password": "secret-1"})).json()["session"]
    answers = [await post(app, f"198.51.100.{n}", "identity/drive_password_verify",
                          {"command_id": cid(), "password": "not-the-drive-password"},
                          headers={"Authorization": f"Bearer {session}"})
               for n in range(2, 5)]
    assert [a.json()["code"] for a in answers[:2]] == ["drive_password_not_set"] * 2
    assert limited(answers[2])
    # Calls that are not throttled are never counted.
    me = await post(app, "198.51.100.5", "identity/me", {"session": session})
    assert me.status_code == 200


async def test_two_gateway_instances_share_the_counts(all_services: Settings,
                                                      nc: NATS) -> None:
    other_nc = await nats.connect(all_services.nats_url)
    try:
        limits = {"gateway_limit_per_client": 4, "gateway_limit_per_account": 100}
        one, two = gateway(nc, all_services, **limits), gateway(other_nc, all_services,
                                                                 **limits)
        answers = [await login(app, "198.51.100.1", f"user{n}")
                   for n, app in enumerate([one, two] * 3)]
    finally:
        await other_nc.close()
    assert [a.status_code for a in answers[:4]] == [401] * 4
    assert all(limited(a) for a in answers[4:])


async def test_racing_requests_never_exceed_the_limit(all_services: Settings,
                                                      nc: NATS) -> None:
    other_nc = await nats.connect(all_services.nats_url)
    try:
        limits = {"gateway_limit_per_client": 5, "gateway_limit_per_account": 100}
        one, two = gateway(nc, all_services, **limits), gateway(other_nc, all_services,
                                                                 **limits)
        answers = await asyncio.gather(*(login(app, "198.51.100.1", f"user{n}")
                                         for n, app in enumerate([one, two] * 15)))
    finally:
        await other_nc.close()
    through = [a for a in answers if not limited(a)]
    # Each lost compare-and-set is another's win, so all five are taken, and no more.
    assert len(through) == 5
    assert all(a.status_code == 401 for a in through)


async def test_a_forwarded_address_counts_only_from_a_trusted_proxy(
        all_services: Settings, nc: NATS) -> None:
    app = gateway(nc, all_services, gateway_limit_per_client=2,
                  gateway_limit_per_account=100, gateway_trusted_proxies="10.0.0.0/24")
    # A client naming other addresses itself is still counted as itself.
    spoofed = [await login(app, "198.51.100.1", f"user{n}",
                           headers={"X-Forwarded-For": f"192.0.2.{n}"}) for n in range(4)]
    assert [limited(a) for a in spoofed] == [False, False, True, True]
    # Behind the proxy, each client has its own allowance, whatever it prepends itself.
    for real in ("203.0.113.1", "203.0.113.2"):
        answers = [await login(app, "10.0.0.7", f"user{n}", headers={
            "X-Forwarded-For": f"192.0.2.{n}, {real}"}) for n in range(3)]
        assert [limited(a) for a in answers] == [False, False, True]


async def test_when_the_bucket_is_gone_requests_go_through_and_the_gateway_says_so(
        all_services: Settings, nc: NATS, caplog: pytest.LogCaptureFixture) -> None:
    app = gateway(nc, all_services, gateway_limit_per_client=1,
                  gateway_limit_per_account=100)
    assert (await login(app, "198.51.100.1", "user1")).status_code == 401
    assert limited(await login(app, "198.51.100.1", "user2"))
    await nc.jetstream().delete_key_value(BUCKET)
    with caplog.at_level(logging.WARNING, logger="ledgershare.gateway.limits"):
        answer = await login(app, "198.51.100.1", "user3")
    assert answer.status_code == 401, answer.text
    assert "rate limits not enforced" in caplog.text


async def test_the_events_of_a_command_name_the_address_it_came_from(
        all_services: Settings, nc: NATS, events: EventStore) -> None:
    app = gateway(nc, all_services, gateway_trusted_proxies="10.0.0.7")
    direct = await post(app, "203.0.113.5", "identity/register", {
        "command_id": cid(), "account": "direct", "password": "secret-1", "nickname": "D"})
    proxied = await post(app, "10.0.0.7", "identity/register", {
        "command_id": cid(), "account": "proxied", "password": "secret-1", "nickname": "P"},
        headers={"X-Forwarded-For": "2001:db8::1"})
    for answer, address in ((direct, "203.0.113.5"), (proxied, "2001:db8::1")):
        stored = await events.load(member_subjects(answer.json()["member_id"]))
        assert [e.headers[HDR_CLIENT] for e in stored] == [address]
    # From another NATS client the header is data: kept only when it is an address.
    registered = await IdentityClient(nc).call(IdentityClient.register, Register(
        command_id=cid(), account="bus", password="secret-1", nickname="B"),
        client_address="<script>")
    stored = await events.load(member_subjects(registered.member_id))
    assert stored and all(HDR_CLIENT not in e.headers for e in stored)
