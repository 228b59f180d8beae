"""The event log on JetStream: one stream, subject-pattern optimistic concurrency, dedup.

`append` publishes with ``Nats-Msg-Id`` (command id + index) and
``Nats-Expected-Last-Subject-Sequence`` scoped to the aggregate's subjects; `load` reads
one aggregate back with one batched direct-get round trip per 256 events.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import TypeVar

import msgspec
from nats.aio.client import Client as NATS
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import APIError, NotFoundError

from contracts.base import (
    HDR_ACTOR,
    HDR_CAUSATION,
    HDR_CORRELATION,
    HDR_EVENT_TYPE,
    HDR_MSG_ID,
    Event,
    event_type,
)
from contracts.subjects import all_events

WRONG_LAST_SEQUENCE = 10071
MIN_SERVER = (2, 11)
LOAD_BATCH = 256
T = TypeVar("T")
E = TypeVar("E")


class EventStoreError(Exception):
    """The log could not be used as asked."""


class ConcurrencyConflict(EventStoreError):
    """Someone appended to the aggregate after the sequence we decided on."""

    def __init__(self, scope: str, expected: int, detail: str) -> None:
        super().__init__(f"concurrent append to {scope}: expected last {expected}, {detail}")
        self.scope = scope
        self.expected = expected


class StoredEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One event as read back from the log."""

    seq: int
    subject: str
    type: str
    data: bytes
    headers: dict[str, str]
    time: datetime | None = None

    @property
    def msg_id(self) -> str:
        return self.headers.get(HDR_MSG_ID, "")


class Outgoing(msgspec.Struct, frozen=True, kw_only=True):
    """One event to append: where it goes and what it says."""

    subject: str
    event: Event


class Meta(msgspec.Struct, frozen=True, kw_only=True):
    """Who and what caused an append (copied into every event's headers)."""

    correlation_id: str = ""
    causation_id: str = ""
    actor: str = ""


_encoder = msgspec.json.Encoder()


class EventStore:
    """Append to and load from the ``EVENTS`` stream."""

    def __init__(self, nc: NATS, stream: str = "EVENTS", timeout: float = 5.0) -> None:
        self.nc = nc
        self.js = nc.jetstream(timeout=timeout)
        self.stream = stream
        self.timeout = timeout

    async def ensure_stream(self, *, replicas: int = 1, duplicate_window_s: float = 120) -> None:
        """Create the stream with the design's settings, or verify an existing one."""
        check_server_version(self.nc.connected_server_version.major,
                             self.nc.connected_server_version.minor)
        wanted = stream_config(self.stream, replicas, duplicate_window_s)
        try:
            info = await self.js.stream_info(self.stream)
        except NotFoundError:
            await self.js.add_stream(wanted)
            return
        verify_stream(info.config, wanted)

    async def append(self, scope: str, events: Sequence[Outgoing], *, expected: int | None,
                     msg_id: str, meta: Meta | None = None) -> int:
        """Append events in order; returns the stream sequence of the last one.

        ``scope`` is the aggregate's subject filter; ``expected`` its last sequence as
        loaded (0: must be empty; None: no check). A retry with the same ``msg_id`` after a
        lost reply returns the original sequence instead of appending twice.
        """
        seq = expected
        for index, out in enumerate(events):
            seq = await self._append_one(scope, out, seq, f"{msg_id}:{index}", meta or Meta())
        return seq or 0

    async def _append_one(self, scope: str, out: Outgoing, expected: int | None,
                          msg_id: str, meta: Meta) -> int:
        headers = event_headers(out.event, msg_id, meta)
        if expected is not None:
            headers["Nats-Expected-Last-Subject-Sequence"] = str(expected)
            headers["Nats-Expected-Last-Subject-Sequence-Subject"] = scope
        try:
            ack = await self.js.publish(out.subject, _encoder.encode(out.event),
                                        stream=self.stream, headers=headers)
        except APIError as err:
            if err.err_code != WRONG_LAST_SEQUENCE or expected is None:
                raise
            return await self._landed_or_conflict(scope, expected, msg_id, str(err.description))
        return int(ack.seq)

    async def _landed_or_conflict(self, scope: str, expected: int, msg_id: str,
                                  detail: str) -> int:
        # The server checks the expected sequence before dedup, so a retry of an append
        # that did land (reply lost) looks like a conflict: look for our own message id.
        for stored in await self.load(scope, after=expected):
            if stored.msg_id == msg_id:
                return stored.seq
        raise ConcurrencyConflict(scope, expected, detail)

    async def history(self, scope: str, decoder: msgspec.json.Decoder[E]) -> tuple[list[E], int]:
        """One aggregate's events, decoded, and its last sequence (0 when it has none)."""
        stored = await self.load(scope)
        return [decoder.decode(e.data) for e in stored], (stored[-1].seq if stored else 0)

    async def load(self, scope: str, *, after: int = 0) -> list[StoredEvent]:
        """Every event matching ``scope`` with sequence > ``after``, in log order."""
        events: list[StoredEvent] = []
        while True:
            batch = await self._direct_batch(scope, after + 1)
            events.extend(batch)
            if len(batch) < LOAD_BATCH:
                return events
            after = batch[-1].seq

    async def _direct_batch(self, scope: str, start: int) -> list[StoredEvent]:
        inbox = self.nc.new_inbox()
        sub = await self.nc.subscribe(inbox)
        try:
            request = {"seq": start, "next_by_subj": scope, "batch": LOAD_BATCH}
            await self.nc.publish(f"$JS.API.DIRECT.GET.{self.stream}",
                                  json.dumps(request).encode(), reply=inbox)
            return await _collect(sub, self.timeout)
        finally:
            await sub.unsubscribe()

    async def last_on(self, subject: str) -> StoredEvent | None:
        """The newest event on one subject (a direct get), or None."""
        reply = await self.nc.request(f"$JS.API.DIRECT.GET.{self.stream}",
                                      json.dumps({"last_by_subj": subject}).encode(),
                                      timeout=self.timeout)
        headers = {str(k): v for k, v in (reply.headers or {}).items()}
        if headers.get("Status"):
            return None
        return _stored(headers, reply.data)

    async def last_sequence(self) -> int:
        """The stream's last sequence (the newest consistency token that exists)."""
        info = await self.js.stream_info(self.stream)
        return int(info.state.last_seq)


async def _collect(sub: object, limit_s: float) -> list[StoredEvent]:
    events: list[StoredEvent] = []
    while True:
        msg = await sub.next_msg(timeout=limit_s)  # type: ignore[attr-defined]
        headers: dict[str, str] = {str(k): v for k, v in (msg.headers or {}).items()}
        status = headers.get("Status")
        if status in ("204", "404"):
            return events
        if status is not None:
            raise EventStoreError(f"direct get failed: {status} {headers}")
        events.append(_stored(headers, msg.data))


def _stored(headers: dict[str, str], data: bytes) -> StoredEvent:
    subject = headers["Nats-Subject"]
    return StoredEvent(
        seq=int(headers["Nats-Sequence"]),
        subject=subject,
        type=headers.get(HDR_EVENT_TYPE, subject.rsplit(".", 1)[-1]),
        data=data,
        headers=headers,
        time=_parse_time(headers.get("Nats-Time-Stamp")),
    )


def _parse_time(raw: str | None) -> datetime | None:
    if not raw:
        return None
    # Go prints nanoseconds; Python parses up to microseconds.
    head, _, frac = raw.rstrip("Z").partition(".")
    return datetime.fromisoformat(f"{head}.{(frac + '000000')[:6]}+00:00")


def event_headers(event: Event, msg_id: str, meta: Meta) -> dict[str, str]:
    """The headers every appended event carries."""
    headers = {HDR_MSG_ID: msg_id, HDR_EVENT_TYPE: event_type(event)}
    for name, value in ((HDR_CORRELATION, meta.correlation_id),
                        (HDR_CAUSATION, meta.causation_id), (HDR_ACTOR, meta.actor)):
        if value:
            headers[name] = value
    return headers


def stream_config(name: str, replicas: int, duplicate_window_s: float) -> StreamConfig:
    """The design's settings for the event log."""
    return StreamConfig(
        name=name,
        subjects=[all_events()],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        discard=DiscardPolicy.NEW,
        max_age=0,
        num_replicas=replicas,
        duplicate_window=duplicate_window_s,
        deny_delete=True,
        deny_purge=True,
        allow_direct=True,
    )


def verify_stream(actual: StreamConfig, wanted: StreamConfig) -> None:
    """Refuse to run on a stream whose settings would break the log's guarantees."""
    problems = [
        f"{field}={getattr(actual, field)!r} (want {getattr(wanted, field)!r})"
        for field in ("subjects", "storage", "deny_delete", "deny_purge", "allow_direct")
        if getattr(actual, field) != getattr(wanted, field)
    ]
    if (actual.duplicate_window or 0) < 120:
        problems.append(f"duplicate_window={actual.duplicate_window}s (want >= 120s)")
    if actual.max_age:
        problems.append(f"max_age={actual.max_age} (want no age limit)")
    if problems:
        raise EventStoreError(f"stream {actual.name} is misconfigured: " + "; ".join(problems))


def check_server_version(major: int, minor: int) -> None:
    """Subject-pattern OCC needs nats-server >= 2.11."""
    if (major, minor) < MIN_SERVER:
        raise EventStoreError(
            f"nats-server {major}.{minor} is too old: ledgershare needs >= 2.11 "
            "(Nats-Expected-Last-Subject-Sequence-Subject)"
        )


async def with_retry(attempt: Callable[[], Awaitable[T]], *, attempts: int = 10,
                     base_delay: float = 0.002) -> T:
    """Run load-decide-append again on ConcurrencyConflict, a bounded number of times."""
    for n in range(attempts - 1):
        try:
            return await attempt()
        except ConcurrencyConflict:
            await asyncio.sleep(base_delay * (2**n) * random.random())
    return await attempt()
