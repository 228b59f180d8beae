"""`ledgershare log rewrite --into NEW`: a clean copy of an older event log.

Logs written before the credential store, keyed claim subjects and sealed personal data
still hold, in identity's events, Argon2 hashes and the security question; claims under
the name's base64; and personal fields in the clear. The log denies deletes, so it is
not edited: every message is copied, in order, into a new stream, upcast on the way:

- a hash (and the question) moves into identity's credential store, the event names the
  credential instead (its id is made from the old stream and sequence: a re-run writes
  the same rows);
- a claim under a legacy subject moves to its keyed subject (`ClaimSubjects`);
- a personal field in the clear is sealed with its owner's key; sealed ones, and every
  event with nothing to upcast, are copied byte for byte;
- a foreign or undecodable message is copied unchanged, and reported.

An upcast event is re-encoded from its contract (so a field the contract no longer has
is dropped); an erased member's fields, whose key is gone, are written as "". Unlike
replay, the command needs identity's database (the credential store) and subject key.

Headers are kept but the original append's expected-sequence checks (they count in the
old stream); a message id seen before gets a suffix, so the new stream's deduplication
drops nothing. With nothing dropped and nothing added, every message keeps its sequence.

Two streams cannot capture the same subjects: the copy is published under a staging
prefix the new stream maps back to ``evt.>`` (a subject transform). The switch then
retires the old stream's subjects, copies what was appended meanwhile, and gives
``evt.>`` to the new stream; appends in between fail (no stream answers) rather than land
in the old log, and are retried by their callers.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import asyncpg
import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    PubAck,
    StreamConfig,
    SubjectTransform,
)
from nats.js.errors import NotFoundError
from rich.console import Console
from rich.markup import escape

from cli.client import table
from contracts.base import HDR_MSG_ID, Event
from contracts.identity import (
    ClaimSubjects,
    DrivePasswordChanged,
    DrivePasswordSet,
    IdentityEvent,
    MemberRegistered,
    PasswordChanged,
)
from contracts.subjects import all_events, decode_id
from runtime.app import create_pool
from runtime.eventstore import foreign_reason, stream_config
from runtime.personal import PREFIX, Keyring
from runtime.settings import Settings
from services.identity import tables
from services.identity.service import subject_key
from services.identity.tables import Credential, Kind
from services.identity.vault import credential_id
from services.registry import SERVICES

STAGING = "ledgershare.rewrite"  # + .<new stream>.evt.…: what only the new stream captures
RETIRED = "ledgershare.retired"  # + .<old stream>: the old stream's subject after the switch
BATCH = 256
CLAIMS = {"account": "account", "openid": "openid"}  # claim aggregate -> its name's field
ACK_S = 60.0  # the longest a batch's acks may take
Progress = Callable[[int, int], None]


class RewriteRefused(Exception):
    """The rewrite cannot start (the target holds messages already)."""


@dataclass
class Tally:
    """What a rewrite did: counts per change and per event type, and what it passed over."""

    copied: int = 0
    upcast: Counter[str] = field(default_factory=Counter)  # event type -> events changed
    changes: Counter[str] = field(default_factory=Counter)  # secrets, claims, sealed
    unchanged: list[tuple[int, str]] = field(default_factory=list)  # (seq, why) as it was
    renamed_ids: int = 0
    shifted: int = 0  # messages whose sequence differs in the new stream


class Upcast(msgspec.Struct, frozen=True, kw_only=True):
    """One message as the new stream gets it."""

    subject: str
    data: bytes
    changes: tuple[str, ...] = ()


Sent = tuple[int, Upcast, "asyncio.Future[PubAck]"]  # source seq, what was sent, its ack


class Rewriter:
    """Copies ``source`` into ``target``, upcasting identity's secrets, claims and
    personal fields (see the module's docstring)."""

    def __init__(self, nc: NATS, pool: asyncpg.Pool, claims: ClaimSubjects, *, source: str,
                 target: str, replicas: int = 1, duplicate_window_s: float = 120.0) -> None:
        self.nc, self.js, self.pool, self.claims = nc, nc.jetstream(timeout=30), pool, claims
        self.source, self.target = source, target
        self.config = stream_config(target, replicas, duplicate_window_s)
        self.ring = Keyring(nc)
        self.decoders = {s.name: msgspec.json.Decoder(s.events) for s in SERVICES}
        self.ids: set[str] = set()
        self.position = 0  # the last source sequence copied
        self.tally = Tally()

    # ---- the streams --------------------------------------------------------------------

    async def prepare(self) -> None:
        """Create the target (staged), or refuse one that holds messages."""
        if self.target == self.source:
            raise RewriteRefused(f"{self.source} is the log being copied; name a new stream")
        try:
            info = await self.js.stream_info(self.target)
        except NotFoundError:
            await self.js.add_stream(self._staged())
        else:
            if info.state.messages or info.state.last_seq:
                raise RewriteRefused(f"stream {self.target} exists and is not empty "
                                     f"({info.state.messages} messages); name a new one")
            await self.js.update_stream(self._staged())
        await tables.create_tables(self.pool)

    def _staged(self) -> StreamConfig:
        staged = f"{STAGING}.{self.target}.{all_events()}"
        return dataclasses.replace(self.config, subjects=[staged], subject_transform=(
            SubjectTransform(src=staged, dest=all_events())))

    async def switch(self, progress: Progress | None = None) -> None:
        """Retire the source's subjects, copy its tail, and give ``evt.>`` to the target."""
        old = (await self.js.stream_info(self.source)).config
        await self.js.update_stream(dataclasses.replace(
            old, subjects=[f"{RETIRED}.{self.source}"]))
        await self.copy(progress)
        await self.js.update_stream(self.config)

    # ---- copying ------------------------------------------------------------------------

    async def copy(self, progress: Progress | None = None) -> Tally:
        """Every message of the source not copied yet, upcast, in order."""
        end = (await self.js.stream_info(self.source)).state.last_seq
        start = self.position + 1
        if start > end:
            return self.tally
        name = f"rewrite_{self.target}_{start}"
        await self.js.add_consumer(self.source, ConsumerConfig(
            name=name, deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start,
            ack_policy=AckPolicy.ALL, max_ack_pending=BATCH * 4, inactive_threshold=300))
        sub = await self.js.pull_subscribe_bind(consumer=name, stream=self.source)
        try:
            while self.position < end:
                msgs = await sub.fetch(BATCH, timeout=10)
                # Sent in order on one connection, their acks awaited together: one
                # round trip per batch, not per message.
                sent = [await self._publish(m.metadata.sequence.stream, m) for m in msgs]
                await self._settle(sent)
                await msgs[-1].ack()
                if progress is not None:
                    progress(self.position, end)
        finally:
            await sub.unsubscribe()
            await self.js.delete_consumer(self.source, name)
        return self.tally

    async def _publish(self, seq: int, msg: Msg) -> Sent:
        headers = {k: v for k, v in (msg.headers or {}).items()
                   if not k.startswith("Nats-Expected")}
        out = await self.upcast(seq, msg.subject, headers, msg.data)
        msg_id = headers.get(HDR_MSG_ID)
        if msg_id is not None:
            if msg_id in self.ids:  # stored twice, apart: the copy must not be deduplicated
                headers[HDR_MSG_ID] = f"{msg_id}~{seq}"
                self.tally.renamed_ids += 1
            self.ids.add(headers[HDR_MSG_ID])
        # No expected-stream header: only the target captures the staging subject, and
        # the header would stay on every message for good.
        ack = await self.js.publish_async(f"{STAGING}.{self.target}.{out.subject}",
                                          out.data, headers=headers or None)
        return seq, out, ack

    async def _settle(self, sent: list[Sent]) -> None:
        """Wait for a batch's acks; a message lost or deduplicated stops the rewrite."""
        acks = await asyncio.wait_for(asyncio.gather(*(ack for _, _, ack in sent)), ACK_S)
        for (seq, out, _), ack in zip(sent, acks, strict=True):
            if ack.duplicate:
                raise RuntimeError(f"message {seq} was taken for a duplicate in {self.target}")
            self.position = seq
            self.tally.copied += 1
            self.tally.shifted += ack.seq != seq
            if out.changes:
                self.tally.upcast[out.subject.rsplit(".", 1)[-1]] += 1
                self.tally.changes.update(out.changes)

    # ---- upcasting ----------------------------------------------------------------------

    async def upcast(self, seq: int, subject: str, headers: dict[str, str],
                     data: bytes) -> Upcast:
        """One message as the new stream gets it (as it was, when nothing changes)."""
        same = Upcast(subject=subject, data=data)
        why = foreign_reason(headers, subject)
        decoder = self.decoders.get(subject.split(".")[1] if subject.count(".") else "")
        if why is None and decoder is None:
            why = "no service appends in this context"
        if why is None and decoder is not None:
            try:
                event: Event = decoder.decode(data)
            except msgspec.DecodeError as err:
                why = f"undecodable: {err}"
        if why is not None:
            self.tally.unchanged.append((seq, why))
            return same
        return await self._upcast_event(seq, subject, event) or same

    async def _upcast_event(self, seq: int, subject: str, event: Event) -> Upcast | None:
        changes = []
        moved = await self._secrets(seq, event) if isinstance(event, IdentityEvent) else event
        if moved is not event:
            changes.append("secrets moved to identity's store")
        keyed = await self._claim_subject(seq, subject, moved)
        if keyed != subject:
            changes.append("claim moved to its keyed subject")
        sealed = await self.ring.seal(moved, keep_sealed=True)
        if sealed is not moved:
            changes.append("personal fields sealed")
        if not changes:
            return None
        return Upcast(subject=keyed, data=msgspec.json.encode(sealed), changes=tuple(changes))

    async def _secrets(self, seq: int, event: IdentityEvent) -> IdentityEvent:
        """The event naming credentials instead of carrying hashes."""
        r = msgspec.structs.replace
        match event:
            case MemberRegistered(password_hash=h) | PasswordChanged(password_hash=h) if h:
                cid = await self._keep(seq, event.member_id, "password", h)
                return r(event, credential=cid, password_hash="")
            case DrivePasswordChanged(password_hash=h) if h:
                return r(event, credential=await self._keep(seq, event.member_id, "drive", h),
                         password_hash="")
            case DrivePasswordSet() if event.password_hash or event.answer_hash:
                return await self._drive_set(seq, event)
        return event

    async def _drive_set(self, seq: int, event: DrivePasswordSet) -> DrivePasswordSet:
        question = await self._plain(event.question, "question")
        drive = await self._keep(seq, event.member_id, "drive", event.password_hash) if (
            event.password_hash) else event.credential
        recovery = await self._keep(seq, event.member_id, "recovery", event.answer_hash,
                                    question=question)
        return msgspec.structs.replace(event, credential=drive, recovery=recovery,
                                       password_hash="", answer_hash="", question="")

    async def _keep(self, seq: int, member_id: str, kind: Kind, secret_hash: str, *,
                    question: str = "") -> str:
        cid = credential_id(f"log-rewrite:{self.source}:{seq}", kind)
        await tables.put(self.pool, Credential(credential_id=cid, member_id=member_id,
                                               kind=kind, secret_hash=secret_hash,
                                               question=question))
        return cid

    async def _plain(self, value: str, name: str) -> str:
        """A field's text, opened if it was sealed."""
        return await self.ring.open_text(name, value) if value.startswith(PREFIX) else value

    async def _claim_subject(self, seq: int, subject: str, event: Event) -> str:
        """The keyed subject of a claim an older log made under the name's base64."""
        tokens = subject.split(".")
        if len(tokens) != 5 or tokens[1] != "identity" or tokens[2] not in CLAIMS or (
                tokens[3][:1] not in ("b", "h")) or not isinstance(event, IdentityEvent):
            return subject
        name_field = CLAIMS[tokens[2]]
        name = decode_id(tokens[3]) or await self._plain(getattr(event, name_field, ""),
                                                         name_field)
        if not name:
            self.tally.unchanged.append((seq, "a claim whose name no longer opens: left "
                                              "under its old subject"))
            return subject
        if tokens[2] == "account":
            return self.claims.account_subject(name, event)
        return self.claims.openid_subject(name, event)

def summary(tally: Tally) -> dict[str, object]:
    """What a rewrite did, for the operator (and --json)."""
    return {"copied": tally.copied, "upcast": dict(tally.upcast),
            "changes": dict(tally.changes),
            "unchanged": [{"seq": s, "why": w} for s, w in tally.unchanged],
            "renamed_message_ids": tally.renamed_ids, "shifted_sequences": tally.shifted}


class Meter:
    """Progress lines, at most one a second: position, target, messages per second."""

    def __init__(self, say: Callable[[str], None]) -> None:
        self.say, self.started, self.last = say, time.monotonic(), 0.0

    def __call__(self, position: int, target: int) -> None:
        now = time.monotonic()
        if now - self.last >= 1.0 or position >= target:
            self.last = now
            rate = position / max(now - self.started, 1e-9)
            self.say(f"copied {position}/{target} messages ({rate:,.0f} msg/s)")


async def rewrite(rewriter: Rewriter, *, switch: bool, progress: Progress | None = None
                  ) -> Tally:
    """Prepare, copy, and (unless told not to) switch: the whole operator's step."""
    await rewriter.prepare()
    await rewriter.copy(progress)
    if switch:
        await rewriter.switch(progress)
    return rewriter.tally


async def command(nc: NATS, console: Console, a: argparse.Namespace, settings: Settings
                  ) -> int:
    """``ledgershare log rewrite --into NEW``: copy settings.stream into NEW, then switch."""
    pool = await create_pool(settings.pg_dsn, size=2)
    try:
        rewriter = Rewriter(nc, pool, ClaimSubjects(subject_key(settings)),
                            source=settings.stream, target=a.into,
                            replicas=settings.stream_replicas,
                            duplicate_window_s=settings.duplicate_window_s)
        tally = await rewrite(rewriter, switch=not a.no_switch,
                              progress=Meter(lambda line: console.print(line, highlight=False)))
    except RewriteRefused as err:
        console.print(f"[red]refused:[/] {escape(str(err))}")
        return 1
    finally:
        await pool.close()
    _report(tally, console, a)
    return 0


def _report(tally: Tally, console: Console, a: argparse.Namespace) -> None:
    if a.json:
        print(msgspec.json.encode(summary(tally)).decode())
        return
    rows = [[kind, n] for kind, n in sorted(tally.upcast.items())]
    console.print(table("upcast events", ["event", "upcast"], rows))
    for change, n in sorted(tally.changes.items()):
        console.print(f"{n:>7} {change}")
    for seq, why in tally.unchanged:
        console.print(f"[yellow]copied as it was:[/] {seq} {escape(why)}")
    console.print(f"copied {tally.copied} messages into {a.into}; message ids renamed: "
                  f"{tally.renamed_ids}; sequences shifted: {tally.shifted}")
    if not a.no_switch:
        console.print(f"{a.into} now holds evt.>: set LEDGERSHARE_STREAM={a.into} for every "
                      "service, then run `ledgershare replay <service> --swap` for each")
