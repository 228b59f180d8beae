"""The edge's rate limits: how often one client address and one account may call the
throttled operations (those whose declaration says ``throttled``: they check a secret or
claim an account name), counted across every gateway instance.

The counts live in a JetStream key-value bucket (`BUCKET`, in memory, every entry gone
one window after it was written). Per fixed window there is one key per client address
(an IPv6 client's /64) and one per account, each an HMAC of who it counts under a random
secret that the bucket holds for that window only, so no address or account name is
ever a key, and keys of two windows cannot be linked. A count moves by compare-and-set:
instances racing on one key each count once. A client or account past its allowance is
refused with `RateLimited` after one read of the bucket, with no write and no service
called.

When the bucket cannot be used (JetStream down, no permission) requests go through
unlimited, and the gateway logs it (docs/security.md says why it fails open).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import logging
import math
import random
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from nats.aio.client import Client as NATS
from nats.errors import Error as NatsError
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue
from starlette.requests import HTTPConnection

from contracts.errors import RateLimited
from contracts.identity import InvalidToken, account_key
from contracts.operations import Operation
from runtime.settings import Settings
from runtime.tokens import Verifier, public_key_of

BUCKET = "LIMITS"
# The bucket answers within a millisecond; past this it is treated as unavailable, so a
# sick bucket delays a throttled request by one second at most.
KV_TIMEOUT_S = 1.0
# After a failure the limiter stands aside this long instead of making every request
# wait out the timeout again (and logging each one).
STAND_ASIDE_S = 5.0
TRIES = 12  # compare-and-set rounds on one key before the request counts as a flood
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
log = logging.getLogger("ledgershare.gateway.limits")


def trusted_networks(text: str) -> tuple[Network, ...]:
    """The trusted proxies a setting names (addresses or CIDR networks, comma-separated)."""
    try:
        return tuple(ipaddress.ip_network(part.strip()) for part in text.split(",")
                     if part.strip())
    except ValueError as err:
        raise ValueError(f"gateway_trusted_proxies: {err}") from None


def client_address(request: HTTPConnection, trusted: Sequence[Network] = ()) -> str:
    """The address a request came from: its peer's, unless the peer is a trusted proxy;
    then the nearest X-Forwarded-For hop that is not one. Hops farther left are whatever
    the client wrote, so they never count."""
    address = _normal(request.client.host) if request.client else ""
    hops = ",".join(request.headers.getlist("x-forwarded-for")).split(",")
    for hop in reversed(hops):
        if not _within(address, trusted) or not _normal(hop.strip()):
            break
        address = _normal(hop.strip())
    return address


def _normal(address: str) -> str:
    """An IP address in its canonical spelling ("" when it is not one)."""
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return ""


def _within(address: str, networks: Sequence[Network]) -> bool:
    if not address:
        return False
    ip = ipaddress.ip_address(address)
    return any(ip in network for network in networks)


def counted_as(address: str) -> str:
    """What a client's allowance is counted under: its address, but an IPv6 client's /64
    (one subscriber is given a whole /64 to pick addresses from)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


class Limiter:
    """Admits or refuses calls of the throttled operations (one per gateway instance; the
    counts are shared through the bucket)."""

    def __init__(self, nc: NATS, *, per_client: int, per_account: int, window_s: float,
                 trusted: Sequence[Network] = (), verifier: Verifier | None = None,
                 replicas: int = 1, clock: Callable[[], float] = time.time) -> None:
        self.js = nc.jetstream(timeout=KV_TIMEOUT_S)
        self.per_client = per_client
        self.per_account = per_account
        self.window_s = window_s
        self.trusted = tuple(trusted)
        self.verifier = verifier
        self.clock = clock
        self.config = KeyValueConfig(bucket=BUCKET, ttl=window_s, replicas=replicas,
                                     storage=StorageType.MEMORY, history=1, direct=True,
                                     description="gateway rate limits (gateway/limits.py)")
        self._kv: KeyValue | None = None
        self._secret: tuple[int, bytes] = (-1, b"")
        self._aside_until = 0.0

    async def admit(self, operation: Operation[Any, Any], client: str, account: str) -> None:
        """Count one call (an operation that is not throttled passes uncounted); raise
        `RateLimited` when the client or the account has used this window's allowance.
        ``client``: the `client_address`; ``account``: `account_of` the request."""
        now = self.clock()
        if not operation.throttled or now < self._aside_until:
            return
        window = math.floor(now / self.window_s)
        try:
            admitted = await self._count(window, client, account)
        except (NatsError, OSError) as err:  # OSError: TimeoutError among others
            self._aside_until, self._kv = now + STAND_ASIDE_S, None  # then bind afresh
            log.warning("rate limits not enforced for %gs: the %s bucket is unavailable "
                        "(%s: %s)", STAND_ASIDE_S, BUCKET, type(err).__name__, err)
            return
        if not admitted:
            wait = max(1, math.ceil((window + 1) * self.window_s - now))
            raise RateLimited(f"too many attempts; try again in {wait} seconds",
                              details={"retry_after_s": str(wait)})

    def account_of(self, fields: Mapping[str, Any]) -> str:
        """Whose account a request acts on: the account it names, else its session's
        member; a session that is not genuine counts on its own ("" for neither)."""
        account, session = fields.get("account"), fields.get("session")
        if isinstance(account, str) and account.strip():
            return f"account:{account_key(account.strip())}"
        if isinstance(session, str) and session:
            return self._member_of(session)
        return ""

    def _member_of(self, session: str) -> str:
        if self.verifier is not None:
            try:
                claims = self.verifier.verify(session, kind="session", now=datetime.now(UTC))
                return f"member:{claims.sub}"
            except InvalidToken:
                pass
        return f"session:{hashlib.sha256(session.encode()).hexdigest()}"

    async def _count(self, window: int, client: str, account: str) -> bool:
        """Take one from the client's allowance, then the account's (a refused client
        costs the account nothing)."""
        kv = await self.ensure()
        secret = await self._secret_of(kv, window)
        if not await _take(kv, _key(secret, window, "client", counted_as(client)),
                           self.per_client):
            return False
        return not account or await _take(kv, _key(secret, window, "account", account),
                                          self.per_account)

    async def ensure(self) -> KeyValue:
        """The bucket, created when missing: in production the operator's connection does
        that once, since a gateway's NATS user may use the bucket but create no stream."""
        if self._kv is None:
            try:
                kv = await self.js.key_value(BUCKET)
            except BucketNotFoundError:
                kv = await self.js.create_key_value(self.config)
            ttl = (await kv.status()).ttl
            if not ttl or abs(ttl - self.window_s) > 1:  # counts would end early, or late
                log.warning("the %s bucket keeps entries for %ss, not one window (%gs): "
                            "re-create it after changing the window", BUCKET, ttl,
                            self.window_s)
            self._kv = kv
        return self._kv

    async def _secret_of(self, kv: KeyValue, window: int) -> bytes:
        """The window's hashing secret, the same in every instance: the first to need it
        makes it, the others read it."""
        if self._secret[0] != window:
            name, mine = f"secret.{window}", secrets.token_bytes(32)
            try:
                await kv.create(name, mine)
            except KeyWrongLastSequenceError:
                mine = (await kv.get(name)).value or b""
            self._secret = (window, mine)
        return self._secret[1]


def _key(secret: bytes, window: int, kind: str, who: str) -> str:
    digest = hmac.new(secret, f"{window}\x1f{kind}\x1f{who}".encode(), hashlib.sha256)
    return f"{kind}.{digest.hexdigest()[:40]}"


async def _take(kv: KeyValue, key: str, limit: int) -> bool:
    """One use of ``key``'s allowance if any is left. Compare-and-set: of instances racing
    on one count, one wins each round and the others read again; a key contended for
    `TRIES` rounds is a flood, refused."""
    for round_ in range(TRIES):
        try:
            entry: KeyValue.Entry | None = await kv.get(key)
        except KeyNotFoundError:
            entry = None
        used = int(entry.value or b"0") if entry is not None else 0
        if used >= limit:
            return False
        try:
            if entry is None:
                await kv.create(key, b"1")
            else:
                await kv.update(key, str(used + 1).encode(), last=entry.revision)
            return True
        except KeyWrongLastSequenceError:
            await asyncio.sleep(random.random() * 0.002 * (round_ + 1))
    return False


def limiter_for(nc: NATS, settings: Settings) -> Limiter:
    """The limiter the settings describe; with the token public key it counts a session's
    calls under its member (else under the session itself)."""
    public = settings.token_public_key or (
        public_key_of(settings.token_private_key) if settings.token_private_key else "")
    return Limiter(nc, per_client=settings.gateway_limit_per_client,
                   per_account=settings.gateway_limit_per_account,
                   window_s=settings.gateway_limit_window_s,
                   trusted=trusted_networks(settings.gateway_trusted_proxies),
                   verifier=Verifier(public) if public else None,
                   replicas=settings.stream_replicas)
