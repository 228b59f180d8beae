"""sharing's handlers: decode → load → decide → append → reply."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg
import msgspec

from contracts.agency import NoSuchAgency, agency_subjects
from contracts.identity import InvalidToken, account_key
from contracts.sharing import (
    AgencySets,
    AgencySetsRequest,
    AgencyWork,
    AnySharingEvent,
    Changed,
    Check,
    CloudShares,
    CloudSharesRequest,
    Grant,
    History,
    HistoryRequest,
    NoBackup,
    NotAFriend,
    Permission,
    Revoke,
    RevokeReason,
    Seen,
    SharedSet,
    SharedWith,
    ShareList,
    ShareListRequest,
    Sharer,
    ShareSet,
    ShareYear,
    SharingClient,
    SharingEvent,
    Verdict,
    share_id,
    share_subject,
    share_subjects,
)
from contracts.social import friendship_subjects, pair_id
from contracts.storage import VersionInfo
from runtime.coalesce import Coalesced
from runtime.commands import Command, Fold, Pipeline
from runtime.eventstore import EventStore, Outgoing, StoredEvent
from runtime.projector import Projector
from runtime.service import Call, Endpoint
from runtime.tokens import Sessions
from services.sharing import domain, tables
from services.sharing.domain import Share
from services.sharing.index import AccessIndex, AgencyTerms, GrantTerms

_decoder = msgspec.json.Decoder(AnySharingEvent)
SHARE: Fold[Share, SharingEvent] = Fold(_decoder, domain.evolve, Share())


class Sharing:
    """The sharing service's operations."""

    def __init__(self, events: EventStore, commands: Pipeline, pool: asyncpg.Pool,
                 access: Projector, sessions: Sessions, *, schema: str = "sharing",
                 index: AccessIndex | None = None) -> None:
        self.events = events
        self.commands = commands
        self.pool = pool
        self.access = access
        self.sessions = sessions
        self.index = index
        self.schema = schema
        # The log's end, asked once for all the requests that want it at once.
        self._log_end = Coalesced(self._ask_log_end)

    def endpoints(self) -> list[Endpoint[Any, Any]]:
        """Every operation of the service, each with its handler."""
        return [
                Endpoint(SharingClient.grant, self.grant),
                Endpoint(SharingClient.revoke, self.revoke),
                Endpoint(SharingClient.check, self.check),
                Endpoint(SharingClient.shares, self.shares),
                Endpoint(SharingClient.cloud_shares, self.cloud_shares),
                Endpoint(SharingClient.history, self.history),
                Endpoint(SharingClient.agency_sets, self.agency_sets),
        ]

    # ---- helpers ------------------------------------------------------------------------

    async def _caught_up(self, seq: int) -> None:
        """Wait for the projection: to the caller's token (never past the log's end), or
        to the log's end when none is given."""
        await self.access.wait_until(await self._capped(seq) if seq
                                     else await self._log_end())

    async def _capped(self, seq: int) -> int:
        """A caller's token, no further than the log's end: the projector takes a token
        it has reached as proof that nothing it needs lies below it, so a token from the
        future would have it vouch for events not written yet (every later answer stale)."""
        if seq <= self.access.position:
            return seq
        return min(seq, await self._log_end())

    async def _listed(self) -> None:
        """Wait for the projection to reach the log's end: a list rests on too many
        aggregates to name, and a revoke that has answered must be honoured by it,
        whatever token the caller sends."""
        await self.access.wait_until(await self._log_end())

    async def _checked(self, req: Check) -> bool:
        """Wait until the projection holds the last event of the share, the friendship
        and each agency a check rests on, and the caller's token (capped at the log's end).

        Usually the projection holds the whole log, which one question shared by all
        concurrent checks tells; only when the log has moved past it are those
        aggregates' last events asked for (direct gets, at once). An owner's check waits
        for the log's end: a handover that took their set may rest on a marking the
        projection has not seen, so no aggregate to wait for is known. Says whether the
        projection held the whole log (False: only what the check rests on)."""
        if await self.access.caught_up():
            return True
        if req.member_id == req.owner_id:
            await self._listed()
            return True
        agencies = await self._agencies_of(req.owner_id, req.set_id)
        lasts = await asyncio.gather(
            self.events.last_on(share_subjects(share_id(req.owner_id, req.set_id))),
            self.events.last_on(friendship_subjects(pair_id(req.owner_id, req.member_id))),
            *(self.events.last_on(agency_subjects(a)) for a in agencies))
        await self.access.wait_until(max(*map(_seq, lasts), await self._capped(req.seq)))
        return False

    async def _agencies_of(self, owner: str, set_id: str) -> list[str]:
        if (index := self._leading_index()) is not None:
            return index.agencies_of(owner, set_id)
        return await tables.agencies_of(self.pool, self.schema, owner, set_id)

    async def _through(self, member: str, owner: str, set_id: str) -> AgencyTerms:
        """How agencies let member use (owner, set): agency id -> (reason, permission)."""
        if (index := self._leading_index()) is not None:
            return index.through_agencies(member, owner, set_id)
        return await tables.through_agencies(self.pool, self.schema, member, owner, set_id)

    async def _ask_log_end(self) -> int:
        # ">" is the server's shortcut to the stream's last message: one direct get, no
        # stream info to build and parse.
        return _seq(await self.events.last_on(">"))

    def _leading_index(self) -> AccessIndex | None:
        """The in-memory index while this instance's projector leads (a standby asks the
        tables instead)."""
        return self.index if self.access.active else None

    async def _member(self, session: str, call: Call) -> str:
        return await self.sessions.member(session, now=call.received_at)

    async def _unlocked(self, member: str, drive_token: str, call: Call) -> None:
        """Cloud Share opens with the caller's own drive token (the cloud-drive password),
        as storage's downloads and uploads do."""
        drive = await self.sessions.drive(drive_token, now=call.received_at)
        if drive.sub != member:
            raise InvalidToken("that drive token belongs to another member")

    def _outs(self, sid: str, events: Sequence[SharingEvent]) -> list[Outgoing]:
        return [Outgoing(subject=share_subject(sid, e), event=e) for e in events]

    async def _grant_facts(self, owner: str, set_id: str,
                           accounts: list[str]) -> tuple[str, list[str]]:
        """The set's name and the friends' member ids, in one query; refuses a set with no
        backup and anyone who is not the owner's friend."""
        keys = [account_key(a) for a in accounts]
        if (index := self._leading_index()) is not None:
            name, found = index.grant_facts(owner, set_id, keys)
        else:
            name, found = await tables.grant_facts(self.pool, self.schema, owner, set_id, keys)
        if name is None:
            raise NoBackup("that account set has no cloud backup in your drive; upload a "
                           "cloud backup first")
        for account, member_id in zip(accounts, found, strict=True):
            if member_id is None:
                raise NotAFriend(f"{account} is not your friend; add them as a friend first")
        return name, [m for m in found if m is not None]

    # ---- commands -----------------------------------------------------------------------

    async def grant(self, req: Grant, call: Call) -> Changed:
        owner = await self._member(req.session, call)
        await self._caught_up(req.seq)
        name, friend_ids = await self._grant_facts(owner, req.set_id, req.friends)
        sid = share_id(owner, req.set_id)

        async def last() -> tuple[Share, int]:
            # A grant replaces any earlier terms: it needs the share's last sequence for
            # its OCC check, not the share's state.
            return Share(), await self.events.expected_last(share_subjects(sid))

        def decide(_: Share) -> list[Outgoing]:
            return self._outs(sid, domain.decide_grant(
                owner_id=owner, set_id=req.set_id, set_name=name, friend_ids=friend_ids,
                permission=req.permission, years=req.years, expires_at=req.expires_at,
                at=call.received_at))

        async def body(cmd: Command) -> Changed:
            step = await self.commands.step(cmd, share_subjects(sid), SHARE, decide, load=last)
            return Changed(friends=list(req.friends), seq=step.seq)

        return await self.commands.run("grant", req, caller=owner,
                                       correlation_id=call.correlation_id,
                                       client_address=call.client_address, body=body)

    async def revoke(self, req: Revoke, call: Call) -> Changed:
        owner = await self._member(req.session, call)
        await self._caught_up(req.seq)
        friend_id = None
        if req.friend is not None:
            row = await tables.member_by_account(self.pool, self.schema, account_key(req.friend))
            friend_id = str(row["member_id"]) if row else "unknown"

        async def body(cmd: Command) -> Changed:
            seq = await self._revoke(cmd, owner, req.set_id, friend_id, call,
                                       reason="owner")
            return Changed(friends=[req.friend] if req.friend else [], seq=seq)

        return await self.commands.run("revoke", req, caller=owner,
                                       correlation_id=call.correlation_id,
                                       client_address=call.client_address, body=body)

    async def revoke_for(self, owner: str, set_id: str, friend_id: str | None, msg_id: str,
                         call: Call, *, reason: RevokeReason) -> int:
        """Revoke one friend (or all) from one set as the system (a policy), under its own
        id ``msg_id``; returns the consistency seq."""
        cmd = self.commands.internal(msg_id, correlation_id=call.correlation_id,
                                     actor="sharing")
        return await self._revoke(cmd, owner, set_id, friend_id, call, reason=reason)

    async def _revoke(self, cmd: Command, owner: str, set_id: str, friend_id: str | None,
                      call: Call, *, reason: RevokeReason) -> int:
        sid = share_id(owner, set_id)
        step = await self.commands.step(cmd, share_subjects(sid), SHARE, lambda share: self._outs(
            sid, domain.decide_revoke(share, owner_id=owner, set_id=set_id,
                                      friend_id=friend_id, at=call.received_at,
                                      reason=reason)))
        return step.seq

    # ---- queries ------------------------------------------------------------------------

    async def check(self, req: Check, call: Call) -> Verdict:
        whole = await self._checked(req)
        through = await self._through(req.member_id, req.owner_id, req.set_id)
        if req.member_id == req.owner_id:
            allowed, reason = domain.owner_allows(through)
            return Verdict(allowed=allowed, reason=reason)
        terms = await self._terms(req)
        shared, reason = (False, "not shared") if terms is None else domain.allows(
            permission=terms.permission, years=terms.years, expires_at=terms.expires_at,
            year=req.year, access=req.access, now=call.received_at)
        if shared:
            # An owner's shares go with the set when an agency hands it over; that the
            # owner still holds it rests on the whole log (the handover's agency may be
            # one the projection has not seen marking the set yet).
            if not whole:
                await self._listed()
            held, why = domain.owner_allows(
                await self._through(req.owner_id, req.owner_id, req.set_id))
            shared, reason = (True, reason) if held else (False, why)
        if shared or not through:
            return Verdict(allowed=shared, reason=reason)
        allowed, why = domain.agency_allows(through, access=req.access)
        return Verdict(allowed=allowed, reason=why)

    async def _terms(self, req: Check) -> GrantTerms | None:
        if (index := self._leading_index()) is not None:
            return index.lookup(req.member_id, req.owner_id, req.set_id)
        row = await tables.active_grant(self.pool, self.schema, req.member_id, req.owner_id,
                                       req.set_id)
        return None if row is None else GrantTerms(row["permission"], row["years"],
                                                    row["expires_at"])

    async def shares(self, req: ShareListRequest, call: Call) -> ShareList:
        owner = await self._member(req.session, call)
        await self._listed()
        rows = [r for r in await tables.owner_shares(self.pool, self.schema, owner)
                if _live(r, call.received_at)]
        sets: dict[str, SharedSet] = {}
        for r in rows:
            entry = sets.setdefault(r["set_id"], SharedSet(set_id=r["set_id"],
                                                           set_name=r["set_name"], friends=[]))
            entry.friends.append(SharedWith(
                account=r["account"], nickname=r["nickname"], since=r["since"],
                permission=r["permission"], years=r["years"], expires_at=r["expires_at"]))
        friends = {r["friend_id"] for r in rows}
        summary = f"{len(sets)} account set(s) shared with {len(friends)} friend(s)"
        return ShareList(sets=list(sets.values()), summary=summary)

    async def cloud_shares(self, req: CloudSharesRequest, call: Call) -> CloudShares:
        member = await self._member(req.session, call)
        await self._unlocked(member, req.drive_token, call)
        await self._listed()
        sharers: dict[str, Sharer] = {}
        for r in await tables.shared_with(self.pool, self.schema, member):
            if not _live(r, call.received_at):
                continue
            sharer = sharers.setdefault(r["owner_id"], Sharer(
                owner_id=r["owner_id"], account=r["account"], nickname=r["nickname"], sets=[]))
            sharer.sets.append(await self._share_set(r))
        return CloudShares(sharers=list(sharers.values()))

    async def _share_set(self, grant: asyncpg.Record) -> ShareSet:
        return ShareSet(set_id=grant["set_id"], set_name=grant["set_name"],
                        permission=grant["permission"],
                        years=await self._years(grant["owner_id"], grant["set_id"],
                                                grant["years"]))

    async def _years(self, owner: str, set_id: str,
                     only: list[int] | None = None) -> list[ShareYear]:
        """A set's years (those in ``only``, when given), each with its versions."""
        years: dict[int, list[VersionInfo]] = {}
        for b in await tables.backups_of(self.pool, self.schema, owner, set_id):
            if only is None or b["year"] in only:
                years.setdefault(b["year"], []).append(_version(b))
        return [ShareYear(year=y, versions=v) for y, v in sorted(years.items())]

    async def history(self, req: HistoryRequest, call: Call) -> History:
        owner = await self._member(req.session, call)
        await self._listed()
        shared = await tables.could_see(self.pool, self.schema, owner, req.set_id, req.at)
        agencies = await tables.seen_through_agencies(self.pool, self.schema, owner,
                                                      req.set_id, req.at)
        if any(r["reason"] == "handed over" for r in agencies):
            shared = []  # handed over then: the owner's shares did not count
        seen = [Seen(account=a, reason="shared") for a in shared] + [
            Seen(account=r["account"], reason=f"{r['reason']} of {r['name']}")
            for r in agencies if r["reason"] != "handed over" and r["account"]]
        return History(accounts=sorted({s.account for s in seen}),
                       seen=sorted(seen, key=lambda s: (s.account, s.reason)))

    async def agency_sets(self, req: AgencySetsRequest, call: Call) -> AgencySets:
        """The agency's sets the caller may use through it, by keeper, set and year."""
        member = await self._member(req.session, call)
        await self._unlocked(member, req.drive_token, call)
        await self._listed()
        rows = await tables.agency_work(self.pool, self.schema, member, req.agency_id)
        if not rows and not await tables.in_agency(self.pool, self.schema, member,
                                                   req.agency_id):
            raise NoSuchAgency("no such agency, or you are not in it")
        return AgencySets(sets=[await self._agency_work(r) for r in rows
                                if r["set_name"] is not None])

    async def _agency_work(self, row: asyncpg.Record) -> AgencyWork:
        return AgencyWork(owner_id=row["owner_id"], owner=row["owner"], keeper=row["keeper"],
                          set_id=row["set_id"], set_name=row["set_name"],
                          reason=row["reason"], permission=_permission(row["permission"]),
                          years=await self._years(row["owner_id"], row["set_id"]))


def _seq(event: StoredEvent | None) -> int:
    return 0 if event is None else event.seq


def _permission(granted: str) -> Permission:
    return "read-write" if granted == "read-write" else "read-only"


def _live(row: asyncpg.Record, now: datetime) -> bool:
    expires: datetime | None = row["expires_at"]
    return expires is None or now < expires


def _version(b: asyncpg.Record) -> VersionInfo:
    return VersionInfo(version_id=b["version_id"], set_id=b["set_id"], set_name=b["set_name"],
                       year=b["year"], period=b["period"], remark=b["remark"],
                       uploader_id=b["uploader_id"], uploaded_at=b["uploaded_at"],
                       size=b["size"], sha256=b["sha256"], base_version=b["base_version"],
                       conflict_with=b["conflict_with"])
