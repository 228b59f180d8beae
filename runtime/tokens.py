"""Ed25519-signed tokens: identity signs, every service verifies locally with the public key.

Format: ``base64url(claims JSON) "." base64url(signature)``. Claims carry the member,
the kind (``session``, ``drive`` or ``openid``), issue and expiry times, the id of the key
that signed them (so the key can rotate: services accept the current and the previous
public keys), and what can end them before they expire, which every service checks in
the log (`Sessions`):

- the member's password version ``pv``: a password change ends every token of theirs;
- a session's id ``sid``: logging out ends that session (``SessionEnded``);
- how a session was obtained ``via`` (``password`` or ``wechat``) and, through WeChat,
  the member's WeChat version ``wv``: unbinding WeChat ends the sessions it gave;
- a drive token's drive-password version ``dv``: changing or resetting the cloud-drive
  password ends the drive tokens issued before.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Final

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from contracts.identity import (
    DrivePasswordChanged,
    InvalidToken,
    MemberUnbound,
    PasswordChanged,
    drive_password_changes,
    erasures,
    password_changes,
    session_end,
    unbinds,
)
from runtime.eventstore import EventStore
from runtime.settings import Settings


class Claims(msgspec.Struct, frozen=True, kw_only=True):
    """What a token asserts."""

    sub: str
    kind: str
    iat: datetime
    exp: datetime
    pv: int = 0
    kid: str = ""  # the signing key's id (tokens from before rotation have none)
    sid: str = ""  # a session's id
    via: str = ""  # a session's origin: "password" or "wechat"
    wv: int = 0  # the WeChat version a WeChat session was issued under
    dv: int = 0  # the drive-password version a drive token was issued under


VIA_WECHAT: Final = "wechat"
VIA_PASSWORD: Final = "password"


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


def key_id(public_key: str) -> str:
    """A short, stable id of a public key (what a token names its signer by)."""
    return hashlib.sha256(_unb64(public_key)).hexdigest()[:12]


def configured_public_key(settings: Settings) -> str:
    """The token public key from settings (or derived from a local private key)."""
    if settings.token_public_key:
        return settings.token_public_key
    if settings.token_private_key:
        return public_key_of(settings.token_private_key)
    raise SystemExit("set LEDGERSHARE_TOKEN_PUBLIC_KEY (identity's public_key endpoint has it)")


def verifier_for(settings: Settings) -> Verifier:
    """The verifier of a service: the current public key and the previous ones
    (``token_previous_public_keys``, comma-separated) while their tokens may live."""
    return Verifier(configured_public_key(settings), previous=previous_keys(settings))


def previous_keys(settings: Settings) -> list[str]:
    """The earlier public keys whose tokens are still accepted."""
    return [k.strip() for k in settings.token_previous_public_keys.split(",") if k.strip()]


class Signer:
    """Issues tokens (identity only)."""

    def __init__(self, private_key: str) -> None:
        self._key = Ed25519PrivateKey.from_private_bytes(_unb64(private_key))
        self.kid = key_id(public_key_of(private_key))

    def issue(self, *, member_id: str, kind: str, now: datetime, ttl: timedelta,
              pv: int, sid: str = "", via: str = "", wv: int = 0, dv: int = 0
              ) -> tuple[str, datetime]:
        """A signed token and its expiry."""
        claims = Claims(sub=member_id, kind=kind, iat=now, exp=now + ttl, pv=pv,
                        kid=self.kid, sid=sid, via=via, wv=wv, dv=dv)
        body = _b64(_encoder.encode(claims))
        return f"{body}.{_b64(self._key.sign(body.encode()))}", claims.exp


_HOW = {"session": "log in", "drive": "verify your cloud-drive password",
        "openid": "log in through WeChat again"}


class Verifier:
    """Checks tokens with the public key; any flaw is the same `InvalidToken`."""

    def __init__(self, public_key: str, *, previous: Sequence[str] = (),
                 remember: int = 10_000) -> None:
        self._key = Ed25519PublicKey.from_public_bytes(_unb64(public_key))
        self._keys = {key_id(k): Ed25519PublicKey.from_public_bytes(_unb64(k))
                      for k in (*previous, public_key)}
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
        """The claims, once the key they name (the current one if they name none) has
        checked the signature; a key no longer accepted is the same refusal."""
        body, _, sig = token.partition(".")
        try:
            claims = _decoder.decode(_unb64(body))
            key = self._keys.get(claims.kid) if claims.kid else self._key
            if key is None:
                raise ValueError("signed by a key no longer accepted")
            key.verify(_unb64(sig), body.encode())
            return claims
        except (InvalidSignature, ValueError, msgspec.DecodeError):
            raise InvalidToken("the token is not valid; log in again") from None


class Sessions:
    """The one token check, in every service: signature and expiry locally, then what
    may have ended the token since, from the log's newest events on a few subjects (one
    direct get each, in parallel): a password change, a logout of the session, an unbind
    of the WeChat user a session came through, a change of the cloud-drive password, the
    member's erasure."""

    _password = msgspec.json.Decoder(PasswordChanged)
    _unbound = msgspec.json.Decoder(MemberUnbound)
    _drive = msgspec.json.Decoder(DrivePasswordChanged)

    def __init__(self, verifier: Verifier, events: EventStore) -> None:
        self.verifier = verifier
        self.events = events

    async def member(self, token: str, *, now: datetime) -> str:
        """The member id of a valid, current session token."""
        return (await self.claims(token, now=now)).sub

    async def claims(self, token: str, *, now: datetime) -> Claims:
        """The claims of a valid, current session token."""
        claims = self.verifier.verify(token, kind="session", now=now)
        wechat = claims.via == VIA_WECHAT
        pv, ended, wv, erased = await asyncio.gather(
            self.password_version(claims.sub), self.ended(claims),
            self.wechat_version(claims.sub) if wechat else _zero(),
            self.erased(claims.sub))
        check_session(claims, pv=pv, wv=wv)
        if ended:
            raise InvalidToken("this session was logged out; log in again")
        if erased:
            raise InvalidToken("this member was deleted")
        return claims

    async def drive(self, token: str, *, now: datetime) -> Claims:
        """The claims of a valid, current drive token."""
        claims = self.verifier.verify(token, kind="drive", now=now)
        pv, dv, erased = await asyncio.gather(self.password_version(claims.sub),
                                              self.drive_version(claims.sub),
                                              self.erased(claims.sub))
        check_drive(claims, pv=pv, dv=dv)
        if erased:
            raise InvalidToken("this member was deleted")
        return claims

    async def erased(self, member_id: str) -> bool:
        """Whether the member deleted their account."""
        return await self.events.last_event_on(erasures(member_id)) is not None

    async def ended(self, claims: Claims) -> bool:
        """Whether the session was logged out."""
        return bool(claims.sid) and await self.events.last_event_on(
            session_end(claims.sid)) is not None

    async def password_version(self, member_id: str) -> int:
        return await self._version(password_changes(member_id), self._password)

    async def wechat_version(self, member_id: str) -> int:
        return await self._version(unbinds(member_id), self._unbound)

    async def drive_version(self, member_id: str) -> int:
        return await self._version(drive_password_changes(member_id), self._drive)

    async def _version(self, subject: str, decoder: msgspec.json.Decoder[Any]) -> int:
        """The version the newest event on ``subject`` set (older events carry none:
        then it is how many there are)."""
        last = await self.events.last_event_on(subject)
        if last is None:
            return 0
        version: int = decoder.decode(last.data).version
        return version or len(await self.events.load(subject))


def check_session(claims: Claims, *, pv: int, wv: int) -> None:
    """Refuse a session that a password change or (for one obtained through WeChat) an
    unbind has ended: the one rule, for identity's own fold and for `Sessions`."""
    if claims.pv != pv:
        raise InvalidToken("the password has changed since this token; log in again")
    if claims.via == VIA_WECHAT and claims.wv != wv:
        raise InvalidToken("WeChat was unbound since this session; log in again")


def check_drive(claims: Claims, *, pv: int, dv: int) -> None:
    """Refuse a drive token that a password or cloud-drive password change has ended."""
    if claims.pv != pv:
        raise InvalidToken("the password has changed since this token; log in again")
    if claims.dv != dv:
        raise InvalidToken("the cloud-drive password has changed since this drive token; "
                           "verify it again")


async def _zero() -> int:
    return 0
