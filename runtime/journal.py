"""The command journal: what each command id did, one record per command, in its own
JetStream stream (``COMMANDS``, subjects ``cmd.<context>.<key>``).

A record says which content the id was first used with (a digest) and whether a run of it
is in progress or done. Records are written with the same subject-sequence check as the
event log, so exactly one request at a time holds a command: the one that created or
replaced the record. The log, not this journal, holds what a command changed; the journal
only decides who may run it and refuses an id reused with other content.
"""

from __future__ import annotations

import json

import msgspec
from nats.aio.client import Client as NATS
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from contracts.requests import mux_of
from contracts.subjects import token
from runtime.eventstore import WRONG_LAST_SEQUENCE, EventStoreError, ack_decoder

ROOT = "cmd"
DAY_S = 86_400.0


class Record(msgspec.Struct, frozen=True, kw_only=True):
    """One command id's record: its content digest, and whether a run holds it."""

    digest: str
    running: bool
    since: float  # when the current holder took it (epoch seconds)
    # How a finished run ended when it appended nothing: "none" (it decided nothing to
    # do) or "<code>\x1f<message>" (refused); "" when it appended events (they are its
    # outcome) or is not known (a record from before, or a run that died).
    outcome: str = ""


class Entry(msgspec.Struct, frozen=True, kw_only=True):
    """A record as stored, with the stream sequence a replacement must name."""

    seq: int
    record: Record


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Record)


class Journal:
    """Create, read and replace command records (compare-and-set on the subject)."""

    def __init__(self, nc: NATS, stream: str = "COMMANDS", timeout: float = 5.0) -> None:
        self.nc = nc
        self.js = nc.jetstream(timeout=timeout)
        self.stream = stream
        self.timeout = timeout

    async def ensure(self, *, replicas: int = 1, keep_days: float = 30.0) -> None:
        """Create the journal's stream unless it exists."""
        try:
            await self.js.stream_info(self.stream)
        except NotFoundError:
            await self.js.add_stream(journal_config(self.stream, replicas, keep_days))

    async def put(self, subject: str, record: Record, *, last: int) -> int | None:
        """Write ``record`` if the subject's last record is still ``last`` (0: none);
        the new sequence, or None when someone else wrote first."""
        reply = await mux_of(self.nc).request(
            subject, _encoder.encode(record), within=self.timeout,
            headers={"Nats-Expected-Last-Subject-Sequence": str(last),
                     "Nats-Expected-Stream": self.stream})
        ack = ack_decoder.decode(reply.data)
        if ack.error is None:
            return ack.seq
        if ack.error.err_code == WRONG_LAST_SEQUENCE:
            return None
        raise EventStoreError(f"command journal refused a record: {ack.error.description}")

    async def put_later(self, subject: str, record: Record, *, last: int) -> None:
        """`put` without waiting for the server's answer: for a record whose loss only
        delays a repeat (a lease runs out by itself)."""
        await self.nc.publish(subject, _encoder.encode(record), headers={
            "Nats-Expected-Last-Subject-Sequence": str(last),
            "Nats-Expected-Stream": self.stream})

    async def get(self, subject: str) -> Entry | None:
        """The subject's record, or None."""
        reply = await mux_of(self.nc).request(
            f"$JS.API.DIRECT.GET.{self.stream}",
            json.dumps({"last_by_subj": subject}).encode(), within=self.timeout)
        headers = reply.headers or {}
        if headers.get("Status"):
            return None
        return Entry(seq=int(headers["Nats-Sequence"]), record=_decoder.decode(reply.data))


def journal_subject(context: str, key: str) -> str:
    """Where one command's record lives."""
    return f"{ROOT}.{token(context)}.{token(key)}"


def journal_config(name: str, replicas: int, keep_days: float) -> StreamConfig:
    """One record per command (the newest), kept ``keep_days``; a repeat after that is a
    new command, which the aggregates' own rules still judge."""
    return StreamConfig(
        name=name, subjects=[f"{ROOT}.>"], retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE, discard=DiscardPolicy.OLD, max_msgs_per_subject=1,
        max_age=keep_days * DAY_S, num_replicas=replicas, deny_delete=True, deny_purge=True,
        allow_direct=True)
