"""Personal data in the log, sealed with one key per member, so erasure can shred it.

The log is append-only (and its copies outlive any delete), so a member's personal data
(account, nickname, openid, the remarks and set names they wrote) is written into events
encrypted with a key of that member's own, kept outside the log in the ``PERSONAL``
key-value bucket. Erasing the member destroys the key: every copy of the log still
decodes, every read model still rebuilds, and the fields read as "" from then on.

An event type names its personal fields and whose they are (`Event.personal`); the event
store seals them on append and opens them on load, the projector before a projection
sees an event. A sealed field is ``ls1.<owner>.<base64url(nonce | AES-256-GCM)>``; the
owner and the field name are the cipher's associated data, so a sealed value moved to
another member or field does not open.
"""

from __future__ import annotations

import base64
import os
import time
import weakref

import msgspec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from nats.aio.client import Client as NATS
from nats.js.api import DiscardPolicy, StorageType, StreamConfig
from nats.js.errors import (
    APIError,
    BucketNotFoundError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
)
from nats.js.errors import NotFoundError as JsNotFound
from nats.js.kv import KeyValue

from contracts.base import Event

BUCKET = "PERSONAL"
STREAM = f"KV_{BUCKET}"
PREFIX = "ls1."
MARK = b'"' + PREFIX.encode()
ERASED = ""  # what a field sealed with a destroyed key reads as
# A key another process destroyed is forgotten here within this time: a long fold or a
# replay does not fetch the same key for every event.
KEY_TTL_S = 5.0
_NONCE = 12
NO_SUCH_MESSAGE = 10043  # JetStream: "sequence not found" (deleted already)
DELETE_FAILED = 10057  # JetStream: a delete failed ("no message found", "not permitted")


class _Erased:
    """The cache's mark of a member whose key was destroyed (for good)."""


_GONE = _Erased()
_json = msgspec.json.Encoder()


class Keyring:
    """Members' data keys: made on first use, cached briefly, destroyed on erasure."""

    def __init__(self, nc: NATS, *, replicas: int = 1) -> None:
        self.js = nc.jetstream()
        self.replicas = replicas
        self._kv: KeyValue | None = None
        self._keys: dict[str, tuple[AESGCM | _Erased, float]] = {}

    # ---- sealing and opening ----------------------------------------------------------

    async def seal(self, event: Event, *, keep_sealed: bool = False) -> Event:
        """``event`` with its personal fields sealed with their owners' keys (an erased
        owner's fields are written as "": nothing personal of theirs enters the log).
        ``keep_sealed`` (copying an older log) leaves a field already sealed for its owner,
        and one without an owner, as it is; an append seals whatever a member typed."""
        changes: dict[str, str] = {}
        for field, owner_field in type(event).personal:
            value, owner = getattr(event, field), getattr(event, owner_field)
            if not isinstance(value, str) or not value:
                continue
            if keep_sealed and (not owner or value.startswith(f"{PREFIX}{owner}.")):
                continue
            changes[field] = await self.seal_text(owner, field, value)
        return msgspec.structs.replace(event, **changes) if changes else event

    async def seal_text(self, owner: str, field: str, text: str) -> str:
        """``text`` (``owner``'s ``field``) sealed."""
        key = await self._key(owner, make=True)
        if key is None:  # made, yet not found: never write the text in the clear
            raise RuntimeError(f"no data key for member {owner} could be made")
        if isinstance(key, _Erased):
            return ERASED
        nonce = os.urandom(_NONCE)
        box = key.encrypt(nonce, text.encode(), _aad(owner, field))
        return f"{PREFIX}{owner}.{base64.urlsafe_b64encode(nonce + box).decode()}"

    async def open(self, data: bytes) -> bytes:
        """An event's JSON with its sealed fields opened ("" where the key is gone)."""
        if MARK not in data:
            return data
        doc = msgspec.json.decode(data)
        if not isinstance(doc, dict):
            return data
        for field, value in doc.items():
            if isinstance(value, str) and value.startswith(PREFIX):
                doc[field] = await self.open_text(field, value)
        return _json.encode(doc)

    async def open_text(self, field: str, sealed: str) -> str:
        """One sealed value, opened; "" when its owner's key was destroyed or it does not
        open (tampered with, or sealed for another field)."""
        owner, _, blob = sealed[len(PREFIX):].partition(".")
        key = await self._key(owner, make=False)
        if key is None or isinstance(key, _Erased):
            return ERASED
        try:
            raw = base64.urlsafe_b64decode(blob)
            return key.decrypt(raw[:_NONCE], raw[_NONCE:], _aad(owner, field)).decode()
        except Exception:
            return ERASED

    # ---- keys -------------------------------------------------------------------------

    async def shred(self, owner: str) -> None:
        """Destroy ``owner``'s key for good: its message is erased from the bucket's
        stream (overwritten, not just unlinked), then a purge marker records the erasure,
        so the key is never made again. Repeating it is harmless."""
        kv = await self._bucket()
        try:
            entry = await kv.get(owner)
        except KeyNotFoundError:
            entry = None
        if entry is not None and entry.revision is not None:
            try:
                await self.js.delete_msg(STREAM, entry.revision)
            except (JsNotFound, APIError) as gone:
                if not _already_gone(gone):
                    raise
        await kv.purge(owner)
        self._keys[owner] = (_GONE, float("inf"))

    async def _key(self, owner: str, *, make: bool) -> AESGCM | _Erased | None:
        cached = self._keys.get(owner)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        key = await self._fetch(owner)
        if key is None and make:
            key = await self._make(owner)
        if key is not None:
            forever = isinstance(key, _Erased)
            self._keys[owner] = (key, float("inf") if forever else time.monotonic() + KEY_TTL_S)
        return key

    async def _fetch(self, owner: str) -> AESGCM | _Erased | None:
        kv = await self._bucket()
        try:
            entry = await kv.get(owner)
        except KeyNotFoundError as gone:
            return _GONE if gone.op is not None else None  # a purge/delete marker: erased
        return AESGCM(base64.b64decode(entry.value or b""))

    async def _make(self, owner: str) -> AESGCM | _Erased | None:
        """A new key, unless one appeared meanwhile or the member was erased: ``update``
        with last 0 fails on any message under the key, a purge marker included (``create``
        would write over a marker, bringing an erased member's key back)."""
        kv = await self._bucket()
        try:
            await kv.update(owner, base64.b64encode(AESGCM.generate_key(bit_length=256)),
                            last=0)
        except KeyWrongLastSequenceError:
            pass
        return await self._fetch(owner)

    async def ensure(self) -> None:
        """Create the bucket if there is none (first start)."""
        await self._bucket()

    async def _bucket(self) -> KeyValue:
        if self._kv is None:
            try:
                self._kv = await self.js.key_value(BUCKET)
            except BucketNotFoundError:
                await self.js.add_stream(bucket_stream(self.replicas))
                self._kv = await self.js.key_value(BUCKET)
        return self._kv


def bucket_stream(replicas: int = 1) -> StreamConfig:
    """The ``PERSONAL`` bucket's stream: a key-value bucket (one value per member, on
    disk) as nats-py makes one, except that a message may be deleted: the erase of a
    destroyed key (``create_key_value`` denies deletes)."""
    return StreamConfig(
        name=STREAM, description="members' data keys (erasure destroys them)",
        subjects=[f"$KV.{BUCKET}.>"], allow_direct=True, allow_rollup_hdrs=True,
        deny_delete=False, discard=DiscardPolicy.NEW, duplicate_window=120.0,
        max_msgs_per_subject=1, max_consumers=-1, max_msgs=-1, num_replicas=replicas,
        storage=StorageType.FILE)


def _already_gone(err: APIError) -> bool:
    """Whether a message delete failed because a twin (the erasure policy, the erasing
    command) deleted it first: nats-server says so in more than one way."""
    if isinstance(err, JsNotFound) or err.err_code == NO_SUCH_MESSAGE:
        return True
    return err.err_code == DELETE_FAILED and "no message found" in (err.description or "")


def _aad(owner: str, field: str) -> bytes:
    return f"{owner}/{field}".encode()


_rings: weakref.WeakKeyDictionary[NATS, Keyring] = weakref.WeakKeyDictionary()


def keyring_of(nc: NATS) -> Keyring:
    """The connection's keyring (made on first use), shared by its event store and
    projectors so a key is fetched once per connection."""
    ring = _rings.get(nc)
    if ring is None:
        ring = _rings[nc] = Keyring(nc)
    return ring
