"""identity's erasure: what deleting a member owes once ``MemberErased`` is in the log.

In this order: the account name and the WeChat openid are released (their claims are
found from the names, which open only while the member's key lasts), the credentials
are dropped from identity's store, and last the member's data key is destroyed, which
makes every personal field of theirs in the log unreadable. The command that erased
the member does it at once; this policy does it again for every ``MemberErased`` (each
step finds what is already done), so a crash half-way is finished, never lost.
Storage, social and sharing react to the same event with their own policies.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from functools import partial
from typing import Literal

import asyncpg
import msgspec

from contracts.identity import (
    ERASURES,
    AnyIdentityEvent,
    ClaimSubjects,
    IdentityEvent,
    MemberErased,
    legacy_account_subject,
    legacy_account_subjects,
    legacy_openid_subject,
    legacy_openid_subjects,
    member_subjects,
)
from runtime.commands import Command, Fold, Pipeline
from runtime.eventstore import EventStore, Outgoing, StoredEvent
from runtime.personal import Keyring
from runtime.policies import persist
from services.identity import domain
from services.identity.domain import Holder, Member
from services.identity.vault import Vault

_decoder = msgspec.json.Decoder(AnyIdentityEvent)
CLAIM: Fold[Holder, IdentityEvent] = Fold(_decoder, domain.evolve_holder, Holder())
Subject = Callable[[str, IdentityEvent], str]
Kind = Literal["account", "openid"]
# Where an older log made each kind of claim (the name's base64): filter, subject.
LEGACY: dict[Kind, tuple[Callable[[str], str], Subject]] = {
    "account": (legacy_account_subjects, legacy_account_subject),
    "openid": (legacy_openid_subjects, legacy_openid_subject),
}


class Eraser:
    """Completes a member's erasure (every step idempotent)."""

    def __init__(self, events: EventStore, commands: Pipeline, claims: ClaimSubjects,
                 vault: Vault, keyring: Keyring) -> None:
        self.events = events
        self.commands = commands
        self.claims = claims
        self.vault = vault
        self.keyring = keyring

    async def complete(self, member_id: str, cmd: Command) -> None:
        """Release the names, drop the credentials, destroy the key."""
        member, _ = await self.events.state(member_subjects(member_id), _decoder,
                                            domain.evolve, Member())
        if not member.erased:
            return
        if member.account:
            await self.release("account", member.account, cmd, "account",
                               lambda claim: domain.decide_release_account(claim, member))
        if member.openid:
            await self.release("openid", member.openid, cmd, "openid",
                               lambda claim: domain.decide_release_openid(claim, member))
        await self.vault.forget(member_id)
        await self.keyring.shred(member_id)

    async def release(self, kind: Kind, name: str, cmd: Command, part: str,
                      decide: Callable[[Holder], Sequence[IdentityEvent]]) -> None:
        """The events ``decide`` gives for a claim, wherever it was made: under its keyed
        subject (step ``part``) and under an older log's base64 one (``part``-b64)."""
        for suffix, (where, subject) in (("", self._keyed(kind)), ("-b64", LEGACY[kind])):
            await self.commands.step(cmd.part(part + suffix), where(name), CLAIM,
                                     partial(_outgoing, name, subject, decide))

    def _keyed(self, kind: Kind) -> tuple[Callable[[str], str], Subject]:
        c = self.claims
        return ((c.account_subjects, c.account_subject) if kind == "account"
                else (c.openid_subjects, c.openid_subject))


def _outgoing(name: str, subject: Subject,
              decide: Callable[[Holder], Sequence[IdentityEvent]],
              claim: Holder) -> list[Outgoing]:
    return [Outgoing(subject=subject(name, e), event=e) for e in decide(claim)]


class ErasurePolicy:
    """On MemberErased: the erasure completed (`Eraser`)."""

    name = "erasure_policy"
    subjects: Sequence[str] = (ERASURES,)

    def __init__(self, eraser: Eraser, commands: Pipeline) -> None:
        self.eraser = eraser
        self.commands = commands

    async def setup(self, conn: asyncpg.Connection, schema: str) -> None:
        """No tables: the policy keeps only its checkpoint."""

    async def apply(self, conn: asyncpg.Connection, schema: str, event: StoredEvent) -> None:
        erased = _decoder.decode(event.data)
        if not isinstance(erased, MemberErased):
            return
        cmd = self.commands.internal(f"erase-{erased.member_id}",
                                     correlation_id=f"erasure-{uuid.uuid4().hex}",
                                     actor=erased.member_id)
        await persist(lambda: self.eraser.complete(erased.member_id, cmd),
                      what="erasure policy")

