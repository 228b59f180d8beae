"""The one command pipeline: claim the command id, load, decide, append, reply.

Every command of every service runs through `Pipeline.run`. The caller's ``command_id``
is data, never a decision: the pipeline derives the command's key from (context,
operation, caller, command id), and that key names the command's journal record and every
event it appends. So:

- a command id first used with other content is refused (`CommandReused`);
- one request at a time runs a command: a repeat waits for the run in progress, and a run
  whose process died is taken over after its lease;
- a repeat (a retry after a lost reply, or an attacker replaying an id) finds the events
  the command appended and answers from them, deciding nothing again: no second guess of
  a password is checked, no second reservation made, no second download unaudited;
- a run that appended nothing leaves its outcome in the record (nothing to do, or the
  refusal's code and message), and a repeat answers that: a hand-over that found the set
  with its keeper already, or one refused, is not carried out later by its replay, after
  other commands changed the state it was decided on;
- nothing acts on an append it has not verified as its own: an append that meets its own
  message id already stored is read back, not trusted.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import msgspec

from contracts.base import HDR_PART, Event, Request
from contracts.errors import (
    BadRequest,
    CommandInProgress,
    CommandReused,
    Conflict,
    Forbidden,
    LedgerError,
    NotFound,
)
from runtime.eventstore import EventStore, Meta, Outgoing, StoredEvent, with_retry
from runtime.journal import Entry, Journal, Record, journal_subject

log = logging.getLogger("ledgershare.commands")
R = TypeVar("R")
S = TypeVar("S")
E = TypeVar("E", bound=Event)
# A decision: the events to append (none: nothing to do), or a coroutine giving them when
# deciding needs I/O (checking a password hash, reading another aggregate).
Decision = Sequence[Outgoing] | Awaitable[Sequence[Outgoing]]

# Credentials say who asks, not what is asked: a retry may carry a refreshed session, and a
# digest of a password must never be stored. A consistency seq is not content either.
NOT_CONTENT = frozenset({"command_id", "session", "drive_token", "openid_proof", "password",
                         "old_password", "new_password", "answer", "seq"})


def command_key(context: str, operation: str, caller: str, command_id: str) -> str:
    """The server's name for one command: nothing a caller picks can collide with another
    caller's command or another operation's."""
    text = "\x1f".join((context, operation, caller, command_id))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def content_digest(request: Request, also: str = "") -> str:
    """A digest of what the request asks (its fields other than credentials)."""
    fields = {name: getattr(request, name) for name in request.__struct_fields__
              if name not in NOT_CONTENT}
    if also:
        fields["\x1falso"] = also
    return hashlib.sha256(msgspec.json.encode(fields)).hexdigest()


NOTHING = "none"  # a run's outcome: it decided there was nothing to do
# Refusals a repeat answers again: what the command asked, judged on the state then. Not
# a credential's (a retry may bring a fresh token) and not an outage's (it may pass).
SETTLED = (BadRequest, Forbidden, NotFound, Conflict)


@dataclass(frozen=True)
class Command:
    """One run of one command: its key, whether the id was never seen before, how an
    earlier run that appended nothing ended (``earlier``), and what this run's steps
    appended (``steps``: one flag per step)."""

    key: str
    fresh: bool
    meta: Meta
    earlier: str = ""
    steps: list[bool] = field(default_factory=list)

    def part(self, name: str) -> Command:
        """The same command, for one of several steps it takes in one aggregate."""
        return Command(key=f"{self.key}.{name}", fresh=self.fresh, meta=self.meta,
                       earlier=self.earlier, steps=self.steps)

    @property
    def outcome(self) -> str:
        """``NOTHING`` when every step of this run decided nothing, else ""."""
        return NOTHING if self.steps and not any(self.steps) else ""

    def msg_id(self, subject_filter: str) -> str:
        """The message id prefix of this command's events in one aggregate."""
        where = hashlib.sha256(f"{subject_filter} {self.key}".encode()).hexdigest()[:24]
        return f"{self.key[:40]}.{where}"


@dataclass(frozen=True)
class Step(Generic[S, E]):
    """What one aggregate step did: the command's events there, the last one's sequence
    (the consistency seq), the aggregate's state after them, and whether they were found
    from an earlier run rather than decided now."""

    events: list[E]
    seq: int
    state: S
    repeated: bool


@dataclass(frozen=True)
class Fold(Generic[S, E]):
    """How to load one kind of aggregate: its decoder, evolve and initial state."""

    decoder: msgspec.json.Decoder[Any]
    evolve: Callable[[S, E], S]
    initial: S


class Pipeline:
    """Runs the commands of one context."""

    def __init__(self, events: EventStore, journal: Journal, context: str, *,
                 lease_s: float = 30.0, wait_s: float = 3.0) -> None:
        self.events = events
        self.journal = journal
        self.context = context
        self.lease_s = lease_s
        self.wait_s = wait_s

    async def run(self, operation: str, request: Any, *, caller: str, correlation_id: str,
                  body: Callable[[Command], Awaitable[R]], also: str = "",
                  client_address: str = "") -> R:
        """Run ``body`` as the one holder of this command. ``also``: content the request
        carries only inside a credential (the openid of a bind's proof);
        ``client_address``: where the request came from, for the events' audit header."""
        key = command_key(self.context, operation, caller, request.command_id)
        subject = journal_subject(self.context, key)
        digest = content_digest(request, also)
        fresh, held, earlier = await self._hold(subject, digest)
        meta = Meta(correlation_id=correlation_id, causation_id=key, actor=caller,
                    client_address=client_address)
        command = Command(key=key, fresh=fresh, meta=meta, earlier=earlier)
        outcome = ""
        try:
            _refused_before(earlier)
            result = await body(command)
            outcome = command.outcome
            return result
        except SETTLED as err:
            outcome = f"{err.code}\x1f{err.message}"
            raise
        finally:
            await self._release(subject, digest, held, outcome or earlier)

    async def _hold(self, subject: str, digest: str) -> tuple[bool, int, str]:
        """Take the command's record: (never seen before, the record's sequence, how an
        earlier run ended if it appended nothing)."""
        mine = Record(digest=digest, running=True, since=time.time())
        held = await self.journal.put(subject, mine, last=0)
        if held is not None:
            return True, held, ""
        deadline = time.monotonic() + self.wait_s
        while True:
            entry = await self.journal.get(subject)
            if entry is not None:
                if entry.record.digest != digest:
                    raise CommandReused("this command id was already used for a different "
                                        "request; use a new command id for a new request")
                held = await self._take_over(subject, entry, mine)
                if held is not None:
                    return False, held, entry.record.outcome
            if time.monotonic() >= deadline:
                raise CommandInProgress("the same command is still being carried out; "
                                        "ask again in a moment")
            await asyncio.sleep(0.02)

    async def _take_over(self, subject: str, entry: Entry, mine: Record) -> int | None:
        """Hold a record nobody runs now (done, or its holder's lease ran out)."""
        record = entry.record
        if record.running and record.since + self.lease_s > time.time():
            return None
        return await self.journal.put(subject, mine, last=entry.seq)

    async def _release(self, subject: str, digest: str, held: int, outcome: str) -> None:
        # Not awaited by the server: a lost "done" only makes a repeat wait out the lease
        # (and decide again, when the run appended nothing).
        done = Record(digest=digest, running=False, since=time.time(), outcome=outcome)
        try:
            await self.journal.put_later(subject, done, last=held)
        except Exception:
            log.warning("could not mark command %s done", subject, exc_info=True)

    def internal(self, name: str, *, correlation_id: str, actor: str) -> Command:
        """A command the system issues itself (a policy reacting to an event): exactly one
        issuer runs it (the projection's leader), so it needs no journal record, and it is
        never taken as new: a repeat after a crash finds what it appended."""
        key = command_key(self.context, "internal", actor, name)
        return Command(key=key, fresh=False, meta=Meta(correlation_id=correlation_id,
                                                       causation_id=key, actor=actor))

    async def step(self, command: Command, subject_filter: str, fold: Fold[S, E],
                   decide: Callable[[S], Decision], *,
                   load: Callable[[], Awaitable[tuple[S, int]]] | None = None) -> Step[S, E]:
        """Load one aggregate (``load``, or ``fold`` over its events), decide, append with
        OCC (retried on conflict), once per command: a command seen before answers from
        the events it appended there."""
        tries = 0

        async def attempt() -> Step[S, E]:
            nonlocal tries
            tries += 1
            state, seq = await (load() if load else self._load(subject_filter, fold))
            stored: list[StoredEvent] = []
            if not command.fresh or tries > 1:
                stored = await self.events.appended_by(subject_filter, command.key)
                if stored and _complete(stored[-1]):
                    return Step(events=[fold.decoder.decode(e.data) for e in stored],
                                seq=stored[-1].seq, state=state, repeated=True)
            if not stored and command.earlier == NOTHING:
                command.steps.append(False)
                return Step(events=[], seq=seq, state=state, repeated=True)
            decided = decide(state)
            outs = await decided if inspect.isawaitable(decided) else decided
            command.steps.append(bool(outs))
            if not outs:
                return Step(events=[], seq=seq, state=state, repeated=False)
            # A run that died half-way left a prefix of its events: deciding again completes
            # it (a command's events are per-target replacements), under fresh message ids.
            prefix = command.msg_id(subject_filter) + (f".{len(stored)}" if stored else "")
            last = await self.events.append(subject_filter, outs, expected=seq, msg_id=prefix,
                                            meta=command.meta, command=command.key)
            events: list[E] = [out.event for out in outs]  # type: ignore[misc]
            return Step(events=events, seq=last, state=_fold(fold, state, events),
                        repeated=False)

        return await with_retry(attempt)

    async def _load(self, subject_filter: str, fold: Fold[S, E]) -> tuple[S, int]:
        return await self.events.state(subject_filter, fold.decoder, fold.evolve, fold.initial)


def _refused_before(earlier: str) -> None:
    """Answer a repeat of a refused command with the same refusal."""
    if not earlier or earlier == NOTHING:
        return
    code, _, message = earlier.partition("\x1f")
    err = _error_class(code, LedgerError)(message)
    err.code = code  # type: ignore[misc]
    raise err


def _error_class(code: str, root: type[LedgerError]) -> type[LedgerError]:
    """The error class with this code (codes are unique), else the root."""
    for cls in root.__subclasses__():
        if cls.code == code:
            return cls
        found = _error_class(code, cls)
        if found is not cls:
            return found
    return root


def _complete(last: StoredEvent) -> bool:
    index, _, count = last.headers.get(HDR_PART, "1/1").partition("/")
    return index == count


def _fold(fold: Fold[S, E], state: S, events: list[E]) -> S:
    for event in events:
        state = fold.evolve(state, event)
    return state
