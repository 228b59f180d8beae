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

from contracts.identity import InvalidToken


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
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


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


class Verifier:
    """Checks tokens with the public key; any flaw is the same `InvalidToken`."""

    def __init__(self, public_key: str) -> None:
        self._key = Ed25519PublicKey.from_public_bytes(_unb64(public_key))

    def verify(self, token: str, *, kind: str, now: datetime) -> Claims:
        """The token's claims if it is genuine, of the right kind and not expired."""
        claims = self._genuine(token)
        if claims.kind != kind:
            raise InvalidToken(f"a {kind} token is needed")
        if claims.exp <= now:
            raise InvalidToken("the token has expired; log in again")
        return claims

    def _genuine(self, token: str) -> Claims:
        body, _, sig = token.partition(".")
        try:
            self._key.verify(_unb64(sig), body.encode())
            return _decoder.decode(_unb64(body))
        except (InvalidSignature, ValueError, msgspec.DecodeError):
            raise InvalidToken("the token is not valid; log in again") from None
