"""Projector: a durable pull consumer that keeps a PostgreSQL read model in step with the log.

Each fetched batch is applied in one transaction together with the checkpoint
``(projection, last_seq)``; events at or below the checkpoint are skipped; the batch is
acknowledged only after commit. An event that cannot be decoded or applied is parked in
``dead_letters`` with the reason, and the rest go on; so is, never applied, a message that
no append wrote (a foreign one: see `runtime.eventstore.foreign_reason`). One instance per
projection works at a time (a PostgreSQL advisory lock); others stand by and take over if
it dies.

A checkpoint counts in one stream: the stream's creation time is kept with it, so a read
model built from another stream (a new NATS server, a re-created stream) refuses to answer
instead of answering from the wrong history. A leader stops leading the moment its lock's
connection is gone (a PostgreSQL restart ends the lock with the session), and a cursor that
someone else also pulls from is noticed by the gaps in its delivery sequence: either would
otherwise split the events between two instances, each applying only its share.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

import asyncpg
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from contracts.base import HDR_EVENT_TYPE
from contracts.requests import mux_of
from runtime.coalesce import Coalesced
from runtime.eventstore import StoredEvent, foreign_reason, opened
from runtime.puller import Puller
from runtime.subjects import covering, subject_matcher

log = logging.getLogger("ledgershare.projector")
ASK_EVERY_S = 0.2
ANALYZE_EVERY = 2000  # events applied, at least, between two ANALYZEs of the schema


class Redeliver(Exception):
    """Raised by a projection for an event it must apply later, never park (a policy whose
    command met a timeout): the batch is given up and comes back from the checkpoint."""


TRANSIENT: tuple[type[BaseException], ...] = (
    Redeliver,
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.SerializationError,
    asyncpg.DeadlockDetectedError,
)


class Projection(Protocol):
    """What a service gives the projector: its tables and how one event changes them."""

    name: str
    subjects: Sequence[str]

    async def setup(self, conn: asyncpg.Connection, schema: str) -> None:
        """Create the read-model tables in ``schema`` if missing."""

    async def apply(self, conn: asyncpg.Connection, schema: str, event: StoredEvent) -> None:
        """Apply one event; raise to have it dead-lettered (`Redeliver`: applied again)."""


@runtime_checkable
class BatchProjection(Projection, Protocol):
    """A projection that applies a whole batch at once (set-based SQL); it must leave the
    tables as applying each event in turn would. `prepare` is pure and runs while the
    batch before is still being written."""

    def prepare(self, events: list[StoredEvent]) -> Any:
        """Decode and collect the events (raise to have them applied one by one)."""

    async def apply_prepared(self, conn: asyncpg.Connection, schema: str,
                             prepared: Any) -> None:
        """Write what `prepare` collected (raise to have the events applied one by one)."""


class Batch:
    """Messages of one pull, as the projector hands them to a projection."""

    def __init__(self, *, events: list[StoredEvent], last: Msg, through: int,
                 foreign: list[StoredEvent] | None = None) -> None:
        self.events = events  # the ones this projection wants
        self.foreign = foreign or []  # on its subjects, but not appended: parked
        self.last = last  # acknowledged (AckAll) once the batch is committed
        self.through = through  # the checkpoint after this batch
        self.prepared: Any = None


class Mirror(Protocol):
    """An in-memory copy of part of a read model, kept in step by the leading projector:
    loaded from the tables when it takes the lead, then fed every committed batch."""

    async def reload(self, conn: asyncpg.Connection, schema: str) -> None:
        """Load from the tables (the projector holds the lead, so nothing else writes)."""

    def applied(self, events: list[StoredEvent]) -> None:
        """Follow one committed batch (events the projection could not apply included)."""


class CursorMoved(Exception):
    """The checkpoint is not where this projector's cursor is; it must lead again."""


class ProjectionLag(Exception):
    """The projection did not reach a consistency token in time."""


class StaleReadModel(ProjectionLag):
    """The read model's checkpoint counts in another stream than the one the log is now (a
    new NATS server or a re-created stream): it answers nothing until it is rebuilt."""


async def setup_bookkeeping(conn: asyncpg.Connection, schema: str) -> None:
    """The checkpoint and dead-letter tables every projection schema has."""
    await conn.execute(f"""
        CREATE SCHEMA IF NOT EXISTS {schema};
        CREATE TABLE IF NOT EXISTS {schema}.checkpoints (
            projection text PRIMARY KEY, last_seq bigint NOT NULL DEFAULT 0,
            stream_created timestamptz);
        -- The creation time of the stream last_seq counts in (NULL: not known yet).
        ALTER TABLE {schema}.checkpoints ADD COLUMN IF NOT EXISTS stream_created timestamptz;
        CREATE TABLE IF NOT EXISTS {schema}.dead_letters (
            projection text NOT NULL, stream_seq bigint NOT NULL, subject text NOT NULL,
            event_type text NOT NULL, reason text NOT NULL, payload bytea NOT NULL,
            parked_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (projection, stream_seq));
    """)


class Projector:
    """Runs one projection into one schema from one durable consumer."""

    def __init__(self, nc: NATS, pool: asyncpg.Pool, projection: Projection, *,
                 schema: str, stream: str = "EVENTS", consumer: str | None = None,
                 batch: int = 256, mirror: Mirror | None = None) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.pool = pool
        self.projection = projection
        self.schema = schema
        self.stream = stream
        self.consumer = consumer or f"proj_{schema}_{projection.name}"
        self.batch = batch
        self.position = 0
        self._clear_to = 0
        self._asked_at = 0.0
        self._since_analyze = 0
        self._analyzed_at = 0  # the position when the tables were last analysed
        self._analyzing: asyncio.Task[None] | None = None
        self._advanced = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.active = False
        self._leading = asyncio.Event()
        self.mirror = mirror
        # One filter on the consumer even when the projection names several: nats-server
        # 2.15 serves a multi-filter consumer over a stream of many subjects at ~1k msg/s
        # (one CPU busy), a single wildcard at the stream's pace; the rest is skipped here.
        self.filter = covering(projection.subjects)
        self.exact = list(projection.subjects) == [self.filter]
        self._wanted = subject_matcher(projection.subjects)
        self._batched = projection if isinstance(projection, BatchProjection) else None
        self._caught_up = Coalesced(self._ask_caught_up)
        self.refused = ""  # why the read model must not answer now ("" when it may)
        self._stream_created: datetime | None = None  # of the stream positions count in
        self._reconnects = 0  # NATS reconnections when _stream_created was learnt
        self._next_delivery = 1  # the consumer sequence the cursor delivers next

    async def start(self) -> None:
        """Create tables and consumer, then run in the background."""
        async with self.pool.acquire() as conn, conn.transaction():
            # CREATE ... IF NOT EXISTS is not safe against a twin doing the same at the
            # same moment (instances started together on a new database): one at a time.
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))",
                               f"setup:{self.schema}")
            await setup_bookkeeping(conn, self.schema)
            await self.projection.setup(conn, self.schema)
            await conn.execute(
                f"INSERT INTO {self.schema}.checkpoints (projection) VALUES ($1) "
                "ON CONFLICT DO NOTHING", self.projection.name)
        # The position is learnt on the first question, once the stream it counts in is
        # known to be the one the checkpoint was written for.
        self._task = asyncio.create_task(self._run(), name=f"projector:{self.consumer}")

    async def _reset_consumer(self, checkpoint: int) -> None:
        # The checkpoint in PostgreSQL is the truth; the consumer is only a cursor. A new
        # leader restarts it right after the checkpoint, so events arrive strictly in
        # order: messages a dead leader fetched but never committed are redelivered first,
        # not after newer ones (which would let the checkpoint jump past them).
        with contextlib.suppress(NotFoundError):
            await self.js.delete_consumer(self.stream, self.consumer)
        await self.js.add_consumer(self.stream, ConsumerConfig(
            durable_name=self.consumer,
            filter_subject=self.filter,
            ack_policy=AckPolicy.ALL,
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=checkpoint + 1,
            ack_wait=300,
            max_ack_pending=self.batch * 4,
        ))
        self._next_delivery = 1

    async def stop(self) -> None:
        """Finish the batch in hand, then stop (the durable consumer stays)."""
        self._stopping.set()
        if self._task is not None:
            await self._task
        if self._analyzing is not None:
            self._analyzing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._analyzing

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self._lead()
            except StaleReadModel as err:
                log.error("projector %s refuses to serve: %s", self.consumer, err,
                          extra={"projector": self.consumer})
                await self._sleep(2.0)
            except Exception as err:
                # Nothing unacknowledged is lost: the next leadership restarts the cursor
                # from the committed checkpoint.
                log.warning("projector %s: %r; retrying", self.consumer, err)
                await self._sleep(0.5)

    async def _lead(self) -> None:
        async with self.pool.acquire() as lock_conn:
            if not await lock_conn.fetchval("SELECT pg_try_advisory_lock(hashtext($1))",
                                            f"{self.schema}.{self.projection.name}"):
                await self._sleep(1.0)
                return
            try:
                started = time.monotonic()
                async with self.pool.acquire() as conn:
                    self.position = await self._own_stream(conn)
                    self._analyzed_at = self.position
                    if self.mirror is not None:
                        await self.mirror.reload(conn, self.schema)
                log.info("projector %s leads from sequence %d (ready in %.1f s)",
                         self.consumer, self.position, time.monotonic() - started,
                         extra={"projector": self.consumer, "position": self.position})
                self.active = True
                self._leading.set()
                self._clear_to = 0  # proven only relative to the old position
                await self._reset_consumer(self.position)
                await self._consume(lock_conn, self._stream_created)
            finally:
                self.active = False
                self._leading.clear()
                with contextlib.suppress(*TRANSIENT):
                    await lock_conn.execute("SELECT pg_advisory_unlock_all()")

    async def _own_stream(self, conn: asyncpg.Connection) -> int:
        """The checkpoint, once it is known to count in the stream as it is now; a
        checkpoint of no known stream is adopted if the stream reaches it."""
        created, end = await self._stream_now()
        last, built_from = await self._checkpoint_row(conn)
        if built_from is None and last <= end:
            await conn.execute(f"UPDATE {self.schema}.checkpoints SET stream_created = $2 "
                               "WHERE projection = $1", self.projection.name, created)
        elif built_from != created:
            self.refused = self._foreign(built_from, last, end)
            raise StaleReadModel(self.refused)
        self.refused = ""
        return last

    def _foreign(self, built_from: datetime | None, last: int, end: int | None = None) -> str:
        then = f"created {built_from}" if built_from else "of unknown creation time"
        now = f"created {self._stream_created}" + (f", last sequence {end}" if end else "")
        return (f"{self.schema} was built up to sequence {last} from a stream {self.stream} "
                f"{then}, not from the one there is now ({now}); rebuild it from the log "
                "(ledgershare replay <service> --swap)")

    async def _checkpoint_row(self, conn: asyncpg.Connection) -> tuple[int, datetime | None]:
        row = await conn.fetchrow(f"SELECT last_seq, stream_created FROM {self.schema}"
                                  ".checkpoints WHERE projection = $1", self.projection.name)
        return (int(row["last_seq"]), row["stream_created"]) if row else (0, None)

    async def _stream_now(self) -> tuple[datetime, int]:
        """The stream's creation time (what a sequence counts in) and last sequence."""
        reconnects = self.nc.stats["reconnects"]
        try:
            info = await self.js.stream_info(self.stream)
        except NotFoundError:
            raise ProjectionLag(f"there is no stream {self.stream}") from None
        assert info.created is not None, "nats-server reports when a stream was created"
        if self._stream_created not in (None, info.created):
            self._forget()
        self._stream_created, self._reconnects = info.created, reconnects
        return info.created, int(info.state.last_seq)

    def _forget(self) -> None:
        # Positions of another stream say nothing about this one.
        self.position = self._clear_to = 0

    def _still_leading(self, lock_conn: asyncpg.Connection) -> None:
        # The advisory lock lives as long as its session: a connection gone (a PostgreSQL
        # restart) means another instance may lead already. Stop pulling before it starts.
        try:
            gone = lock_conn.is_closed()
        except asyncpg.InterfaceError:  # the pool took it back when it closed
            gone = True
        if gone:
            raise CursorMoved("the connection holding the lead is gone")

    async def _same_stream(self, led: datetime | None) -> None:
        # After a reconnection NATS may be another server holding another stream.
        if self._reconnects != self.nc.stats["reconnects"]:
            await self._stream_now()
        if self._stream_created != led:
            raise CursorMoved(f"the stream {self.stream} is not the one this lead began in")

    def _check_deliveries(self, msgs: list[Msg]) -> None:
        """Every delivery of the cursor comes here: one missing went to someone else
        pulling from the same consumer (a leader that does not know it lost the lead),
        and skipping it would lose its event."""
        for msg in msgs:
            sequence = consumer_sequence(msg.reply)
            if sequence > self._next_delivery:
                raise CursorMoved(f"deliveries {self._next_delivery}..{sequence - 1} of "
                                  f"{self.consumer} went to another puller")
            self._next_delivery = max(self._next_delivery, sequence + 1)

    async def _consume(self, lock_conn: asyncpg.Connection, led: datetime | None) -> None:
        # Two batches overlap: the next is decoded and prepared while the one before it
        # waits on PostgreSQL. They still commit, acknowledge and advance strictly in order.
        puller = Puller(self.nc, self.stream, self.consumer, self.batch)
        await puller.start()
        writing: asyncio.Task[None] | None = None
        try:
            while not self._stopping.is_set():
                self._still_leading(lock_conn)
                await self._same_stream(led)
                msgs = await puller.next_batch(wait=0.25)
                self._check_deliveries(msgs)
                batch = await self._prepare(msgs) if msgs else None
                if writing is not None:
                    await writing
                    writing = None
                if batch is not None:
                    writing = asyncio.create_task(self._handle(batch))
            if writing is not None:
                await writing
        finally:
            if writing is not None and not writing.done():
                writing.cancel()
            await puller.stop()

    async def _prepare(self, msgs: list[Msg]) -> Batch:
        events, foreign = split_foreign(
            [to_stored(m) for m in msgs if self.exact or self._wanted(m.subject)])
        events = await opened(self.nc, events)
        batch = Batch(events=events, last=msgs[-1], through=stream_sequence(msgs[-1].reply),
                      foreign=foreign)
        if self._batched is not None:
            try:
                batch.prepared = self._batched.prepare(events)
            except Exception as err:  # applied one by one, each failure parked
                batch.prepared = err
        return batch

    async def _handle(self, batch: Batch) -> None:
        async with self.pool.acquire() as conn:
            try:
                last = await self._apply_batch(conn, batch, careful=False)
            except CursorMoved:
                raise
            except TRANSIENT:
                raise
            except Exception:
                last = await self._apply_batch(conn, batch, careful=True)
            if self.mirror is not None:
                # Right after the commit, with no await between: the copy never shows
                # a batch the tables do not have, nor lags one they do.
                self.mirror.applied([e for e in batch.events if e.seq > self.position])
        await batch.last.ack()
        self._advance(last)
        self._analyze_if_grown(len(batch.events))

    def _analyze_if_grown(self, applied: int) -> None:
        # The planner's picture of the tables comes from ANALYZE; autovacuum runs it about
        # once a minute, while a replay can grow a table tenfold in that time, and a stale
        # picture makes it scan whole tables for a batch of rows (0.05 -> 1 ms a
        # statement). So, beside the batches: analyse each time the log read doubles.
        self._since_analyze += applied
        if (self._since_analyze < max(ANALYZE_EVERY, self._analyzed_at)
                or (self._analyzing is not None and not self._analyzing.done())):
            return
        self._analyzed_at = max(self._analyzed_at, self.position)
        self._since_analyze = 0
        self._analyzing = asyncio.create_task(self._analyze())

    async def _analyze(self) -> None:
        with contextlib.suppress(*TRANSIENT):
            await self._analyze_tables()

    async def _analyze_tables(self) -> None:
        async with self.pool.acquire() as conn:
            tables = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = $1",
                                      self.schema)
            for t in tables:
                await conn.execute(f'ANALYZE {self.schema}."{t["tablename"]}"')

    async def _apply_batch(self, conn: asyncpg.Connection, batch: Batch, *,
                           careful: bool) -> int:
        """Apply the batch's events (those this projection wants) and move the checkpoint
        to the batch's last sequence."""
        async with conn.transaction():
            last = await self._read_checkpoint(conn, lock=True)
            if last != self.position:
                # The checkpoint moved under us (a swapped-in rebuild, an operator): our
                # cursor no longer follows it. Apply nothing; lead again from it.
                raise CursorMoved(f"checkpoint {last}, cursor after {self.position}")
            await self._park_foreign(conn, batch, last)
            fresh = [e for e in batch.events if e.seq > last]
            if careful:
                for event in fresh:
                    await self._apply_or_park(conn, event)
            else:
                await self._apply_fresh(conn, batch, fresh)
            if batch.through > last:
                last = batch.through
                await conn.execute(
                    f"UPDATE {self.schema}.checkpoints SET last_seq = $2 WHERE projection = $1",
                    self.projection.name, last)
        return last

    async def _apply_fresh(self, conn: asyncpg.Connection, batch: Batch,
                           fresh: list[StoredEvent]) -> None:
        if self._batched is None:
            for event in fresh:
                await self.projection.apply(conn, self.schema, event)
            return
        if isinstance(batch.prepared, Exception):
            raise batch.prepared
        prepared = batch.prepared if len(fresh) == len(batch.events) else (
            self._batched.prepare(fresh))
        await self._batched.apply_prepared(conn, self.schema, prepared)

    async def _apply_or_park(self, conn: asyncpg.Connection, event: StoredEvent) -> None:
        try:
            async with conn.transaction():
                await self.projection.apply(conn, self.schema, event)
        except TRANSIENT:
            raise
        except Exception as err:
            await self._park(conn, event, f"{type(err).__name__}: {err}")

    async def _park_foreign(self, conn: asyncpg.Connection, batch: Batch, last: int) -> None:
        for message in batch.foreign:
            reason = foreign_reason(message.headers, message.subject)
            if message.seq > last and reason is not None:
                await self._park(conn, message, reason)

    async def _park(self, conn: asyncpg.Connection, event: StoredEvent, reason: str) -> None:
        log.error("projector %s: parking event %d (%s): %s",
                  self.consumer, event.seq, event.subject, reason)
        await conn.execute(
            f"INSERT INTO {self.schema}.dead_letters "
            "(projection, stream_seq, subject, event_type, reason, payload) "
            "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
            self.projection.name, event.seq, event.subject, event.type[:200],
            reason[:2000], event.data)

    async def _read_checkpoint(self, conn: asyncpg.Connection, *, lock: bool = False) -> int:
        suffix = " FOR UPDATE" if lock else ""
        value = await conn.fetchval(
            f"SELECT last_seq FROM {self.schema}.checkpoints WHERE projection = $1{suffix}",
            self.projection.name)
        return int(value or 0)

    def _advance(self, last: int) -> None:
        self.position = max(self.position, last)
        self._advanced.set()
        self._advanced = asyncio.Event()

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def wait_leading(self, within: float) -> None:
        """Return once this instance leads (its mirror, if any, is loaded)."""
        await asyncio.wait_for(self._leading.wait(), within)

    async def wait_until(self, seq: int, within: float = 5.0) -> None:
        """Return once every event this projection cares about up to ``token`` is applied."""
        deadline = time.monotonic() + within
        ask = True
        while True:
            # Take the event before checking: an advance during the check sets it, so
            # the wake-up cannot be lost between the check and the wait.
            advanced = self._advanced
            if await self._reached(seq, ask=ask):
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ProjectionLag(
                    f"{self.projection.name} is at {self.position}, not yet at {seq}")
            try:
                await asyncio.wait_for(advanced.wait(), min(remaining, 0.05))
                ask = time.monotonic() - self._asked_at > ASK_EVERY_S
            except TimeoutError:
                ask = True

    async def caught_up(self) -> bool:
        """Whether every event under the consumer's filter is applied, asked by a question
        sent after this call began (so it covers every append acknowledged before) and
        shared with whoever asks before it leaves: one small question, usually answered
        "nothing after you"."""
        return await self._caught_up()

    async def _ask_caught_up(self) -> bool:
        await self.check_serving()
        if not self.active:
            await self._refresh_position()
        return await self._next_on(self.filter, self.position + 1) is None

    async def check_serving(self) -> None:
        """Raise StaleReadModel while the read model must not answer (built from another
        stream). It costs nothing but after a reconnection to NATS, when it asks which
        stream there is now: a position counts in one stream only."""
        if self._stream_created is None or self._reconnects != self.nc.stats["reconnects"]:
            await self._stream_now()
        if self.refused and not self.active:
            await self._refresh_position()  # an operator may have rebuilt it meanwhile
        if self.refused:
            raise StaleReadModel(self.refused)

    async def _reached(self, seq: int, *, ask: bool) -> bool:
        await self.check_serving()
        if seq <= max(self.position, self._clear_to):
            return True
        if not ask:
            return False
        if not self.active:
            await self._refresh_position()
        # The log's end, asked first: what is not written yet cannot be vouched for, so a
        # token past the end (a caller's pick) clears only up to the end, and counts as it.
        bound = min(seq, await self._log_end())
        if await self._relevant_before(self.position + 1, bound):
            return False
        self._clear_to = max(self._clear_to, bound)
        return True

    async def _refresh_position(self) -> None:
        # A standby instance learns the leader's progress from the shared checkpoint, if
        # it counts in the stream as it is now (a leader adopts one of no known stream).
        async with self.pool.acquire() as conn:
            last, built_from = await self._checkpoint_row(conn)
        if self.active:
            return  # it took the lead meanwhile: its own position is the truth
        if built_from not in (None, self._stream_created):
            self.refused = self._foreign(built_from, last)
            return
        self.refused = ""
        known = last if built_from is not None else 0
        if known < self.position:
            self._clear_to = 0  # the checkpoint moved back (a swapped-in rebuild)
        self.position = known

    async def _relevant_before(self, start: int, seq: int) -> bool:
        """Whether the log holds an event for this projection in [start, token]. Asking
        the server costs it a walk of its subject index, so a catching-up projector is
        asked at most every ASK_EVERY_S, and one subject answering yes ends the question."""
        self._asked_at = time.monotonic()
        for subject in self.projection.subjects:
            nxt = await self._next_on(subject, start)
            if nxt is not None and nxt <= seq:
                return True
        return False

    async def _next_on(self, subject: str, start: int) -> int | None:
        return await self._sequence_of({"seq": start, "next_by_subj": subject})

    async def _log_end(self) -> int:
        # ">" is the server's shortcut to the stream's last message.
        return await self._sequence_of({"last_by_subj": ">"}) or 0

    async def _sequence_of(self, query: dict[str, Any]) -> int | None:
        """The sequence of the message a direct get finds, or None."""
        reply = await mux_of(self.nc).request(
            f"$JS.API.DIRECT.GET.{self.stream}", json.dumps(query).encode(), within=2.0)
        if reply.headers and reply.headers.get("Status"):
            return None
        return int((reply.headers or {})["Nats-Sequence"])


def split_foreign(stored: list[StoredEvent]) -> tuple[list[StoredEvent], list[StoredEvent]]:
    """(events, foreign messages): what an append wrote, and what it did not."""
    events: list[StoredEvent] = []
    foreign: list[StoredEvent] = []
    for message in stored:
        (foreign if foreign_reason(message.headers, message.subject) else events).append(message)
    return events, foreign


def to_stored(msg: Msg) -> StoredEvent:
    """A JetStream message as a StoredEvent."""
    headers = msg.headers or {}
    return StoredEvent(
        seq=stream_sequence(msg.reply),
        subject=msg.subject,
        type=headers.get(HDR_EVENT_TYPE) or msg.subject.rsplit(".", 1)[-1],
        data=msg.data,
        headers=headers,
    )


def consumer_sequence(reply: str) -> int:
    """The consumer's delivery sequence in a JetStream ack subject (see `stream_sequence`):
    one more for each message the consumer delivers, whoever pulled it."""
    tokens = reply.split(".")
    return int(tokens[6] if len(tokens) == 9 else tokens[8])


def stream_sequence(reply: str) -> int:
    """The stream sequence in a JetStream ack subject, without the rest of the metadata
    (parsing the timestamp into a datetime cost a sixth of a replay):
    ``$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>...``, or with a domain and account
    hash ``$JS.ACK.<domain>.<hash>.<stream>.<consumer>.<delivered>.<sseq>...``."""
    tokens = reply.split(".")
    return int(tokens[5] if len(tokens) == 9 else tokens[7])
