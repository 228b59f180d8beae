"""Whose allowance a request counts against: the client's address (a forwarded one only
from a trusted proxy), an IPv6 client's /64, and the account a request acts on."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from nats.aio.client import Client as NATS
from starlette.requests import Request

from gateway.limits import (
    Limiter,
    Network,
    client_address,
    counted_as,
    trusted_networks,
)
from runtime.tokens import Signer, Verifier, new_private_key, public_key_of


def request(peer: str | None, *forwarded: str) -> Request:
    return Request({"type": "http", "method": "POST", "path": "/", "query_string": b"",
                    "client": (peer, 5000) if peer else None,
                    "headers": [(b"x-forwarded-for", f.encode()) for f in forwarded]})


PROXIES: tuple[Network, ...] = trusted_networks("10.0.0.0/8, 2001:db8:ff::1")


@pytest.mark.parametrize(("peer", "forwarded", "trusted", "seen"), [
    ("203.0.113.9", ("198.51.100.1",), (), "203.0.113.9"),  # no proxy trusted
    ("203.0.113.9", ("198.51.100.1",), PROXIES, "203.0.113.9"),  # not from the proxy
    ("10.1.2.3", ("198.51.100.1",), PROXIES, "198.51.100.1"),
    ("10.1.2.3", ("1.1.1.1, 198.51.100.1",), PROXIES, "198.51.100.1"),  # 1.1.1.1: forged
    ("10.1.2.3", ("1.1.1.1", "198.51.100.1, 10.9.9.9"), PROXIES, "198.51.100.1"),  # 2 hops
    ("10.1.2.3", ("garbage, 10.2.2.2",), PROXIES, "10.2.2.2"),
    ("10.1.2.3", (), PROXIES, "10.1.2.3"),  # a proxy's own request
    ("2001:db8:ff::1", ("2001:DB8::0001",), PROXIES, "2001:db8::1"),
    (None, ("198.51.100.1",), PROXIES, ""),
])
def test_a_forwarded_address_counts_only_from_a_trusted_proxy(
        peer: str | None, forwarded: tuple[str, ...], trusted: tuple[Network, ...],
        seen: str) -> None:
    assert client_address(request(peer, *forwarded), trusted) == seen


def test_an_ipv6_client_is_counted_by_its_64_and_a_mapped_ipv4_as_itself() -> None:
    assert counted_as("2001:db8:1:2:aaaa::1") == counted_as("2001:db8:1:2:bbbb::7")
    assert counted_as("2001:db8:1:3::1") != counted_as("2001:db8:1:2::1")
    assert counted_as("::ffff:198.51.100.1") == counted_as("198.51.100.1") == "198.51.100.1"


def test_a_trusted_proxy_that_is_not_an_address_is_refused_at_start() -> None:
    with pytest.raises(ValueError, match="gateway_trusted_proxies"):
        trusted_networks("10.0.0.1, proxy.example")


def test_a_request_counts_under_its_account_or_its_sessions_member() -> None:
    private = new_private_key()
    now = datetime.now(UTC)
    session, _ = Signer(private).issue(member_id="m-1", kind="session", now=now,
                                       ttl=timedelta(hours=1), pv=0)
    drive, _ = Signer(private).issue(member_id="m-1", kind="drive", now=now,
                                     ttl=timedelta(hours=1), pv=0)
    limiter = Limiter(NATS(), per_client=1, per_account=1, window_s=60,
                      verifier=Verifier(public_key_of(private)))  # never connected
    assert limiter.account_of({"account": " Ｖictim "}) == "account:victim"
    assert limiter.account_of({"session": session}) == "member:m-1"
    # Not a genuine session: it counts on its own, never under a member it names.
    assert limiter.account_of({"session": drive}).startswith("session:")
    assert limiter.account_of({"session": "x.y"}).startswith("session:")
    assert limiter.account_of({"code": "c"}) == ""
