"""Ed25519-signed tokens: identity signs, every service verifies locally with the public key.

Format: ``base64url(claims JSON) "." base64url(signature)``. Claims carry the member,
the kind (``session`` or ``drive``), issue and expiry times, and the member's password
version: a password change bumps it, and services refuse tokens with an older one.
"""

from __future__ import annotations

import base64
from datetime import datetime, timedelta

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from contracts.identity import InvalidToken, PasswordChanged, password_changes
from runtime.eventstore import EventStore
from runtime.settings import Settings


class Claims(msgspec.Struct, frozen=True, kw_only=True):
    """What a token asserts."""

    sub: str
    kind: str
    iat: datetime
    exp: datetime
    pv: int = 0


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Claims)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    # Only the canonical spelling: another character in the unused low bits of the last
    # one would decode to the same bytes, and an altered token must not pass.
    if _b64(raw) != text:
        raise ValueError("not canonical base64url")
    return raw


def new_private_key() -> str:
    """A fresh Ed25519 private key, as base64url of its 32 raw bytes."""
    key = Ed25519PrivateKey.generate()
    return _b64(key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                  serialization.NoEncryption()))


def public_key_of(private_key: str) -> str:
    """The public half, as base64url of its 32 raw bytes."""
    key = Ed25519PrivateKey.from_private_bytes(_unb64(private_key))
    return _b64(key.public_key().public_bytes(serialization.Encoding.Raw,
                                              serialization.PublicFormat.Raw))


def configured_public_key(settings: Settings) -> str:
    """The token public key from settings (or derived from a local private key)."""
    if settings.token_public_key:
        return settings.token_public_key
    if settings.token_private_key:
        return public_key_of(settings.token_private_key)
    raise SystemExit("set LEDGERSHARE_TOKEN_PUBLIC_KEY (identity's public_key endpoint has it)")


class Signer:
    """Issues tokens (identity only)."""

    def __init__(self, private_key: str) -> None:
        self._key = Ed25519PrivateKey.from_private_bytes(_unb64(private_key))

    def issue(self, *, member_id: str, kind: str, now: datetime, ttl: timedelta,
              pv: int) -> tuple[str, datetime]:
        """A signed token and its expiry."""
        claims = Claims(sub=member_id, kind=kind, iat=now, exp=now + ttl, pv=pv)
        body = _b64(_encoder.encode(claims))
        return f"{body}.{_b64(self._key.sign(body.encode()))}", claims.exp


_HOW = {"session": "log in", "drive": "verify your cloud-drive password",
        "openid": "log in through WeChat again"}


class Verifier:
    """Checks tokens with the public key; any flaw is the same `InvalidToken`."""

    def __init__(self, public_key: str, *, remember: int = 10_000) -> None:
        self._key = Ed25519PublicKey.from_public_bytes(_unb64(public_key))
        # A token's signature is checked once (an Ed25519 verify is ~60 µs, most of a
        # request's CPU); kind and expiry are checked on every use.
        self._genuine_ones: dict[str, Claims] = {}
        self._remember = remember

    def verify(self, token: str, *, kind: str, now: datetime) -> Claims:
        """The token's claims if it is genuine, of the right kind and not expired."""
        claims = self._genuine(token)
        if claims.kind != kind:
            raise InvalidToken(f"a {kind} token is needed; {_HOW.get(kind, 'log in')}")
        if claims.exp <= now:
            raise InvalidToken("the token has expired; log in again")
        return claims

    def _genuine(self, token: str) -> Claims:
        known = self._genuine_ones.get(token)
        if known is None:
            known = self._checked(token)
            if len(self._genuine_ones) >= self._remember:
                del self._genuine_ones[next(iter(self._genuine_ones))]
            self._genuine_ones[token] = known
        return known

    def _checked(self, token: str) -> Claims:
        body, _, sig = token.partition(".")
        try:
            self._key.verify(_unb64(sig), body.encode())
            return _decoder.decode(_unb64(body))
        except (InvalidSignature, ValueError, msgspec.DecodeError):
            raise InvalidToken("the token is not valid; log in again") from None


class Sessions:
    """The one session check, in every service: signature and expiry locally, then the
    member's current password version from the log's newest PasswordChanged (one direct
    get), so a password change ends earlier tokens at once, everywhere."""

    _changed = msgspec.json.Decoder(PasswordChanged)

    def __init__(self, verifier: Verifier, events: EventStore) -> None:
        self.verifier = verifier
        self.events = events

    async def member(self, token: str, *, now: datetime) -> str:
        """The member id of a valid, current session token."""
        return (await self.claims(token, now=now)).sub

    async def claims(self, token: str, *, now: datetime) -> Claims:
        """The claims of a valid, current session token."""
        claims = self.verifier.verify(token, kind="session", now=now)
        if claims.pv != await self.password_version(claims.sub):
            raise InvalidToken("the password has changed since this token; log in again")
        return claims

    async def password_version(self, member_id: str) -> int:
        subject = password_changes(member_id)
        last = await self.events.last_event_on(subject)
        if last is None:
            return 0
        version = self._changed.decode(last.data).version
        return version or len(await self.events.load(subject))

