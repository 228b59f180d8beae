"""sharing's projection.

`AccessProjection` keeps who can see and write which (owner, set, year) from sharing's
own events plus social's (friendships), storage's (which set-years exist, versions) and
identity's (names). A grant counts only between friends, in log order: an unfriending
ends every grant between the two at once, and a friendship made again brings none back.
`AccessIndex` is its in-memory copy. (The unfriend policy, which turns FriendRemoved into
ShareRevoked events for the aggregates and the audit trail, is `policy.py`.)
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from types import MappingProxyType
from typing import Any, NamedTuple, TypeAlias

import asyncpg
import msgspec

from contracts import identity, sharing, social, storage
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
    identity.NicknameChanged))


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
        if _conflict(held, wanted):
            yield changes
            changes, held = tables.Changes(), {}
        for key, exclusive in wanted:
            held[key] = held.get(key, False) or exclusive
        collect(changes, event)
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
        case identity.NicknameChanged(member_id=mid):
            return [(("member", mid), True)]
        case social.FriendAdded(member_id=a, friend_id=b):
            return [(_pair("pair", a, b), True)]
        case social.FriendRemoved(member_id=a, friend_id=b):
            return [(_pair("pair", a, b), True), (_pair("history", a, b), True)]
        case storage.BackupUploaded(version_id=vid) | storage.VersionDeleted(version_id=vid):
            return [(("version", vid), True)]
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
        case identity.MemberRegistered(member_id=mid, account=acc, nickname=nick):
            changes.members.append(tables.Member(member_id=mid, account=acc, nickname=nick,
                                                account_key=identity.account_key(acc)))
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
        case _:
            pass


class GrantTerms(msgspec.Struct, frozen=True):
    permission: str
    years: list[int] | None
    expires_at: datetime | None


_NO_GRANTS: Mapping[str, GrantTerms] = MappingProxyType({})


class AccessIndex:
    """In memory: every grant and friendship, the directory's accounts and the backups'
    set names, so a check or a grant needs no query.

    The access projector keeps it (runtime.projector.Mirror): loaded from the tables when
    it takes the lead, then following each committed batch, so after `wait_until(token)`
    it answers as the tables would (an insert the tables refused, a second member with one
    account or a second backup with one version id, is refused here too).
    """

    def __init__(self) -> None:
        # (owner, friend) -> set id -> terms: an unfriending drops a pair's grants at once.
        self.grants: dict[tuple[str, str], dict[str, GrantTerms]] = {}
        self.friends: set[tuple[str, str]] = set()
        self.accounts: dict[str, str] = {}  # account key -> member id
        self.members: set[str] = set()
        self.versions: dict[str, SetVersion] = {}
        self.sets: dict[tuple[str, str], set[str]] = {}  # (owner, set) -> version ids

    async def reload(self, conn: asyncpg.Connection, schema: str) -> None:
        grants = await conn.fetch(f"SELECT owner_id, set_id, friend_id, permission, years, "
                                  f"expires_at FROM {schema}.grants")
        friends = await conn.fetch(f"SELECT member_id, friend_id FROM {schema}.friends")
        self.grants = {}
        for g in grants:
            self.grants.setdefault((g["owner_id"], g["friend_id"]), {})[g["set_id"]] = (
                GrantTerms(g["permission"], g["years"], g["expires_at"]))
        self.friends = {(f["member_id"], f["friend_id"]) for f in friends}
        directory = await conn.fetch(f"SELECT member_id, account_key FROM {schema}.directory")
        self.accounts = {d["account_key"]: d["member_id"] for d in directory}
        self.members = set(self.accounts.values())
        self.versions, self.sets = {}, {}
        for b in await conn.fetch(f"SELECT version_id, owner_id, set_id, uploaded_at, "
                                  f"set_name FROM {schema}.backups"):
            self._add_version(b["version_id"], SetVersion(b["owner_id"], b["set_id"],
                                                          b["uploaded_at"], b["set_name"]))

    def applied(self, events: list[StoredEvent]) -> None:
        for stored in events:
            if stored.type not in READS:
                continue
            try:
                event = decode(stored)
            except msgspec.DecodeError:
                continue  # parked as a dead letter by the projection too
            self._follow(event)

    def _follow(self, event: Event) -> None:
        match event:
            case sharing.ShareGranted(owner_id=o, set_id=s, friend_id=f) if (
                    (o, f) in self.friends):
                self.grants.setdefault((o, f), {})[s] = GrantTerms(
                    event.permission, event.years, event.expires_at)
            case sharing.ShareRevoked(owner_id=o, set_id=s, friend_id=f):
                self._revoke(o, s, f)
            case social.FriendAdded(member_id=a, friend_id=b):
                self.friends |= {(a, b), (b, a)}
            case social.FriendRemoved(member_id=a, friend_id=b):
                self.friends -= {(a, b), (b, a)}
                self.grants.pop((a, b), None)
                self.grants.pop((b, a), None)
            case identity.MemberRegistered(member_id=mid, account=acc):
                key = identity.account_key(acc)
                if key not in self.accounts and mid not in self.members:
                    self.accounts[key] = mid
                    self.members.add(mid)
            case storage.BackupUploaded(version_id=vid) if vid not in self.versions:
                self._add_version(vid, SetVersion(event.owner_id, event.set_id, event.at,
                                                  event.set_name))
            case storage.VersionDeleted(version_id=vid) if vid in self.versions:
                gone = self.versions.pop(vid)
                self.sets[(gone.owner_id, gone.set_id)].discard(vid)
            case _:
                pass

    def _revoke(self, owner_id: str, set_id: str, friend_id: str) -> None:
        sets = self.grants.get((owner_id, friend_id))
        if sets is not None:
            sets.pop(set_id, None)
            if not sets:  # as a reload would leave it
                del self.grants[(owner_id, friend_id)]

    def _add_version(self, version_id: str, version: SetVersion) -> None:
        self.versions[version_id] = version
        self.sets.setdefault((version.owner_id, version.set_id), set()).add(version_id)

    def lookup(self, member_id: str, owner_id: str, set_id: str) -> GrantTerms | None:
        """The grant of (owner, set) to member, only while the two are friends."""
        if (owner_id, member_id) not in self.friends:
            return None
        return self.grants.get((owner_id, member_id), _NO_GRANTS).get(set_id)

    def grant_facts(self, owner_id: str, set_id: str,
                    account_keys: list[str]) -> tuple[str | None, list[str | None]]:
        """As `tables.grant_facts`: the set's newest backup's name, and per account the
        member id of that friend of the owner."""
        versions = [self.versions[v] for v in self.sets.get((owner_id, set_id), ())]
        name = max(versions, key=lambda v: v.uploaded_at).set_name if versions else None
        found = [self.accounts.get(key) for key in account_keys]
        return name, [m if m is not None and (owner_id, m) in self.friends else None
                      for m in found]


class SetVersion(NamedTuple):
    owner_id: str
    set_id: str
    uploaded_at: datetime
    set_name: str
