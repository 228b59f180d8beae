"""The stateful property test of issue 12: random interleavings against real servers.

A hypothesis `RuleBasedStateMachine` drives three fresh members per example (some friends
from the start, each with a small quota and one backup) through: friend add and remove
(also removed and added back at once), uploads of new random bytes by the owner or by a
sharee into the owner's drive (with the begin and the completion sent twice, as after a
lost reply), uploads of bytes a drive already holds, re-PUTs to an upload's URLs after
it was verified, grants (permission, years, expiry: none, a day, five seconds, past, naive),
revokes of one friend or everyone, sharee downloads, every acknowledged command repeated
with its command id and content, its id reused with other content, and ids borrowed from
another member's or another operation's command. Rules that act on an existing share
pick it from the grants made so far, so few steps reach the interesting states.

Bookkeeping agencies (issue 16) beside them: most examples start with one (an
administrator, staff invited as supervisors or accountants who accept or not, sets marked,
a supervision), and the rules create more, invite (and accept at once or never), accept,
leave, remove, change roles, assign and end supervision, mark and unmark sets, hand sets
over, change the supervisors-write setting and close, each from the administrator or
from someone else (refusals), and download and upload through the access an agency gives.
Right after an agency command that took access away (a leave, a removal, a handover,
...), sharing and storage must refuse it at once, with no token. Access an agency has just
given may show late to a check without a token (sharing learns which agencies a set rests
on from its projection): a check that refuses it is asked again with the example's token.

`sharing_model.Model` says what each command must come to; after every step:

- `sharing.check` answers, for every member, owner, set, year and access, what the model
  allows: an active grant and an active friendship, within permission, years and expiry,
  or what an agency gives (`sharing_model.Agency`); an owner, unless an agency handed the
  set to someone else;
- every verified version downloads with the SHA-256 it was verified with;
- no drive uses more than its quota (nor less than its distinct content, nor more than
  all its versions);
- the log holds exactly the events the acknowledged commands must have appended, per kind
  (a repeat or a refused command appends nothing);

and at the end of each example every read model equals its replica (the same projection
run from sequence 1 beside it), and at the end of the test an operator's rebuild of each.

The servers (NATS, PostgreSQL, S3, the four services) are shared by the examples; each
example registers new members, so worlds never meet. The machine runs in a worker thread
and each step runs on the test's event loop, where the services live. About a minute on
two cores when it passes; a failure is shrunk (up to hypothesis' five minutes) and printed
as the steps that make it.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import aiohttp
import asyncpg
import msgspec
import nats
import pytest
from hypothesis import note, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)
from nats.aio.client import Client as NATS

from contracts.agency import (
    AgencyChanged,
    AgencyCommand,
    ChangeRole,
    ChangeSettings,
    CreateAgency,
    HandOver,
    Invite,
    MarkSet,
    MemberCommand,
    NoSuchAgency,
    NotInvited,
    Supervision,
)
from contracts.base import CommandReply, Reply, Request
from contracts.errors import CommandReused, LedgerError
from contracts.sharing import Access, Changed, Check, Grant, NotShared, Permission, Revoke
from contracts.social import AddFriend, AlreadyFriends, FriendChanged, NotFriends, RemoveFriend
from contracts.storage import (
    BeginUpload,
    CompleteUpload,
    DownloadRequest,
    DownloadTicket,
    DriveRequest,
    NoAccess,
    NoSuchUpload,
    QuotaExceeded,
    Uploaded,
    UploadPlan,
)
from runtime.app import create_pool
from runtime.eventstore import EventStore
from runtime.settings import Settings
from tests.helpers import cid
from tests.integration import agency_model
from tests.integration.agency_model import AGENCY_KINDS, Decision
from tests.integration.model_support import (
    REPLAYED,
    Bridge,
    Member,
    Replicas,
    System,
    attempt,
    fetch,
    join,
    logged,
    outcome,
    put_parts,
    quiet,
    replay_differences,
    replica_differences,
    unfriend_revokes,
)
from tests.integration.sharing_model import (
    QUOTA,
    SETS,
    YEARS,
    Expected,
    Model,
    Refusals,
    StaffRole,
    Stored,
    Terms,
    Triple,
    sha,
)
from tests.services import all_builds, running, service_settings

MEMBERS = 3
PAIRS = tuple((a, b) for a in range(MEMBERS) for b in range(MEMBERS) if a != b)
ACCESSES: tuple[Access, ...] = ("read", "write")
Expiry = Literal["none", "day", "soon", "past", "naive"]
# Mostly grants that hold; an expiry in the past or without a time zone is refused.
EXPIRIES: tuple[Expiry, ...] = ("none", "day", "soon", "none", "day", "soon", "past", "naive")
SOON = timedelta(seconds=5)
ACCEPTED = Expected()
PICK = st.integers(0, 11)  # which of the grants, versions or upload plans so far
SETTLE_S = 8.0  # how long the unfriend policy's revokes may take to land
KINDS = ("MemberRegistered", "AccountClaimed", "DrivePasswordSet", "DriveUnlocked",
         "DriveUnlockFailed", "QuotaChanged", "FriendAdded", "FriendRemoved", "ShareGranted",
         "ShareRevoked/owner", "ShareRevoked/unfriended", "UploadReserved", "BackupUploaded",
         "UploadAborted", "DownloadIssued", *AGENCY_KINDS)
MEMBER = st.integers(0, MEMBERS - 1)
BY = st.integers(0, MEMBERS + 1)  # who sends an administrator's command: MEMBERS up, the admin
WHO = st.integers(0, 2 * MEMBERS - 1)  # MEMBERS up: one the command fits, when there is one
ROLES: st.SearchStrategy[StaffRole] = st.sampled_from(("accountant", "supervisor"))
AGENCY_OPS = ("create_agency", "invite_to_agency", "accept_invitation", "leave_agency",
              "remove_from_agency", "change_agency_role", "assign_supervision",
              "end_supervision", "mark_agency_set", "unmark_agency_set", "hand_over",
              "agency_settings", "close_agency")


Ask = tuple[int, int, str, int, Access]  # (member, owner, set, year, access)
ASKS: tuple[Ask, ...] = tuple((m, o, s, y, a) for m in range(MEMBERS) for o in range(MEMBERS)
                              for s in SETS for y in YEARS for a in ACCESSES)


@dataclass(frozen=True)
class Share:
    """What a grant asks: an owner, a set, who (the next one or two members round the
    circle) and on what terms."""

    owner: int
    set_id: str
    others: tuple[int, ...]
    permission: Permission
    years: tuple[int, ...] | None
    expiry: Expiry


SHARES = st.builds(
    Share, owner=st.integers(0, MEMBERS - 1), set_id=st.sampled_from(SETS),
    others=st.sampled_from(((1,), (2,), (1, 2))),
    permission=st.sampled_from(("read-write", "read-only")),
    years=st.none() | st.sampled_from(((YEARS[0],), (YEARS[1],), YEARS)),
    expiry=st.sampled_from(EXPIRIES))


@dataclass(frozen=True)
class Staffing:
    """The agency an example starts with: its administrator; for each of the two others
    (the next round the circle first), the role they are invited as (None: not invited)
    and whether they accept; the sets each marks if they joined as an accountant; whether
    a supervisor who joined oversees an accountant who did; whether the first set marked
    is handed to the other accountant, if both joined as accountants; and whether
    supervisors may write. (Most examples start with a working agency: the rules alone
    would seldom build one in the steps an example has.)"""

    admin: int
    roles: tuple[StaffRole | None, StaffRole | None]
    accept: tuple[bool, bool]
    marks: tuple[tuple[str, ...], tuple[str, ...]]
    oversee: bool
    hand_over: bool
    supervisors_write: bool


_ROLE: st.SearchStrategy[StaffRole | None] = st.sampled_from(
    ("accountant", "accountant", "supervisor", None))
_ACCEPT = st.sampled_from((True, True, True, False))
_MARKS = st.sampled_from(((SETS[0],), (SETS[1],), SETS, ()))
_STAFFED = st.builds(
    Staffing, admin=MEMBER, roles=st.tuples(_ROLE, _ROLE), accept=st.tuples(_ACCEPT, _ACCEPT),
    marks=st.tuples(_MARKS, _MARKS), oversee=st.booleans(), hand_over=st.booleans(),
    supervisors_write=st.booleans())
STAFFING = st.one_of(st.none(), *[_STAFFED] * 4)


@dataclass(frozen=True)
class Sent:
    """An acknowledged command: who sent what, and what it answered."""

    op: str
    caller: int
    request: Any  # the exact request Struct
    reply: Any  # its reply Struct
    target: tuple[Any, ...] = ()  # uploads, downloads: (owner, set, year); grants: friends
    data: bytes = b""  # an upload's bytes


class ShareMachine(RuleBasedStateMachine):
    """Members, friendships, drives and shares, compared with the model after every step."""

    def __init__(self, system: System, bridge: Bridge) -> None:
        super().__init__()
        self.system, self.bridge = system, bridge
        self.model = Model(MEMBERS)
        self.members: list[Member] = []
        self.ids: list[tuple[str, int, str]] = []  # (operation, caller, command id) used
        self.notes: list[str] = []  # said on the loop, printed from hypothesis' thread
        self.acked: list[Sent] = []  # every command acknowledged
        self.plans: list[Sent] = []  # every begin_upload answered, with its URLs
        self.agency_ids: list[str] = []  # the model's agencies' ids, in the same order
        # The last agency command's consistency token. Access an agency has just given
        # may show only once sharing's projection reaches it (eventual, as a client that
        # holds no token sees it); what an agency command took away, at once, whatever
        # token is sent. So checks and transfers that expect access carry this token.
        self.token = 0
        self.clean = True

    def run(self, coro: Awaitable[Any]) -> Any:
        """Run one step's coroutine on the loop; a step that raised leaves ``clean`` off."""
        self.clean = False

        async def step() -> Any:
            return await coro

        try:
            result = self.bridge.run(step())
        finally:
            for said in self.notes:
                note(said)  # hypothesis prints these with the failing steps
            self.notes.clear()
        self.clean = True
        return result

    # ---- helpers ------------------------------------------------------------------------

    def _command_id(self, op: str, caller: int, borrow: bool) -> str:
        """A fresh id, or (``borrow``) one another member or operation already used: the
        server must scope ids by caller and operation, so it is a new command."""
        mine = {i for o, c, i in self.ids if (o, c) == (op, caller)}
        others = [i for o, c, i in self.ids if (o, c) != (op, caller) and i not in mine]
        chosen = others[-1] if borrow and others else cid()
        if chosen in others:
            used = [f"{o} by member {c}" for o, c, i in self.ids if i == chosen]
            self.notes.append(f"{op} by member {caller} borrows the command id of "
                              f"{', '.join(used)}")
        self.ids.append((op, caller, chosen))
        return chosen

    def _send(self, op: str, request: Any) -> Awaitable[Reply]:
        s = self.system
        calls: dict[str, Callable[[Any], Awaitable[Reply]]] = {
            "add_friend": s.social.add_friend, "remove_friend": s.social.remove_friend,
            "grant": s.sharing.grant, "revoke": s.sharing.revoke,
            "download": s.storage.download, "begin_upload": s.storage.begin_upload,
            "complete_upload": s.storage.complete_upload}
        calls.update({o: getattr(s.social, o) for o in AGENCY_OPS})
        return calls[op](request)

    async def _expect(self, request: Request, call: Awaitable[Reply],
                      expected: Expected = ACCEPTED) -> Reply | None:
        """The reply when the model allows one; None after a refusal the model expects."""
        got = await attempt(call)
        what = f"{type(request).__name__}: {outcome(got)}"
        if isinstance(got, LedgerError):
            assert isinstance(got, expected.refuse + expected.maybe), (
                f"unexpected refusal of {what}")
            return None
        assert not expected.refuse, (
            f"expected a refusal ({[r.code for r in expected.refuse]}) of {what}")
        return got

    def _act(self, coro: Awaitable[list[Sent]]) -> None:
        """Run a step; keep the commands it had acknowledged, to send again later."""
        self.acked += self.run(coro)

    def _granted(self, pick: int) -> Triple | None:
        """One of the grants the model holds, (owner, set, friend), if there is one.
        (Picked by number, not by precondition or bundle: whether a grant still holds
        can depend on the clock, and hypothesis' choices must not.)"""
        grants = sorted(self.model.grants)
        return grants[pick % len(grants)] if grants else None

    # ---- setup --------------------------------------------------------------------------

    @initialize(shares=st.lists(SHARES, max_size=2), staffing=STAFFING)
    def members_join(self, shares: list[Share], staffing: Staffing | None) -> None:
        """Three new members, each with a drive password, a small quota and a backup of
        each set (alpha 2018, beta 2019), all friends, some shares already, and mostly
        an agency."""
        self._act(self._join(shares, staffing))

    async def _join(self, shares: list[Share], staffing: Staffing | None) -> list[Sent]:
        tag = uuid.uuid4().hex[:10]
        self.members = list(await asyncio.gather(*(
            join(self.system, f"m{i}-{tag}", f"Member{i}") for i in range(MEMBERS))))
        for kind in ("MemberRegistered", "AccountClaimed", "DrivePasswordSet",
                     "DriveUnlocked", "QuotaChanged"):
            self.model.events[kind] += MEMBERS
        # Once social's directory knows them, friends can be added.
        await self.system.projected(await self.system.events.last_sequence())
        uploads = await asyncio.gather(*(
            self._upload(i, i, s, y, os.urandom(3000), borrow=False)
            for i in range(MEMBERS) for s, y in zip(SETS, YEARS, strict=True)))
        friends = [await self._befriend(a, (a + 1) % MEMBERS, False) for a in range(MEMBERS)]
        granted = [await self._grant(share, False) for share in shares]
        staffed = [] if staffing is None else await self._staff(staffing)
        return [sent for sents in [*uploads, *friends, *granted, staffed] for sent in sents]

    async def _staff(self, staffing: Staffing) -> list[Sent]:
        admin = staffing.admin
        sent = await self._create(admin, False)
        agency = len(self.agency_ids) - 1
        joined: dict[int, StaffRole] = {}
        for k, role, accepts, marks in zip((1, 2), staffing.roles, staffing.accept,
                                           staffing.marks, strict=True):
            member = (admin + k) % MEMBERS
            if role is None:
                continue
            sent += await self._invite(agency, admin, member, role, False)
            if not accepts:
                continue
            sent += await self._accept(agency, member, False)
            joined[member] = role
            for set_id in marks if role == "accountant" else ():
                sent += await self._mark(agency, member, set_id, False, False)
        supervisors = [m for m, r in joined.items() if r == "supervisor"]
        accountants = [m for m, r in joined.items() if r == "accountant"]
        if staffing.oversee and supervisors and accountants:
            sent += await self._supervision(agency, admin, supervisors[0], accountants[0],
                                            False, False)
        marked = sorted(self.model.agencies[agency].work)
        if staffing.hand_over and len(accountants) == 2 and marked:
            owner, set_id = marked[0]
            to = next(a for a in accountants if a != owner)
            sent += await self._hand_over(agency, admin, owner, set_id, to, False)
        if staffing.supervisors_write:
            sent += await self._settings(agency, admin, True, False)
        return sent

    # ---- friends ------------------------------------------------------------------------

    @rule(pair=st.sampled_from(PAIRS), borrow=st.booleans())
    def befriend(self, pair: tuple[int, int], borrow: bool) -> None:
        """A adds B (account and the right nickname)."""
        self._act(self._befriend(*pair, borrow))

    async def _befriend(self, a: int, b: int, borrow: bool) -> list[Sent]:
        friend = self.members[b]
        req = AddFriend(command_id=self._command_id("add_friend", a, borrow),
                        session=self.members[a].session, account=friend.account,
                        nickname=friend.nickname)
        refuse = (AlreadyFriends,) if self.model.are_friends(a, b) else ()
        reply = await self._expect(req, self.system.social.add_friend(req), Expected(refuse))
        if reply is None:
            return []
        self.model.friends.add(frozenset((a, b)))
        self.model.events["FriendAdded"] += 1
        return [Sent("add_friend", a, req, reply)]

    @rule(pair=st.sampled_from(PAIRS), add_back=st.booleans(),
          borrow=st.booleans())
    def unfriend(self, pair: tuple[int, int], add_back: bool,
                 borrow: bool) -> None:
        """A removes B (and B at once adds A back): every grant between the two ends for
        good."""
        self._act(self._unfriend(*pair, borrow, add_back=add_back))

    @rule(pick=PICK, by_owner=st.booleans(), add_back=st.booleans())
    def unfriend_sharing(self, pick: int, by_owner: bool,
                         add_back: bool) -> None:
        """An owner and a friend a set was shared with part (either removes the other)."""
        if (granted := self._granted(pick)) is not None:
            owner, _, friend = granted
            a, b = (owner, friend) if by_owner else (friend, owner)
            self._act(self._unfriend(a, b, False, add_back=add_back))

    async def _unfriend(self, a: int, b: int, borrow: bool, *, add_back: bool) -> list[Sent]:
        req = RemoveFriend(command_id=self._command_id("remove_friend", a, borrow),
                           session=self.members[a].session, account=self.members[b].account)
        refuse = () if self.model.are_friends(a, b) else (NotFriends,)
        reply = await self._expect(req, self.system.social.remove_friend(req),
                                   Expected(refuse))
        if reply is None:
            return []
        assert isinstance(reply, FriendChanged)
        ended = self.model.between(a, b)
        self.model.friends.discard(frozenset((a, b)))
        self.model.events["FriendRemoved"] += 1
        sent = [Sent("remove_friend", a, req, reply)]
        if add_back:
            sent += await self._befriend(b, a, borrow=False)
            await self._none_of(ended)
        await self._revoked_for_unfriending(ended, after=reply.seq)
        return sent

    async def _none_of(self, ended: list[Triple]) -> None:
        """No grant an unfriending ended allows anything, friends again or not."""
        for owner, set_id, friend in ended:
            if self.model.through_agencies(friend, owner, set_id) in ("read", "write"):
                continue  # an agency lets them read it, friends or not
            for year in YEARS:
                verdict = await self.system.sharing.check(Check(
                    member_id=self.members[friend].member_id,
                    owner_id=self.members[owner].member_id, set_id=set_id, year=year,
                    access="read"))
                assert not verdict.allowed, (
                    f"member {friend} may still read {owner}/{set_id}/{year} right after "
                    f"the unfriending (added back at once): {verdict}")

    async def _revoked_for_unfriending(self, ended: list[Triple], after: int) -> None:
        """Wait for the unfriend policy: one ShareRevoked(unfriended) per grant between the
        two (a grant already expired may be left alone)."""
        now = datetime.now(UTC)
        needed = [t for t in ended if (exp := self.model.grants[t].expires_at) is None
                  or exp > now + timedelta(seconds=2)]
        deadline = asyncio.get_running_loop().time() + SETTLE_S
        while True:
            found = await unfriend_revokes(self.system.events, self.members, ended, after)
            if all(found[t] for t in needed):
                break
            if asyncio.get_running_loop().time() > deadline:
                missing = [t for t in needed if not found[t]]
                raise AssertionError(f"the unfriending left grants (owner, set, friend) "
                                     f"unrevoked after {SETTLE_S:g}s: {missing}")
            await asyncio.sleep(0.05)
        await quiet(self.system.events)
        found = await unfriend_revokes(self.system.events, self.members, ended, after)
        for triple in ended:
            if found[triple]:
                del self.model.grants[triple]
                self.model.events["ShareRevoked/unfriended"] += 1

    # ---- uploads ------------------------------------------------------------------------

    @rule(owner=st.integers(0, MEMBERS - 1), set_id=st.sampled_from(SETS),
          year=st.sampled_from(YEARS), size=st.integers(1_000, 12_000), borrow=st.booleans(),
          retry=st.booleans())
    def upload(self, owner: int, set_id: str, year: int, size: int, borrow: bool,
               retry: bool) -> None:
        """The owner backs up new random bytes to a set-year of their drive."""
        self._act(self._upload(owner, owner, set_id, year, os.urandom(size), borrow=borrow,
                               retry=retry))

    @rule(pick=PICK, nth=st.integers(0, 1), size=st.integers(1_000, 12_000),
          retry=st.booleans())
    def upload_shared(self, pick: int, nth: int, size: int, retry: bool) -> None:
        """A friend a set was shared with uploads a year it covers into the owner's
        drive."""
        if (granted := self._granted(pick)) is not None:
            owner, set_id, friend = granted
            year = self._year_of(granted, nth, stored=False)
            self._act(self._upload(friend, owner, set_id, year, os.urandom(size),
                                   borrow=False, retry=retry))

    @rule(pick=PICK, uploader=st.integers(0, MEMBERS - 1),
          set_id=st.sampled_from(SETS), year=st.sampled_from(YEARS))
    def upload_copy(self, pick: int, uploader: int, set_id: str,
                    year: int) -> None:
        """Someone uploads bytes a drive already holds into that drive (dedup's path): its
        owner, or a sharee who downloaded them."""
        versions = list(self.model.versions.values())
        original = versions[pick % len(versions)]
        self._act(self._upload(uploader, original.owner, set_id, year, original.data,
                               borrow=False, copy=True))

    async def _upload(self, uploader: int, owner: int, set_id: str, year: int, data: bytes,
                      *, borrow: bool, copy: bool = False, retry: bool = False,
                      token: int | None = None) -> list[Sent]:
        """Begin (and with ``retry`` begin again), PUT, complete (and again). A sharee
        sends the example's token (`token`) unless one is given."""
        expected = self.model.upload(uploader, owner, set_id, year, len(data),
                                     await self._used(owner), copy=copy,
                                     now=datetime.now(UTC))
        if expected is None:
            return []  # a grant expiring mid-upload: either answer is right, skip it
        who, sharee = self.members[uploader], uploader != owner
        begin = BeginUpload(
            command_id=self._command_id("begin_upload", uploader, borrow), session=who.session,
            owner_id=self.members[owner].member_id if sharee else None, set_id=set_id,
            set_name=f"Set {set_id}", year=year, period=1, size=len(data), sha256=sha(data),
            drive_token=who.drive if sharee else "",
            seq=(self.token if token is None else token) if sharee else 0)
        plan = await self._expect(begin, self.system.storage.begin_upload(begin), expected)
        if plan is None:
            return []
        assert isinstance(plan, UploadPlan)
        self.model.events["UploadReserved"] += 1
        if retry:  # the reply was lost: the same begin again is the same reservation
            again = await self._expect(begin, self.system.storage.begin_upload(begin))
            assert isinstance(again, UploadPlan) and again.upload_id == plan.upload_id, again
            plan = again
        statuses = await put_parts(self.system.http, plan, data)
        assert all(s < 300 for s in statuses), f"S3 refused the upload's PUT: {statuses}"
        complete = CompleteUpload(
            command_id=self._command_id("complete_upload", uploader, False),
            session=who.session, owner_id=begin.owner_id, upload_id=plan.upload_id,
            drive_token=begin.drive_token)
        done = await self._completed(complete, data, retry)
        self.model.add_version(Stored(done.version.version_id, owner, set_id, year, data),
                               copy=copy)
        target = (owner, set_id, year)
        self.plans.append(Sent("begin_upload", uploader, begin, plan, target, data))
        return [self.plans[-1], Sent("complete_upload", uploader, complete, done, target, data)]

    async def _completed(self, complete: CompleteUpload, data: bytes,
                         retry: bool) -> Uploaded:
        done = await self._expect(complete, self.system.storage.complete_upload(complete))
        assert isinstance(done, Uploaded)
        assert done.version.sha256 == sha(data) and done.version.size == len(data)
        self.model.events["BackupUploaded"] += 1
        if retry:
            again = await self._expect(complete,
                                       self.system.storage.complete_upload(complete))
            assert isinstance(again, Uploaded) and again.version == done.version, again
        return done

    async def _used(self, owner: int) -> int:
        listing = await self.system.storage.drive(
            DriveRequest(session=self.members[owner].session))
        return listing.used

    @rule(pick=PICK)
    def put_again_after_verification(self, pick: int) -> None:
        """An attacker PUTs other bytes to an upload's URLs once it was verified."""
        sent = self.plans[pick % len(self.plans)]
        self.run(put_parts(self.system.http, sent.reply, os.urandom(len(sent.data))))

    # ---- shares -------------------------------------------------------------------------

    @rule(share=SHARES, borrow=st.booleans())
    def grant(self, share: Share, borrow: bool) -> None:
        """An owner shares a set with one or two others, on some terms."""
        self._act(self._grant(share, borrow))

    def _expires(self, expiry: Expiry) -> datetime | None:
        now = datetime.now(UTC)
        return {"none": None, "day": now + timedelta(days=1), "soon": now + SOON,
                "past": now - timedelta(minutes=1),
                "naive": (now + timedelta(days=1)).replace(tzinfo=None)}[expiry]

    async def _grant(self, share: Share, borrow: bool) -> list[Sent]:
        owner, set_id, permission, years = share.owner, share.set_id, share.permission, share.years
        friends = [(owner + k) % MEMBERS for k in share.others]
        expires_at = self._expires(share.expiry)
        req = Grant(command_id=self._command_id("grant", owner, borrow),
                    session=self.members[owner].session, set_id=set_id,
                    friends=[self.members[f].account for f in friends], permission=permission,
                    years=None if years is None else list(years), expires_at=expires_at)
        expected = self.model.grant(owner, set_id, friends, expires_at, datetime.now(UTC))
        reply = await self._expect(req, self.system.sharing.grant(req), expected)
        if reply is None:
            return []
        terms = Terms(permission, years, expires_at)
        for f in friends:
            self.model.grants[(owner, set_id, f)] = terms
        self.model.events["ShareGranted"] += len(friends)
        return [Sent("grant", owner, req, reply, tuple(friends))]

    @rule(owner=st.integers(0, MEMBERS - 1), set_id=st.sampled_from(SETS),
          friend=st.none() | st.integers(0, MEMBERS - 1), borrow=st.booleans())
    def revoke(self, owner: int, set_id: str, friend: int | None,
               borrow: bool) -> None:
        """The owner cancels a share with one friend, or with everyone."""
        self._act(self._revoke(owner, set_id, friend, borrow))

    @rule(pick=PICK, everyone=st.booleans(), borrow=st.booleans())
    def revoke_shared(self, pick: int, everyone: bool, borrow: bool) -> None:
        """The owner cancels a share (with that friend, or with everyone)."""
        if (granted := self._granted(pick)) is not None:
            owner, set_id, friend = granted
            self._act(self._revoke(owner, set_id, None if everyone else friend, borrow))

    async def _revoke(self, owner: int, set_id: str, friend: int | None,
                      borrow: bool) -> list[Sent]:
        req = Revoke(command_id=self._command_id("revoke", owner, borrow),
                     session=self.members[owner].session, set_id=set_id,
                     friend=None if friend is None else self.members[friend].account)
        ended = self.model.revoked_by(owner, set_id, friend)
        reply = await self._expect(req, self.system.sharing.revoke(req),
                                   Expected(() if ended else (NotShared,)))
        if reply is None:
            return []
        for triple in ended:
            del self.model.grants[triple]
        self.model.events["ShareRevoked/owner"] += len(ended)
        return [Sent("revoke", owner, req, reply)]

    # ---- downloads ----------------------------------------------------------------------

    @rule(pair=st.sampled_from(PAIRS), set_id=st.sampled_from(SETS),
          year=st.sampled_from(YEARS), borrow=st.booleans())
    def sharee_download(self, pair: tuple[int, int], set_id: str, year: int,
                        borrow: bool) -> None:
        """A member downloads one year of another's set with the drive token."""
        self._act(self._download(*pair, set_id, year, borrow))

    @rule(pick=PICK, nth=st.integers(0, 1), borrow=st.booleans())
    def download_shared(self, pick: int, nth: int, borrow: bool) -> None:
        """A friend a set was shared with downloads a year it covers (one with a backup,
        if any)."""
        if (granted := self._granted(pick)) is not None:
            owner, set_id, friend = granted
            year = self._year_of(granted, nth, stored=True)
            self._act(self._download(friend, owner, set_id, year, borrow))

    async def _download(self, member: int, owner: int, set_id: str, year: int,
                        borrow: bool, *, token: int | None = None) -> list[Sent]:
        """A download by anyone (the owner too), with the example's token (`token`) unless
        one is given."""
        who = self.members[member]
        req = DownloadRequest(command_id=self._command_id("download", member, borrow),
                              session=who.session, owner_id=self.members[owner].member_id,
                              set_id=set_id, year=year, drive_token=who.drive,
                              seq=self.token if token is None else token)
        expected = self.model.download(member, owner, set_id, year, datetime.now(UTC))
        ticket = await self._expect(req, self.system.storage.download(req), expected)
        if ticket is None:
            return []
        assert isinstance(ticket, DownloadTicket)
        self.model.events["DownloadIssued"] += 1
        slot = (owner, set_id, year)
        assert slot in self.model.latest, f"a download of a year never uploaded: {ticket!r}"
        latest = self.model.versions[self.model.latest[slot]]
        assert ticket.version.version_id == latest.version_id, "not the latest version"
        assert sha(await fetch(self.system.http, ticket.url)) == latest.sha256
        return [Sent("download", member, req, ticket, slot)]

    # ---- agencies -----------------------------------------------------------------------

    def _agency(self, pick: int) -> int | None:
        """One of the agencies made so far (closed ones too), by its place in the model."""
        return pick % len(self.agency_ids) if self.agency_ids else None

    def _caller(self, agency: int, by: int) -> int:
        """``by``, or (from MEMBERS up) the agency's administrator."""
        return self.model.agencies[agency].admin if by >= MEMBERS else by

    @staticmethod
    def _fitting(who: int, fits: list[int]) -> int:
        """``who``, or (from MEMBERS up) one of those the command fits, if any."""
        return fits[who % len(fits)] if who >= MEMBERS and fits else who % MEMBERS

    async def _agency_command(self, op: str, caller: int, request: Any,
                              decision: Decision) -> list[Sent]:
        """Send one agency command: refused as the model says, else its events counted and
        the model brought along; then every access it took away is refused at once."""
        before = self._allowed()
        reply = await self._expect(request, self._send(op, request), Expected(decision.refuse))
        if reply is None:
            return []
        assert isinstance(reply, AgencyChanged), reply
        decision.then()
        self.model.events.update(decision.events)
        self.token = max(self.token, reply.seq)
        sent = Sent(op, caller, request, reply)
        # Sent again later, even when it changed nothing: a repeat answers as the first run
        # did, and undoes nothing that came after it.
        return [sent, *await self._narrowed_at_once(before)]

    def _allowed(self) -> set[Ask]:
        """Every (member, owner, set, year, access) the model allows now, for certain."""
        now = datetime.now(UTC)
        return {ask for ask in ASKS if self.model.allows_during(*ask, now, 2.0)}

    async def _narrowed_at_once(self, before: set[Ask]) -> list[Sent]:
        """Right after an agency command answered, with no token: whatever it took away
        (what an agency gave, an owner's own set, the shares of a set handed over) sharing
        refuses, and storage too (a download of a stored year, an upload)."""
        lost = sorted(before - self._allowed())
        if not lost:
            return []
        self.notes.append(f"access the command took away: {lost}")
        wrong = await self._misjudged(lost, 0)
        assert not wrong, f"access not ended at once (member, owner, set, year, access, " \
                          f"model): {wrong}"
        sent: list[Sent] = []
        tried: set[tuple[int, int, str, Access]] = set()  # one of each per set is enough
        for member, owner, set_id, year, access in lost:
            if (member, owner, set_id, access) in tried:
                continue
            if access == "write":
                sent += await self._upload(member, owner, set_id, year, os.urandom(1000),
                                           borrow=False, token=0)
            elif (owner, set_id, year) in self.model.latest:
                sent += await self._download(member, owner, set_id, year, False, token=0)
            else:
                continue
            tried.add((member, owner, set_id, access))
        return sent

    @rule(by=MEMBER, borrow=st.booleans())
    def create_agency(self, by: int, borrow: bool) -> None:
        """Someone creates (another) agency."""
        self._act(self._create(by, borrow))

    async def _create(self, caller: int, borrow: bool) -> list[Sent]:
        req = CreateAgency(command_id=self._command_id("create_agency", caller, borrow),
                           session=self.members[caller].session, name=f"代账 {caller}")
        sent = await self._agency_command("create_agency", caller, req, agency_model.create(
            self.model.agencies, caller))
        self.agency_ids.append(sent[0].reply.agency_id)
        return sent

    @rule(pick=PICK, by=BY, member=MEMBER, role=ROLES, then_accept=st.booleans(),
          borrow=st.booleans())
    def invite_to_agency(self, pick: int, by: int, member: int, role: StaffRole,
                         then_accept: bool, borrow: bool) -> None:
        """The administrator (or someone else) invites a member; who accepts at once, or
        (for now) never."""
        if (agency := self._agency(pick)) is not None:
            self._act(self._invite(agency, self._caller(agency, by), member, role, borrow,
                                   then_accept=then_accept))

    async def _invite(self, agency: int, caller: int, member: int, role: StaffRole,
                      borrow: bool, *, then_accept: bool = False) -> list[Sent]:
        who = self.members[member]
        req = Invite(command_id=self._command_id("invite_to_agency", caller, borrow),
                     session=self.members[caller].session, agency_id=self.agency_ids[agency],
                     account=who.account, nickname=who.nickname, role=role)
        sent = await self._agency_command("invite_to_agency", caller, req, agency_model.invite(
            self.model.agencies[agency], caller, member, role))
        if sent and then_accept:
            sent += await self._accept(agency, member, False)
        return sent

    @rule(pick=PICK, who=WHO, borrow=st.booleans())
    def accept_invitation(self, pick: int, who: int, borrow: bool) -> None:
        """A member accepts an invitation (mostly one who holds one)."""
        if (agency := self._agency(pick)) is not None:
            invited = sorted(self.model.agencies[agency].invited)
            self._act(self._accept(agency, self._fitting(who, invited), borrow))

    async def _accept(self, agency: int, member: int, borrow: bool) -> list[Sent]:
        req = AgencyCommand(command_id=self._command_id("accept_invitation", member, borrow),
                            session=self.members[member].session,
                            agency_id=self.agency_ids[agency])
        return await self._agency_command("accept_invitation", member, req,
                                          agency_model.accept(self.model.agencies[agency],
                                                              member))

    @rule(pick=PICK, who=WHO, borrow=st.booleans())
    def leave_agency(self, pick: int, who: int, borrow: bool) -> None:
        """A member leaves (mostly one of its staff)."""
        if (agency := self._agency(pick)) is not None:
            staff = sorted(self.model.agencies[agency].staff)
            member = self._fitting(who, staff)
            req = AgencyCommand(command_id=self._command_id("leave_agency", member, borrow),
                                session=self.members[member].session,
                                agency_id=self.agency_ids[agency])
            self._act(self._agency_command("leave_agency", member, req, agency_model.leave(
                self.model.agencies[agency], member)))

    @rule(pick=PICK, by=BY, who=WHO, borrow=st.booleans())
    def remove_from_agency(self, pick: int, by: int, who: int, borrow: bool) -> None:
        """The administrator (or someone else) removes a member or an invitation."""
        if (agency := self._agency(pick)) is not None:
            model = self.model.agencies[agency]
            caller = self._caller(agency, by)
            member = self._fitting(who, sorted({*model.staff, *model.invited}))
            req = MemberCommand(
                command_id=self._command_id("remove_from_agency", caller, borrow),
                session=self.members[caller].session, agency_id=self.agency_ids[agency],
                account=self.members[member].account)
            self._act(self._agency_command("remove_from_agency", caller, req,
                                           agency_model.remove(model, caller, member)))

    @rule(pick=PICK, by=BY, who=WHO, role=ROLES, borrow=st.booleans())
    def change_agency_role(self, pick: int, by: int, who: int, role: StaffRole,
                           borrow: bool) -> None:
        """The administrator (or someone else) changes a member's role."""
        if (agency := self._agency(pick)) is not None:
            model = self.model.agencies[agency]
            caller = self._caller(agency, by)
            member = self._fitting(who, sorted(model.staff))
            req = ChangeRole(command_id=self._command_id("change_agency_role", caller, borrow),
                             session=self.members[caller].session,
                             agency_id=self.agency_ids[agency],
                             account=self.members[member].account, role=role)
            self._act(self._agency_command("change_agency_role", caller, req,
                                           agency_model.change_role(model, caller, member,
                                                                    role)))

    @rule(pick=PICK, by=BY, supervisor=WHO, accountant=WHO, end=st.booleans(),
          borrow=st.booleans())
    def supervision(self, pick: int, by: int, supervisor: int, accountant: int, end: bool,
                    borrow: bool) -> None:
        """The administrator (or someone else) has a supervisor oversee an accountant, or
        no longer."""
        if (agency := self._agency(pick)) is not None:
            model = self.model.agencies[agency]
            roles = sorted(model.staff.items())
            sup = self._fitting(supervisor, [m for m, r in roles if r == "supervisor"])
            acc = self._fitting(accountant, [m for m, r in roles if r == "accountant"])
            self._act(self._supervision(agency, self._caller(agency, by), sup, acc, end,
                                        borrow))

    async def _supervision(self, agency: int, caller: int, sup: int, acc: int, end: bool,
                           borrow: bool) -> list[Sent]:
        op = "end_supervision" if end else "assign_supervision"
        req = Supervision(command_id=self._command_id(op, caller, borrow),
                          session=self.members[caller].session,
                          agency_id=self.agency_ids[agency],
                          supervisor=self.members[sup].account,
                          accountant=self.members[acc].account)
        decide = agency_model.end_supervision if end else agency_model.supervise
        return await self._agency_command(op, caller, req, decide(
            self.model.agencies[agency], caller, sup, acc))

    @rule(pick=PICK, who=WHO, set_id=st.sampled_from(SETS), unmark=st.booleans(),
          borrow=st.booleans())
    def mark_agency_set(self, pick: int, who: int, set_id: str, unmark: bool,
                        borrow: bool) -> None:
        """A member (mostly an accountant) marks a set of theirs as agency work, or takes
        it back."""
        if (agency := self._agency(pick)) is not None:
            model = self.model.agencies[agency]
            member = self._fitting(who, sorted(m for m, r in model.staff.items()
                                               if r == "accountant"))
            self._act(self._mark(agency, member, set_id, unmark, borrow))

    async def _mark(self, agency: int, member: int, set_id: str, unmark: bool,
                    borrow: bool) -> list[Sent]:
        op = "unmark_agency_set" if unmark else "mark_agency_set"
        req = MarkSet(command_id=self._command_id(op, member, borrow),
                      session=self.members[member].session, agency_id=self.agency_ids[agency],
                      set_id=set_id)
        decide = agency_model.unmark if unmark else agency_model.mark
        return await self._agency_command(op, member, req, decide(
            self.model.agencies[agency], member, set_id))

    @rule(pick=PICK, by=BY, work=PICK, to=WHO, borrow=st.booleans())
    def hand_over(self, pick: int, by: int, work: int, to: int, borrow: bool) -> None:
        """The administrator (or someone else) hands an agency set (mostly one) to an
        accountant (mostly)."""
        if (agency := self._agency(pick)) is not None:
            model = self.model.agencies[agency]
            sets = sorted(model.work) or [(o, s) for o in range(MEMBERS) for s in SETS]
            owner, set_id = sets[work % len(sets)]
            accountants = sorted(m for m, r in model.staff.items() if r == "accountant")
            self._act(self._hand_over(agency, self._caller(agency, by), owner, set_id,
                                      self._fitting(to, accountants), borrow))

    async def _hand_over(self, agency: int, caller: int, owner: int, set_id: str, to: int,
                         borrow: bool) -> list[Sent]:
        req = HandOver(command_id=self._command_id("hand_over", caller, borrow),
                       session=self.members[caller].session, agency_id=self.agency_ids[agency],
                       owner=self.members[owner].account, set_id=set_id,
                       to=self.members[to].account)
        return await self._agency_command("hand_over", caller, req, agency_model.hand_over(
            self.model.agencies[agency], caller, owner, set_id, to))

    @rule(pick=PICK, by=BY, supervisors_write=st.booleans(), borrow=st.booleans())
    def agency_settings(self, pick: int, by: int, supervisors_write: bool,
                        borrow: bool) -> None:
        """The administrator (or someone else) lets supervisors write, or not."""
        if (agency := self._agency(pick)) is not None:
            self._act(self._settings(agency, self._caller(agency, by), supervisors_write,
                                     borrow))

    async def _settings(self, agency: int, caller: int, supervisors_write: bool,
                        borrow: bool) -> list[Sent]:
        req = ChangeSettings(command_id=self._command_id("agency_settings", caller, borrow),
                             session=self.members[caller].session,
                             agency_id=self.agency_ids[agency],
                             supervisors_write=supervisors_write)
        return await self._agency_command("agency_settings", caller, req, agency_model.settings(
            self.model.agencies[agency], caller, supervisors_write))

    @rule(pick=PICK, by=BY, borrow=st.booleans())
    def close_agency(self, pick: int, by: int, borrow: bool) -> None:
        """The administrator (or someone else) closes the agency."""
        if (agency := self._agency(pick)) is not None:
            caller = self._caller(agency, by)
            req = AgencyCommand(command_id=self._command_id("close_agency", caller, borrow),
                                session=self.members[caller].session,
                                agency_id=self.agency_ids[agency])
            self._act(self._agency_command("close_agency", caller, req, agency_model.close(
                self.model.agencies[agency], caller)))

    @rule(pick=PICK, nth=st.integers(0, 1), upload=st.booleans(),
          size=st.integers(1_000, 6_000))
    def work_through_agency(self, pick: int, nth: int, upload: bool, size: int) -> None:
        """Someone an agency lets use a set (or an owner it refused) downloads a year of it
        (one with a backup, if any) or uploads into it."""
        work = sorted(self.model.agency_work())
        if work:
            member, owner, set_id = work[pick % len(work)]
            stored = [y for y in YEARS if (owner, set_id, y) in self.model.latest]
            year = (stored or list(YEARS))[nth % len(stored or YEARS)]
            self._act(self._upload(member, owner, set_id, year, os.urandom(size), borrow=False)
                      if upload else self._download(member, owner, set_id, year, False))

    # ---- retries ------------------------------------------------------------------------

    def _year_of(self, grant: Triple, nth: int, *, stored: bool) -> int:
        """A year the grant covers (with ``stored``, one the set has a version of)."""
        owner, set_id, _ = grant
        covered = self.model.grants[grant].years or YEARS
        years = [y for y in covered if not stored or (owner, set_id, y) in self.model.latest]
        return (years or list(YEARS))[nth % len(years or YEARS)]

    def _sent(self, pick: int) -> Sent:
        sent = self.acked[pick % len(self.acked)]
        self.notes.append(f"picked {sent.op} by member {sent.caller}: {sent.request!r:.300}")
        return sent

    @rule(pick=PICK)
    def repeat(self, pick: int) -> None:
        """An acknowledged command again (same id, same content): the original outcome,
        nothing appended, never a fresh URL to someone whose access has ended."""
        self.run(self._repeat(self._sent(pick)))

    async def _repeat(self, sent: Sent) -> None:
        got = await attempt(self._send(sent.op, sent.request))
        what = f"repeat of {sent.op} {sent.request!r}: {outcome(got)}"
        if isinstance(got, LedgerError):
            # Refused only when access ended, or for a begin whose upload ended (a
            # completed upload is presigned no more).
            lost = isinstance(got, NoAccess) and not self._still_allowed(sent)
            ended = isinstance(got, NoSuchUpload) and sent.op == "begin_upload"
            assert lost or ended, what
            return
        assert isinstance(got, CommandReply), what
        assert got.seq >= sent.reply.seq, what  # never an older consistency point
        match got:
            case FriendChanged() | Changed() | AgencyChanged():
                assert _without_token(got) == _without_token(sent.reply), what
            case DownloadTicket():
                assert got.version == sent.reply.version, what
                assert self._still_allowed(sent) or got.url == sent.reply.url, (
                    f"a fresh download URL after access ended: {what}")
            case UploadPlan():
                assert got.upload_id == sent.reply.upload_id, what
                await put_parts(self.system.http, got, os.urandom(len(sent.data)))
            case Uploaded():
                assert got.version == sent.reply.version, what
            case _:
                raise AssertionError(f"another kind of reply: {what}")

    def _still_allowed(self, sent: Sent) -> bool:
        """Whether the caller may still do what the command did (owners always may)."""
        if sent.op not in ("download", "begin_upload", "complete_upload"):
            return True
        owner, set_id, year = sent.target
        access = "read" if sent.op == "download" else "write"
        return self.model.allows_during(sent.caller, owner, set_id, year, access,
                                        datetime.now(UTC), 1.0) is not False

    @rule(pick=PICK)
    def reuse_with_other_content(self, pick: int) -> None:
        """An acknowledged command's id with other content: refused, nothing appended."""
        self.run(self._reuse(self._sent(pick)))

    async def _reuse(self, sent: Sent) -> None:
        altered, refusals = self._altered(sent)
        got = await attempt(self._send(sent.op, altered))
        what = f"{sent.op} id reused with other content {altered!r}: {outcome(got)}"
        assert isinstance(got, LedgerError), f"accepted: {what}"
        assert isinstance(got, (CommandReused, *refusals)), what

    def _index(self, account: str | None) -> int | None:
        found = [i for i, m in enumerate(self.members) if m.account == account]
        return found[0] if found else None

    def _altered(self, sent: Sent) -> tuple[Any, Refusals]:
        """Other content under the same id, and the refusals it would also deserve as a
        new command (a refusal either way is right; acting on it is not)."""
        caller, req, r = sent.caller, sent.request, msgspec.structs.replace
        target = self._index(getattr(req, "account", None))
        third = next(m for m in range(MEMBERS) if m not in (caller, target))
        now = datetime.now(UTC)
        match sent.op:
            case "add_friend":
                other = self.members[third]
                refuse: Refusals = (AlreadyFriends,) if self.model.are_friends(
                    caller, third) else ()
                return r(req, account=other.account, nickname=other.nickname), refuse
            case "remove_friend":
                refuse = () if self.model.are_friends(caller, third) else (NotFriends,)
                return r(req, account=self.members[third].account), refuse
            case "grant":
                permission = "read-only" if req.permission == "read-write" else "read-write"
                return r(req, permission=permission), self.model.grant(
                    caller, req.set_id, list(sent.target), req.expires_at, now).refuse
            case "revoke":
                friend = None if req.friend is not None else third
                ended = self.model.revoked_by(caller, req.set_id, friend)
                account = None if friend is None else self.members[friend].account
                return r(req, friend=account), () if ended else (NotShared,)
            case "download":
                owner, set_id, year = sent.target
                other_year = YEARS[1] if year == YEARS[0] else YEARS[0]
                expected = self.model.download(caller, owner, set_id, other_year, now)
                return r(req, year=other_year), expected.refuse + expected.maybe
            case "begin_upload":
                data = os.urandom(req.size + 1)
                return r(req, size=len(data), sha256=sha(data)), (NoAccess, QuotaExceeded)
            case "complete_upload":
                return r(req, upload_id=cid()), (NoSuchUpload, NoAccess)
            case _:
                return self._altered_agency(sent)

    def _altered_agency(self, sent: Sent) -> tuple[Any, Refusals]:
        """An agency command's other content, and the refusals it would deserve."""
        caller, req, r = sent.caller, sent.request, msgspec.structs.replace
        if sent.op == "create_agency":
            return r(req, name=f"{req.name} bis"), ()
        agency = self.model.agencies[self.agency_ids.index(req.agency_id)]
        match sent.op:
            case "invite_to_agency" | "change_agency_role":
                member = self._index(req.account)
                assert member is not None
                role: StaffRole = "supervisor" if req.role == "accountant" else "accountant"
                decide_role = (agency_model.invite if sent.op == "invite_to_agency"
                               else agency_model.change_role)
                return r(req, role=role), decide_role(agency, caller, member, role).refuse
            case "accept_invitation" | "leave_agency" | "close_agency":
                # Another agency's id, one that does not exist.
                refusal = NotInvited if sent.op == "accept_invitation" else NoSuchAgency
                return r(req, agency_id=uuid.uuid4().hex), (refusal,)
            case "remove_from_agency":
                member = self._index(req.account)
                third = next(m for m in range(MEMBERS) if m not in (caller, member))
                return r(req, account=self.members[third].account), agency_model.remove(
                    agency, caller, third).refuse
            case "assign_supervision" | "end_supervision":
                sup, acc = self._index(req.supervisor), self._index(req.accountant)
                assert sup is not None and acc is not None
                decide_pair = (agency_model.supervise if sent.op == "assign_supervision"
                               else agency_model.end_supervision)
                return r(req, supervisor=req.accountant, accountant=req.supervisor), (
                    decide_pair(agency, caller, acc, sup).refuse)
            case "mark_agency_set" | "unmark_agency_set":
                set_id = SETS[1] if req.set_id == SETS[0] else SETS[0]
                decide_set = (agency_model.mark if sent.op == "mark_agency_set"
                              else agency_model.unmark)
                return r(req, set_id=set_id), decide_set(agency, caller, set_id).refuse
            case "hand_over":
                owner, to = self._index(req.owner), self._index(req.to)
                assert owner is not None
                third = next(m for m in range(MEMBERS) if m != to)
                return r(req, to=self.members[third].account), agency_model.hand_over(
                    agency, caller, owner, req.set_id, third).refuse
            case "agency_settings":
                flipped = not req.supervisors_write
                return r(req, supervisors_write=flipped), agency_model.settings(
                    agency, caller, flipped).refuse
            case _:
                raise AssertionError(f"another kind of command: {sent.op}")

    # ---- invariants ---------------------------------------------------------------------

    @invariant()
    def guarantees_hold(self) -> None:
        """The log, access, stored bytes and quota all agree with the model."""
        if self.members:
            self.run(self._check())

    async def _check(self) -> None:
        await self._events_exactly_once()
        await self._access_as_modelled()
        await self._storage_gate_as_modelled()
        await self._verified_bytes_unchanged()
        await self._quota_kept()

    async def _events_exactly_once(self) -> None:
        expected = {k: self.model.events[k] for k in KINDS}
        for _ in range(100):
            found = await logged(self.system.events, self.members, self.agency_ids)
            actual = {k: found[k] for k in KINDS}
            extra = {k: (actual[k], n) for k, n in expected.items() if actual[k] > n}
            assert not extra, f"more events (logged, expected) than commands made: {extra}"
            if actual == expected:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"events missing (logged, expected): "
                             f"{ {k: (actual[k], n) for k, n in expected.items()} }")

    async def _access_as_modelled(self, pairs: list[tuple[int, int]] | None = None, *,
                                  late: bool = True) -> None:
        """sharing's answer for every member, owner (themself too), set, year and access
        (or for these (member, owner) pairs), with no token: as the model says. With
        ``late``, an access refused that the model allows through an agency is asked again
        with the example's token (an agency's access may show late; a share's, never)."""
        asks = [ask for ask in ASKS if pairs is None or ask[:2] in pairs]
        wrong = await self._misjudged(asks, 0)
        agency_late = [(m, o, s, y, a) for m, o, s, y, a, allowed in wrong if allowed
                       and late and self.model.through_agencies(m, o, s) in ("read", "write")]
        if agency_late:
            self.notes.append(f"agency access shown late (with the token only): {agency_late}")
            wrong = [w for w in wrong if w[:5] not in agency_late]
            wrong += await self._misjudged(agency_late, self.token)
        assert not wrong, ("access differs from the model (member, owner, set, year, access, "
                           "model): " + "; ".join(map(str, wrong)))

    async def _misjudged(self, asks: list[Ask],
                         token: int) -> list[tuple[int, int, str, int, Access, bool]]:
        """The asks sharing answers otherwise than the model (where it can say)."""
        before = datetime.now(UTC)
        verdicts = await asyncio.gather(*(self.system.sharing.check(Check(
            member_id=self.members[m].member_id, owner_id=self.members[o].member_id,
            set_id=s, year=y, access=a, seq=token)) for m, o, s, y, a in asks))
        after = datetime.now(UTC)
        wrong = []
        for (m, o, s, y, a), verdict in zip(asks, verdicts, strict=True):
            model = {self.model.allows(m, o, s, y, a, t) for t in (before, after)}
            if model in ({True}, {False}) and verdict.allowed not in model:
                self.notes.append(f"member {m} {a} {o}/{s}/{y} (token {token}): system "
                                  f"{verdict.allowed} ({verdict.reason})")
                wrong.append((m, o, s, y, a, not verdict.allowed))
        return wrong

    async def _storage_gate_as_modelled(self) -> None:
        """Each friend the model holds a grant for, and each member an agency lets use a set
        (or refuses it, its owner), downloads a year of it through storage: served the
        latest bytes exactly when the model allows it."""
        for grant in sorted(self.model.grants):
            owner, set_id, friend = grant
            year = self._year_of(grant, 0, stored=True)
            self.acked += await self._download(friend, owner, set_id, year, False)
        for member, owner, set_id in sorted(self.model.agency_work()):
            stored = [y for y in YEARS if (owner, set_id, y) in self.model.latest]
            if stored:
                self.acked += await self._download(member, owner, set_id, stored[0], False)

    async def _verified_bytes_unchanged(self) -> None:
        await asyncio.gather(*(self._unchanged(v) for v in list(self.model.versions.values())))

    async def _unchanged(self, version: Stored) -> None:
        """The version downloads as verified: by its owner, or (a set an agency handed to
        someone else) by someone who may read it; unless nobody may."""
        now, owner = datetime.now(UTC), version.owner
        readers = [m for m in (owner, *range(MEMBERS)) if self.model.allows_during(
            m, owner, version.set_id, version.year, "read", now, 1.0)]
        if not readers:
            return
        who, sharee = self.members[readers[0]], readers[0] != owner
        ticket = await self.system.storage.download(DownloadRequest(
            command_id=cid(), session=who.session,
            owner_id=self.members[owner].member_id if sharee else None,
            set_id=version.set_id, year=version.year, version_id=version.version_id,
            drive_token=who.drive if sharee else "", seq=self.token))
        self.model.events["DownloadIssued"] += 1
        got = sha(await fetch(self.system.http, ticket.url))
        assert got == version.sha256, (
            f"version {version.version_id} of member {version.owner} "
            f"({version.set_id}/{version.year}) changed after verification")

    async def _quota_kept(self) -> None:
        for i, member in enumerate(self.members):
            listing = await self.system.storage.drive(DriveRequest(session=member.session))
            low, high = self.model.used_lo[i], self.model.used_hi[i]
            assert listing.quota == QUOTA, listing
            assert low <= listing.used <= min(high, QUOTA), (
                f"member {i}'s drive uses {listing.used} bytes; the model says between "
                f"{low} and {high}, quota {QUOTA}")

    def teardown(self) -> None:
        """Every read model equals its replica from sequence 1 (unless a step failed)."""
        if self.members and self.clean:
            assert self.bridge.run(replica_differences(self.system)) == []


def _without_token(reply: CommandReply) -> CommandReply:
    return msgspec.structs.replace(reply, seq=0)


@pytest.fixture
async def system(settings: Settings, nc: NATS, pool: asyncpg.Pool,
                 events: EventStore) -> AsyncIterator[System]:
    """The four services on this test's servers, the replicas of their read models, and
    an HTTP client for S3."""
    configured = service_settings(settings)
    async with AsyncExitStack() as stack:
        wirings = [await stack.enter_async_context(running(build, configured, nc, pool, events))
                   for build in all_builds()]
        # The replicas read the log on a connection of their own: their batches must not
        # queue ahead of the services' requests.
        replica_nc = await nats.connect(settings.nats_url)
        stack.push_async_callback(replica_nc.close)
        replica_pool = await create_pool(settings.pg_dsn, size=2 * len(REPLAYED))
        stack.callback(replica_pool.terminate)  # a rebuild stuck after a failure holds some
        replicas = Replicas(replica_nc, replica_pool)
        await replicas.start()
        stack.push_async_callback(replicas.stop)
        http = await stack.enter_async_context(aiohttp.ClientSession())
        yield System(nc, pool, events, wirings, replicas, http)


# One failure is shrunk, not each kind found: every example costs a second or two.
MODEL_SETTINGS = settings(max_examples=20, stateful_step_count=20, deadline=None,
                          database=None, report_multiple_bugs=False)


@pytest.mark.timeout(900)  # passing takes about a minute; a failure shrinks for longer
async def test_random_interleavings_keep_every_guarantee(system: System) -> None:
    bridge = Bridge(asyncio.get_running_loop())

    class OnTheseServers(ShareMachine):
        def __init__(self) -> None:
            super().__init__(system, bridge)

    await asyncio.to_thread(run_state_machine_as_test, OnTheseServers, settings=MODEL_SETTINGS)
    # Then every read model equals a rebuild from sequence 1, as an operator's replay
    # makes it: the whole log of every example, in large batches.
    await system.replicas.stop()
    assert await replay_differences(system) == []
