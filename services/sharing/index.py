"""sharing's in-memory index: the access projection's tables, as the handlers ask them.

Kept by the leading access projector (`runtime.projector.Mirror`). A standby instance
(and any instance before its projector leads) has none and asks the tables
(`tables.active_grant`, `tables.grant_facts`) the same two questions; a property test
holds the two answers equal.
"""

from __future__ import annotations

import gc
from collections.abc import Mapping
from datetime import datetime
from types import MappingProxyType
from typing import NamedTuple

import asyncpg
import msgspec

from contracts import agency, identity, sharing, social, storage
from contracts.agency_state import AgencyState, evolve
from contracts.base import Event
from runtime.eventstore import StoredEvent
from services.sharing import tables
from services.sharing.projection import READS, decode
from services.sharing.tables import access_changes

_state = msgspec.json.Decoder(AgencyState)
AgencyTerms = dict[str, tuple[str, str]]  # agency id -> (reason, permission)


class GrantTerms(msgspec.Struct, frozen=True):
    """What a grant allows: the terms `domain.allows` weighs."""

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
        self.agencies: dict[str, AgencyState] = {}
        # (owner, set, member) -> the agencies that let member use it, and how.
        self.agency_access: dict[tuple[str, str, str], AgencyTerms] = {}
        self.agency_sets: dict[tuple[str, str], set[str]] = {}  # (owner, set) -> agencies

    async def reload(self, conn: asyncpg.Connection, schema: str) -> None:
        """Load everything from the tables (the projector holds the lead)."""
        self.grants = {}
        for g in await tables.every_grant(conn, schema):
            self.grants.setdefault((g["owner_id"], g["friend_id"]), {})[g["set_id"]] = (
                GrantTerms(g["permission"], g["years"], g["expires_at"]))
        self.friends = {(f["member_id"], f["friend_id"])
                        for f in await tables.every_friendship(conn, schema)}
        self.accounts = {d["account_key"]: d["member_id"]
                         for d in await tables.every_account(conn, schema)}
        self.members = set(self.accounts.values())
        self.versions, self.sets = {}, {}
        for b in await tables.every_backup(conn, schema):
            self._add_version(b["version_id"], SetVersion(b["owner_id"], b["set_id"],
                                                          b["uploaded_at"], b["set_name"]))
        self.agencies = {r["agency_id"]: _state.decode(r["state"])
                         for r in await tables.every_agency(conn, schema)}
        self.agency_access, self.agency_sets = {}, {}
        for a in await tables.every_agency_access(conn, schema):
            self._let(a["owner_id"], a["set_id"], a["member_id"], a["agency_id"],
                      (a["reason"], a["permission"]))
        # What was just loaded lives as long as the lead: out of the collector's sight, or
        # every full collection walks it (1.6-1.8 s over 1M grants, stalling every check).
        gc.freeze()

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
            case agency.AgencyEvent(agency_id=aid):
                self._agency(aid, event)
            case _:
                pass

    def _agency(self, agency_id: str, event: agency.AgencyEvent) -> None:
        """As `tables._agencies`: the access the event ended and began."""
        before = self.agencies.get(agency_id, AgencyState())
        after = self.agencies[agency_id] = evolve(before, event)
        ended, begun = access_changes(agency_id, before, after, event.at)
        for row in ended:
            self._unlet(row.owner_id, row.set_id, row.member_id, agency_id)
        for row in begun:
            self._let(row.owner_id, row.set_id, row.member_id, agency_id,
                      (row.reason, row.permission))

    def _let(self, owner_id: str, set_id: str, member_id: str, agency_id: str,
             terms: tuple[str, str]) -> None:
        self.agency_access.setdefault((owner_id, set_id, member_id), {})[agency_id] = terms
        self.agency_sets.setdefault((owner_id, set_id), set()).add(agency_id)

    def _unlet(self, owner_id: str, set_id: str, member_id: str, agency_id: str) -> None:
        key = (owner_id, set_id, member_id)
        terms = self.agency_access.get(key, {})
        terms.pop(agency_id, None)
        if not terms:
            self.agency_access.pop(key, None)
        # agency_sets keeps the agency: a set's agencies only narrow what to wait for.

    def through_agencies(self, member_id: str, owner_id: str, set_id: str) -> AgencyTerms:
        """How the agencies let member use (owner, set) (empty: they do not)."""
        return dict(self.agency_access.get((owner_id, set_id, member_id), {}))

    def agencies_of(self, owner_id: str, set_id: str) -> list[str]:
        """The agencies that gave (or give) access to (owner, set)."""
        return sorted(self.agency_sets.get((owner_id, set_id), ()))

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
