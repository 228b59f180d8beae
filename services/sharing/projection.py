"""sharing's projection.

`AccessProjection` keeps who can see and write which (owner, set, year) from sharing's
own events plus social's (friendships), storage's (which set-years exist, versions) and
identity's (names), and the access agencies give (`contracts.agency_state.access`: an
administrator, a supervisor or a keeper after a handover) beside it. A grant counts only
between friends, in log order: an unfriending ends every grant between the two at once,
and a friendship made again brings none back.
Its in-memory copy is `index.py`; the unfriend policy, which turns FriendRemoved into
ShareRevoked events for the aggregates and the audit trail, is `policy.py`; the SQL is
`tables.py`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any, TypeAlias

import asyncpg
import msgspec

from contracts import agency, identity, sharing, social, storage
from contracts.base import Event
from contracts.subjects import context_subjects
from runtime.eventstore import StoredEvent
from services.sharing import tables

_sharing = msgspec.json.Decoder(sharing.AnySharingEvent)
_social = msgspec.json.Decoder(social.AnySocialEvent)
_storage = msgspec.json.Decoder(storage.AnyStorageEvent)
_identity = msgspec.json.Decoder(identity.AnyIdentityEvent)
_DECODERS: dict[str, msgspec.json.Decoder[Any]] = {
    sharing.CONTEXT: _sharing, social.CONTEXT: _social, storage.CONTEXT: _storage}


Claim: TypeAlias = tuple[str, ...]
# Below this many rows a batch joins the tables by key lookups (a live load's batches);
# above, PostgreSQL's own choice (hash joins) is faster: a replay with lookups forced ran
# at 12k events/s instead of 49k.
LOOKUP_BELOW = 256


class AccessProjection:
    """Applies a batch as a few segments of events that commute, one statement per table
    per segment; a single event is a batch of one, so both paths share one meaning."""

    name = "access"
    subjects: Sequence[str] = (
        context_subjects(sharing.CONTEXT),
        context_subjects(social.CONTEXT),
        context_subjects(storage.CONTEXT, "drive"),
        context_subjects(identity.CONTEXT, "member"),
    )

    async def setup(self, conn: asyncpg.Connection, schema: str) -> None:
        await tables.create_tables(conn, schema)

    async def apply(self, conn: asyncpg.Connection, schema: str, event: StoredEvent) -> None:
        await self.apply_prepared(conn, schema, self.prepare([event]))

    def prepare(self, events: list[StoredEvent]) -> list[tables.Changes]:
        return list(segments(decode(e) for e in events if e.type in READS))

    async def apply_prepared(self, conn: asyncpg.Connection, schema: str,
                             prepared: list[tables.Changes]) -> None:
        if 0 < sum(c.size for c in prepared) < LOOKUP_BELOW:
            await tables.prefer_lookups(conn)
        for changes in prepared:
            await tables.write(conn, schema, changes)


# The event types that change sharing's read model; the others under its subjects (an
# upload reserved, a download issued, a password changed...) are not even decoded (a
# fifth of a replay's events).
READS = frozenset(t.__name__ for t in (
    sharing.ShareGranted, sharing.ShareRevoked, social.FriendAdded, social.FriendRemoved,
    storage.BackupUploaded, storage.VersionDeleted, identity.MemberRegistered,
    identity.NicknameChanged, identity.MemberErased,
    *(t for t in agency.AnyAgencyEvent.__args__ if t is not agency.MemberInvited)))


def decode(stored: StoredEvent) -> Event:
    """The typed event of a stored one (raises msgspec.DecodeError on a bad payload)."""
    decoder = _DECODERS.get(stored.subject.split(".", 2)[1], _identity)
    event: Event = decoder.decode(stored.data)
    return event


def segments(events: Iterable[Event]) -> Iterator[tables.Changes]:
    """Consecutive runs of events whose changes commute (no two touch the same row in an
    order-dependent way), each collected into one `tables.Changes`."""
    changes, held = tables.Changes(), dict[Claim, bool]()
    for event in events:
        wanted = claims(event)
        # An erasure touches rows no key names (remarks the member wrote anywhere): it
        # is a segment of its own.
        alone = isinstance(event, identity.MemberErased)
        if _conflict(held, wanted) or (held and alone):
            yield changes
            changes, held = tables.Changes(), {}
        for key, exclusive in wanted:
            held[key] = held.get(key, False) or exclusive
        collect(changes, event)
        if alone:
            yield changes
            changes, held = tables.Changes(), {}
    if held:
        yield changes


def _conflict(held: dict[Claim, bool], wanted: list[tuple[Claim, bool]]) -> bool:
    for key, exclusive in wanted:
        if key in held and (exclusive or held[key]):
            return True
    return False


def _pair(kind: str, a: str, b: str) -> Claim:
    return (kind, a, b) if a < b else (kind, b, a)


def claims(event: Event) -> list[tuple[Claim, bool]]:
    """The rows an event changes, as (key, exclusive); shared keys commute with each other."""
    match event:
        case identity.MemberRegistered(member_id=mid, account=acc):
            return [(("member", mid), True), (("account", identity.account_key(acc)), True)]
        case identity.NicknameChanged(member_id=mid) | identity.MemberErased(member_id=mid):
            return [(("member", mid), True)]
        case social.FriendAdded(member_id=a, friend_id=b):
            return [(_pair("pair", a, b), True)]
        case social.FriendRemoved(member_id=a, friend_id=b):
            return [(_pair("pair", a, b), True), (_pair("history", a, b), True)]
        case storage.BackupUploaded(version_id=vid) | storage.VersionDeleted(version_id=vid):
            return [(("version", vid), True)]
        case agency.AgencyEvent(agency_id=aid):
            # One event per agency in a segment: its access is the difference between
            # the states before and after it, at its own time.
            return [(("agency", aid), True)]
        case sharing.ShareGranted(owner_id=o, set_id=s, friend_id=f) | sharing.ShareRevoked(
                owner_id=o, set_id=s, friend_id=f):
            # The pair too: whether a grant counts depends on the friendship at its place
            # in the log, so it never shares a segment with that friendship's changes.
            return [(("share", o, s, f), True), (_pair("history", o, f), False),
                    (_pair("pair", o, f), False)]
        case _:
            return []


def collect(changes: tables.Changes, event: Event) -> None:
    """Add one event's changes to a segment."""
    match event:
        case identity.MemberRegistered(member_id=mid, account=acc, nickname=nick) if acc:
            changes.members.append(tables.Member(member_id=mid, account=acc, nickname=nick,
                                                account_key=identity.account_key(acc)))
        case identity.MemberRegistered():
            pass  # an erased member's (its names no longer open): gone from the directory
        case identity.MemberErased():
            changes.erased.append(event)
        case identity.NicknameChanged():
            changes.nicknames.append(event)
        case social.FriendAdded():
            changes.befriended.append(event)
        case social.FriendRemoved():
            changes.unfriended.append(event)
        case storage.BackupUploaded():
            changes.backups.append(event)
        case storage.VersionDeleted():
            changes.deleted.append(event)
        case sharing.ShareGranted():
            changes.grants.append(event)
        case sharing.ShareRevoked():
            changes.revokes.append(event)
        case agency.AgencyEvent():
            changes.agency.append(event)
        case _:
            pass
