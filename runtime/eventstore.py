"""The event log on JetStream: one stream, subject-pattern optimistic concurrency, dedup.

`append` publishes with ``Nats-Msg-Id`` (command id + index) and
``Nats-Expected-Last-Subject-Sequence`` scoped to the aggregate's subjects; `load` reads
one aggregate back with one batched direct-get round trip per 256 events.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import logging
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import TypeVar

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from contracts.base import (
    HDR_ACTOR,
    HDR_CAUSATION,
    HDR_CLIENT,
    HDR_COMMAND,
    HDR_CORRELATION,
    HDR_EVENT_TYPE,
    HDR_MSG_ID,
    HDR_PART,
    Event,
    event_type,
)
from contracts.requests import mux_of
from contracts.subjects import all_events
from runtime.personal import MARK, keyring_of
from runtime.recent import Recent

log = logging.getLogger("ledgershare.eventstore")
WRONG_LAST_SEQUENCE = 10071
FOREIGN = "foreign"  # how a parked message's reason begins (see foreign_reason)
PARKED_MAX = 1024
MIN_SERVER = (2, 11)
LOAD_BATCH = 256
T = TypeVar("T")
E = TypeVar("E")
S = TypeVar("S")


class EventStoreError(Exception):
    """The log could not be used as asked."""


class ConcurrencyConflict(EventStoreError):
    """Someone appended to the aggregate after the sequence we decided on."""

    def __init__(self, subject_filter: str, expected: int, detail: str) -> None:
        super().__init__(
            f"concurrent append to {subject_filter}: expected last {expected}, {detail}")
        self.subject_filter = subject_filter
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
    client_address: str = ""  # where the member's request came from (a gateway says)


_encoder = msgspec.json.Encoder()


class _ApiError(msgspec.Struct, frozen=True):
    code: int = 0
    err_code: int = 0
    description: str = ""


class _PubAck(msgspec.Struct, frozen=True):
    """JetStream's answer to a publish: where it landed, or why not."""

    seq: int = 0
    duplicate: bool = False
    error: _ApiError | None = None


ack_decoder = msgspec.json.Decoder(_PubAck)


class EventStore:
    """Append to and load from the ``EVENTS`` stream."""

    def __init__(self, nc: NATS, stream: str = "EVENTS", timeout: float = 5.0, *,
                 remember: int = 4096) -> None:
        self.nc = nc
        self.js = nc.jetstream(timeout=timeout)
        self.stream = stream
        self.timeout = timeout
        self.recent = Recent(remember)
        self.parked: dict[int, str] = {}  # foreign messages loads passed over: seq -> why

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

    async def append(self, subject_filter: str, events: Sequence[Outgoing], *, expected: int | None,
                     msg_id: str, meta: Meta | None = None, command: str = "") -> int:
        """Append events in order; returns the stream sequence of the last one.

        ``subject_filter`` is the aggregate's subject filter; ``expected`` its last sequence as
        loaded (0: must be empty; None: no check). A retry with the same ``msg_id`` after a
        lost reply returns the original sequence instead of appending twice. With
        ``command`` (the command pipeline's key) every event says which command and which
        part of it it is, and an append that finds its message id already stored raises
        ConcurrencyConflict: the pipeline then reads what landed rather than trusting it.
        """
        seq = expected
        for index, out in enumerate(events):
            part = f"{index + 1}/{len(events)}" if command else ""
            seq = await self._append_one(subject_filter, out, seq, f"{msg_id}:{index}",
                                         meta or Meta(),
                                         command, part)
        return seq or 0

    async def _append_one(self, subject_filter: str, out: Outgoing, expected: int | None,
                          msg_id: str, meta: Meta, command: str = "", part: str = "") -> int:
        headers = event_headers(out.event, msg_id, meta)
        if command:
            headers |= {HDR_COMMAND: command, HDR_PART: part}
        if expected is not None:
            headers["Nats-Expected-Last-Subject-Sequence"] = str(expected)
            headers["Nats-Expected-Last-Subject-Sequence-Subject"] = subject_filter
        sealed = await keyring_of(self.nc).seal(out.event) if out.event.personal else out.event
        data = _encoder.encode(sealed)
        reply = await mux_of(self.nc).request(out.subject, data, within=self.timeout,
                                              headers={**headers, "Nats-Expected-Stream":
                                                       self.stream})
        ack = ack_decoder.decode(reply.data)
        if ack.error is not None:
            self.recent.forget(subject_filter)
            if ack.error.err_code != WRONG_LAST_SEQUENCE or expected is None:
                raise EventStoreError(f"append refused: {ack.error.description} "
                                      f"({ack.error.err_code})")
            if command:
                raise ConcurrencyConflict(subject_filter, expected, ack.error.description)
            return await self._landed_or_conflict(subject_filter, expected, msg_id,
                                                  ack.error.description)
        # Remembered as a load would read it back: opened.
        stored = StoredEvent(seq=ack.seq, subject=out.subject, type=event_type(out.event),
                             data=data if sealed is out.event else _encoder.encode(out.event),
                             headers=headers)
        if expected is None or ack.duplicate:
            self.recent.forget(subject_filter)  # what else is in the aggregate is not known here
            if command and ack.duplicate:
                raise ConcurrencyConflict(subject_filter, expected or 0, "already appended")
        else:
            self.recent.appended(subject_filter, expected, stored)
        return stored.seq

    async def _landed_or_conflict(self, subject_filter: str, expected: int, msg_id: str,
                                  detail: str) -> int:
        # The server checks the expected sequence before dedup, so a retry of an append
        # that did land (reply lost) looks like a conflict: look for our own message id.
        for stored in await self.load(subject_filter, after=expected):
            if stored.msg_id == msg_id:
                return stored.seq
        raise ConcurrencyConflict(subject_filter, expected, detail)

    async def appended_by(self, subject_filter: str, command: str) -> list[StoredEvent]:
        """The events of ``subject_filter`` that one command (its pipeline key) appended."""
        return [e for e in await self.load(subject_filter) if e.headers.get(HDR_COMMAND) == command]

    async def history(self, subject_filter: str,
                      decoder: msgspec.json.Decoder[E]) -> tuple[list[E], int]:
        """One aggregate's events, decoded, and its last sequence (0 when it has none)."""
        stored = await self.messages(subject_filter)
        return ([decoder.decode(e.data) for e in self._events_only(stored)],
                stored[-1].seq if stored else 0)

    async def state(self, subject_filter: str, decoder: msgspec.json.Decoder[E],
                    evolve: Callable[[S, E], S], initial: S) -> tuple[S, int]:
        """One aggregate's state (``evolve`` folded over its events from ``initial``) and
        its last sequence. A remembered aggregate's state is kept, so only the events
        after it are decoded and folded: a long history costs once, not per command.
        ``evolve`` must not change the state it is given."""
        events = await self.messages(subject_filter)  # the last one counts, foreign or not (OCC)
        last = events[-1].seq if events else 0
        kept = self.recent.fold(subject_filter, evolve)
        state, start = initial, 0
        if kept is not None and kept[0] <= last:
            start = bisect.bisect_right(events, kept[0], key=lambda e: e.seq)
            state = kept[1]
        for stored in self._events_only(events[start:]):
            state = evolve(state, decoder.decode(stored.data))
        self.recent.keep_fold(subject_filter, evolve, last, state)
        return state, last

    async def expected_last(self, subject_filter: str) -> int:
        """The aggregate's last sequence for an append that decides without its state
        (its decision holds whatever came before): the remembered one when there is one,
        else the log's. A stale one only makes the append fail its OCC check, which drops
        it, so the retry asks the log."""
        known = self.recent.last(subject_filter)
        if known is None:
            known = await self._last_seq(subject_filter)
            self.recent.note_last(subject_filter, known)
        return known

    async def load(self, subject_filter: str, *, after: int = 0) -> list[StoredEvent]:
        """Every event matching ``subject_filter`` with sequence > ``after``, in log order; a
        message there that no append wrote is left out and parked (see `messages`)."""
        return self._events_only(await self.messages(subject_filter, after=after))

    def _events_only(self, messages: list[StoredEvent]) -> list[StoredEvent]:
        # deny_delete keeps a foreign message in the log for good: were it folded, or
        # failed on, its aggregate would be broken for good. So it is passed over, and
        # reported once per store.
        events = [m for m in messages if foreign_reason(m.headers, m.subject) is None]
        if len(events) < len(messages):
            for m in messages:
                reason = foreign_reason(m.headers, m.subject)
                if reason is not None and m.seq not in self.parked:
                    self._park(m, reason)
        return events

    def _park(self, message: StoredEvent, reason: str) -> None:
        log.warning("passing over message %d on %s: %s", message.seq, message.subject, reason,
                    extra={"stream_seq": message.seq, "subject": message.subject})
        if len(self.parked) < PARKED_MAX:
            self.parked[message.seq] = reason

    async def messages(self, subject_filter: str, *, after: int = 0) -> list[StoredEvent]:
        """Every message matching ``subject_filter`` with sequence > ``after``, in log order,
        foreign ones included: the server counts them in an append's expected sequence.

        An aggregate loaded or appended to lately is remembered: one cheap question (the
        filter's last sequence) tells whether the copy is current, and only newer events
        are read. The answer is as fresh as without the copy."""
        wildcard = after == 0 and _is_wildcard(subject_filter)
        known = self.recent.get(subject_filter) if wildcard else None
        if known is None:
            events = await self._read(subject_filter, after)
            if after == 0 and _is_wildcard(subject_filter):
                self.recent.put(subject_filter, events)
            return events
        last_known = known[-1].seq if known else 0
        if await self._last_seq(subject_filter) != last_known:
            known = [*known, *await self._read(subject_filter, last_known)]
            self.recent.put(subject_filter, known)
        return list(known)

    async def _last_seq(self, subject_filter: str) -> int:
        newest = await self.last_on(subject_filter)
        return newest.seq if newest is not None else 0

    async def _read(self, subject_filter: str, after: int) -> list[StoredEvent]:
        """Every event matching ``subject_filter`` after ``after``, from the server.

        nats-server 2.15 walks the whole stream after the last match of a wildcard
        ``next_by_subj`` (~400 loads/s at 100k events, falling as the log grows), but
        finds a literal subject through its index. So a wildcard filter is first resolved
        to the literal subjects it has (one ``multi_last``), and those are read at once."""
        if not _is_wildcard(subject_filter):
            return await self._scan(subject_filter, after)
        try:
            newest = await self._direct({"multi_last": [subject_filter], "batch": LOAD_BATCH})
        except EventStoreError:
            newest = None  # e.g. 413: more subjects than the server lists at once
        if newest is None or len(newest) >= LOAD_BATCH:
            return await self._scan(subject_filter, after)
        # The snapshot is the log up to the newest of those lasts: an event appended
        # since, maybe on a subject the listing missed, is left out (an append on this
        # state then fails its expected-sequence check) rather than read in part.
        cut = max((e.seq for e in newest), default=0)
        found = await asyncio.gather(*(self._scan(e.subject, after) for e in newest
                                       if e.seq > after))
        return sorted((e for events in found for e in events if e.seq <= cut),
                      key=lambda e: e.seq)

    async def _scan(self, subject: str, after: int) -> list[StoredEvent]:
        events: list[StoredEvent] = []
        while True:
            batch = await self._direct({"seq": after + 1, "next_by_subj": subject,
                                        "batch": LOAD_BATCH})
            events.extend(batch)
            if len(batch) < LOAD_BATCH:
                return events
            after = batch[-1].seq

    async def _direct(self, request: dict[str, object]) -> list[StoredEvent]:
        """One batched direct get: the messages until its end-of-batch status."""
        batch = _Batch()
        await mux_of(self.nc).exchange(f"$JS.API.DIRECT.GET.{self.stream}",
                                       json.dumps(request).encode(), batch.take,
                                       within=self.timeout)
        return await opened(self.nc, batch.events)

    async def last_on(self, subject: str) -> StoredEvent | None:
        """The newest event on one subject (a direct get), or None."""
        reply = await mux_of(self.nc).request(f"$JS.API.DIRECT.GET.{self.stream}",
                                              json.dumps({"last_by_subj": subject}).encode(),
                                              within=self.timeout)
        headers = {str(k): v for k, v in (reply.headers or {}).items()}
        if headers.get("Status"):
            return None
        return _stored(headers, reply.data)

    async def last_event_on(self, subject: str) -> StoredEvent | None:
        """The newest event on one literal subject, passing over foreign messages (one
        direct get; a read of the subject only when the newest message is foreign)."""
        newest = await self.last_on(subject)
        if newest is None or foreign_reason(newest.headers, newest.subject) is None:
            return newest
        events = await self.load(subject)
        return events[-1] if events else None

    async def last_sequence(self) -> int:
        """The stream's last sequence (the newest consistency token that exists)."""
        info = await self.js.stream_info(self.stream)
        return int(info.state.last_seq)


async def opened(nc: NATS, events: list[StoredEvent]) -> list[StoredEvent]:
    """``events`` with their sealed personal fields opened (runtime/personal.py)."""
    ring = keyring_of(nc)
    return [msgspec.structs.replace(e, data=await ring.open(e.data)) if MARK in e.data else e
            for e in events]


def _is_wildcard(subject: str) -> bool:
    return any(t in ("*", ">") for t in subject.split("."))


class _Batch:
    """The replies of one batched direct get, complete at its 204/404 status."""

    def __init__(self) -> None:
        self.events: list[StoredEvent] = []

    def take(self, msg: Msg) -> bool:
        headers: dict[str, str] = {str(k): v for k, v in (msg.headers or {}).items()}
        status = headers.get("Status")
        if status in ("204", "404"):
            return True
        if status is not None:
            raise EventStoreError(f"direct get failed: {status} {headers}")
        self.events.append(_stored(headers, msg.data))
        return False


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


def foreign_reason(headers: Mapping[str, str], subject: str) -> str | None:
    """Why a message in the log is not an event `append` wrote (None when it is one).
    Every append names the event's type in a header, and it is the subject's last token:
    a reply aimed at ``evt.>`` or a raw publish has no such header, or another type."""
    kind = headers.get(HDR_EVENT_TYPE)
    if kind is None:
        return f"{FOREIGN}: no {HDR_EVENT_TYPE} header (not written by an append)"
    if kind != subject.rsplit(".", 1)[-1]:
        return f"{FOREIGN}: {HDR_EVENT_TYPE} {kind[:64]!r} is not the subject's event type"
    return None


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
                        (HDR_CAUSATION, meta.causation_id), (HDR_ACTOR, meta.actor),
                        (HDR_CLIENT, meta.client_address)):
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
