"""Bookkeeping agencies over NATS against real servers: roles, invitations, supervision,
agency sets, handover, leaving and removal, each with its refusals, and sharing's one
answer on access (its check, its listing, its history, storage obeying it)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

import asyncpg
import pytest
from nats.aio.client import Client as NATS

from contracts.agency import (
    AdministratorStays,
    AgencyCommand,
    AgencySetTaken,
    AlreadyInAgency,
    ChangeRole,
    ChangeSettings,
    CreateAgency,
    HandOver,
    Invite,
    ListAgencies,
    MarkSet,
    MemberCommand,
    NoSuchAgency,
    NotAgencyAdmin,
    NotInAgency,
    NotInvited,
    StaffRole,
    Supervision,
    ViewAgency,
    WrongRole,
    agency_subjects,
)
from contracts.identity import DeleteMember
from contracts.sharing import AgencySetsRequest, Check, HistoryRequest
from contracts.storage import DeleteVersion, NoAccess, VersionsRequest
from runtime.eventstore import EventStore
from runtime.replay import compare, rebuild
from runtime.settings import Settings
from services.sharing import domain
from services.sharing import tables as sharing_tables
from services.sharing.handlers import Sharing
from services.sharing.index import AccessIndex
from services.sharing.projection import AccessProjection
from tests.helpers import cid
from tests.integration.test_sharing import Person, account_set
from tests.services import wired_all

BOOKS = "books-a"  # the accountant's agency set
PRIVATE = "private"  # the same accountant's own set, never agency work


class Agency:
    """An agency as its administrator drives it."""

    def __init__(self, admin: Person, agency_id: str) -> None:
        self.admin, self.id = admin, agency_id

    @classmethod
    async def create(cls, admin: Person, name: str = "诚信代账") -> Agency:
        made = await admin.social.create_agency(CreateAgency(
            command_id=cid(), session=admin.session, name=name, seq=admin.seq))
        admin.seq = made.seq
        return cls(admin, made.agency_id)

    async def invite(self, who: Person, role: StaffRole = "accountant") -> None:
        self.admin.seq = max(self.admin.seq, who.seq)  # social's directory holds them
        self.admin.seq = (await self.admin.social.invite_to_agency(Invite(
            command_id=cid(), session=self.admin.session, agency_id=self.id,
            account=who.account, nickname=who.nickname, role=role, seq=self.admin.seq))).seq

    async def join(self, who: Person, role: StaffRole = "accountant") -> None:
        await self.invite(who, role)
        who.seq = (await who.social.accept_invitation(AgencyCommand(
            command_id=cid(), session=who.session, agency_id=self.id,
            seq=self.admin.seq))).seq

    async def supervise(self, sup: Person, acc: Person, *, end: bool = False) -> None:
        req = Supervision(command_id=cid(), session=self.admin.session, agency_id=self.id,
                          supervisor=sup.account, accountant=acc.account, seq=self.admin.seq)
        op = self.admin.social.end_supervision if end else self.admin.social.assign_supervision
        self.admin.seq = (await op(req)).seq

    async def mark(self, who: Person, set_id: str = BOOKS) -> None:
        who.seq = (await who.social.mark_agency_set(MarkSet(
            command_id=cid(), session=who.session, agency_id=self.id, set_id=set_id,
            seq=who.seq))).seq

    async def hand_over(self, owner: Person, to: Person, set_id: str = BOOKS) -> None:
        self.admin.seq = (await self.admin.social.hand_over(HandOver(
            command_id=cid(), session=self.admin.session, agency_id=self.id,
            owner=owner.account, set_id=set_id, to=to.account, seq=self.admin.seq))).seq

    async def remove(self, who: Person) -> None:
        self.admin.seq = (await self.admin.social.remove_from_agency(MemberCommand(
            command_id=cid(), session=self.admin.session, agency_id=self.id,
            account=who.account, seq=self.admin.seq))).seq

    async def leave(self, who: Person) -> None:
        who.seq = (await who.social.leave_agency(AgencyCommand(
            command_id=cid(), session=who.session, agency_id=self.id, seq=who.seq))).seq


async def may(who: Person, owner: Person, access: str = "read", *, set_id: str = BOOKS,
              seq: int = 0) -> tuple[bool, str]:
    """sharing's answer (as storage asks it)."""
    verdict = await who.sharing.check(Check(
        member_id=who.member_id, owner_id=owner.member_id, set_id=set_id, year=2018,
        access=access, seq=seq))  # type: ignore[arg-type]
    return verdict.allowed, verdict.reason


async def people(nc: NATS, tag: str, *names: str) -> list[Person]:
    return [await Person(nc, f"{tag}-{n}", n).join() for n in names]


async def staffed(nc: NATS, tmp_path: Path, tag: str) -> tuple[Agency, list[Person]]:
    """An agency: admin, a supervisor over accountant a1, and a2; a1 keeps BOOKS (agency
    work, with a backup for 2018) and PRIVATE (not agency work)."""
    admin, sup, a1, a2 = await people(nc, tag, "admin", "sup", "a1", "a2")
    agency = await Agency.create(admin)
    await agency.join(sup, "supervisor")
    await agency.join(a1)
    await agency.join(a2)
    await agency.supervise(sup, a1)
    for p in (admin, sup, a1, a2):
        await p.unlock_drive()
    await a1.upload(account_set(tmp_path, "books.bak", 4000), set_id=BOOKS)
    await a1.upload(account_set(tmp_path, "private.bak", 3000), set_id=PRIVATE)
    await agency.mark(a1)
    for p in (admin, sup, a2):
        p.seq = max(a1.seq, admin.seq)
    return agency, [admin, sup, a1, a2]


async def test_a_supervisor_lists_and_downloads_an_accountants_agency_set(
        nc_all: NATS, tmp_path: Path) -> None:
    agency, (admin, sup, a1, _) = await staffed(nc_all, tmp_path, "flow")
    listed = await sup.sharing.agency_sets(AgencySetsRequest(
        session=sup.session, agency_id=agency.id, drive_token=sup.drive, seq=sup.seq))
    [work] = listed.sets
    assert (work.owner, work.keeper, work.set_id, work.reason, work.permission) == (
        a1.account, a1.account, BOOKS, "supervisor", "read-only")
    assert [(y.year, y.versions[0].remark) for y in work.years] == [(2018, "2018年1期")]
    assert await sup.download(a1, 2018, tmp_path / "sup.bak", set_id=BOOKS) == 4000
    assert await admin.download(a1, 2018, tmp_path / "admin.bak", set_id=BOOKS) == 4000
    versions = await sup.storage.versions(VersionsRequest(
        session=sup.session, owner_id=a1.member_id, set_id=BOOKS, year=2018,
        drive_token=sup.drive, seq=sup.seq))
    assert len(versions.versions) == 1
    # By default a supervisor reads and does not write.
    assert await may(sup, a1, "write") == (False, "the agency lets supervisors read only")
    with pytest.raises(NoAccess):
        await sup.upload(account_set(tmp_path, "fix.bak", 100), owner=a1, set_id=BOOKS)
    # The agency's setting lets them upload a corrected version, marked as theirs.
    admin.seq = (await admin.social.agency_settings(ChangeSettings(
        command_id=cid(), session=admin.session, agency_id=agency.id,
        supervisors_write=True, seq=admin.seq))).seq
    sup.seq = admin.seq
    fixed = await sup.upload(account_set(tmp_path, "fix.bak", 100), owner=a1, set_id=BOOKS,
                             period=2)
    a1.seq = sup.seq
    mine = await a1.storage.versions(VersionsRequest(session=a1.session, set_id=BOOKS,
                                                     year=2018, seq=a1.seq))
    assert {v.version_id: v.uploader_id for v in mine.versions}[fixed] == sup.member_id


async def test_refusals_outside_the_agency_work(nc_all: NATS, tmp_path: Path) -> None:
    agency, (admin, sup, a1, a2) = await staffed(nc_all, tmp_path, "refuse")
    # A supervisor reading a non-agency set of their accountant.
    assert await may(sup, a1, set_id=PRIVATE) == (False, "not shared")
    with pytest.raises(NoAccess):
        await sup.download(a1, 2018, tmp_path / "x.bak", set_id=PRIVATE)
    # An accountant reading a colleague's set.
    assert await may(a2, a1) == (False, "not shared")
    with pytest.raises(NoAccess):
        await a2.download(a1, 2018, tmp_path / "y.bak", set_id=BOOKS)
    # A supervisor over someone else's accountant sees nothing of theirs.
    assert await may(sup, a2, set_id=BOOKS) == (False, "not shared")
    # An invitation never accepted gives nothing.
    (guest,) = await people(nc_all, "refuse", "guest")
    await agency.invite(guest, "supervisor")
    with pytest.raises(NotInAgency):  # not a member yet: cannot be given anyone to oversee
        await agency.supervise(guest, a1)
    assert await may(guest, a1, seq=admin.seq) == (False, "not shared")
    guest.seq = admin.seq
    await guest.unlock_drive()
    with pytest.raises(NoSuchAgency):
        await guest.sharing.agency_sets(AgencySetsRequest(
            session=guest.session, agency_id=agency.id, drive_token=guest.drive,
            seq=guest.seq))
    with pytest.raises(NoSuchAgency):
        await guest.social.view_agency(ViewAgency(session=guest.session, agency_id=agency.id))
    # Only the administrator runs the agency.
    with pytest.raises(NotAgencyAdmin):
        await Agency(sup, agency.id).invite(guest)
    with pytest.raises(NotAgencyAdmin):
        await Agency(a1, agency.id).hand_over(a1, a2)
    with pytest.raises(AlreadyInAgency):
        await agency.invite(a1)
    with pytest.raises(WrongRole):  # supervisors do not keep agency sets
        await agency.mark(sup, "sup-set")
    with pytest.raises(AgencySetTaken):
        await agency.mark(a1)
    with pytest.raises(AdministratorStays):
        await agency.leave(admin)
    with pytest.raises(NotInvited):
        await a2.social.accept_invitation(AgencyCommand(
            command_id=cid(), session=a2.session, agency_id=agency.id))


async def test_handover_moves_the_work_and_the_leaver_is_refused_at_once(
        nc_all: NATS, tmp_path: Path) -> None:
    agency, (admin, sup, a1, a2) = await staffed(nc_all, tmp_path, "handover")
    (friend,) = await people(nc_all, "handover", "friend")
    await a1.befriend(friend)
    await a1.grant(friend, set_id=BOOKS)
    assert await may(friend, a1, seq=a1.seq) == (True, "")
    before = datetime.now(UTC)
    await agency.hand_over(a1, a2)
    # The old owner's shares went with the set.
    assert (await may(friend, a1))[0] is False
    # Answered, so honoured at once, by whatever token the leaver sends.
    assert await may(a1, a1) == (False, "the account set was handed over to another "
                                        "accountant")
    with pytest.raises(NoAccess, match="handed over"):
        await a1.download(a1, 2018, tmp_path / "gone.bak", set_id=BOOKS)
    with pytest.raises(NoAccess):
        await a1.upload(account_set(tmp_path, "late.bak", 10), set_id=BOOKS)
    version = (await a2.storage.versions(VersionsRequest(
        session=a2.session, owner_id=a1.member_id, set_id=BOOKS, year=2018,
        drive_token=a2.drive, seq=admin.seq))).versions[0].version_id
    with pytest.raises(NoAccess):
        await a1.storage.delete_version(DeleteVersion(command_id=cid(), session=a1.session,
                                                      version_id=version))
    # Their own set is untouched.
    assert await a1.download(a1, 2018, tmp_path / "mine.bak", set_id=PRIVATE) == 3000
    # The new keeper works on it as the old one did; the supervisor of the old one no
    # longer oversees it; a supervisor of the new one would.
    a2.seq = admin.seq
    assert await a2.download(a1, 2018, tmp_path / "a2.bak", set_id=BOOKS) == 4000
    await a2.upload(account_set(tmp_path, "a2.bak", 500), owner=a1, set_id=BOOKS, period=3)
    assert await may(sup, a1) == (False, "not shared")
    await agency.supervise(sup, a2)
    assert await may(sup, a1, seq=admin.seq) == (True, "supervisor")
    # Then a1 is removed: nothing through the agency, their private set still theirs.
    await agency.remove(a1)
    assert await may(a1, a1, set_id=PRIVATE) == (True, "owner")
    assert await may(a1, a1) == (False, "the account set was handed over to another "
                                        "accountant")
    history = await a1.sharing.history(HistoryRequest(
        session=a1.session, set_id=BOOKS, at=datetime.now(UTC), seq=admin.seq))
    assert {(s.account, s.reason) for s in history.seen} == {
        (admin.account, "administrator of 诚信代账"), (a2.account, "keeper of 诚信代账"),
        (sup.account, "supervisor of 诚信代账")}
    earlier = await a1.sharing.history(HistoryRequest(session=a1.session, set_id=BOOKS,
                                                      at=before))
    assert {(s.account, s.reason) for s in earlier.seen} == {
        (admin.account, "administrator of 诚信代账"), (sup.account, "supervisor of 诚信代账"),
        (friend.account, "shared")}


async def test_leaving_ends_every_access_at_once_and_rejoining_brings_none_back(
        nc_all: NATS, tmp_path: Path) -> None:
    agency, (admin, sup, a1, _) = await staffed(nc_all, tmp_path, "leave")
    assert await may(sup, a1, seq=a1.seq) == (True, "supervisor")
    await agency.leave(sup)
    assert await may(sup, a1) == (False, "not shared")
    with pytest.raises(NoAccess):
        await sup.download(a1, 2018, tmp_path / "s.bak", set_id=BOOKS)
    await agency.join(sup, "supervisor")
    assert await may(sup, a1, seq=admin.seq) == (False, "not shared")
    # The accountant leaves: the agency sees their sets no more, they keep them.
    await agency.leave(a1)
    assert await may(admin, a1) == (False, "not shared")
    assert await may(a1, a1) == (True, "owner")
    # A role change ends the supervision that no longer fits.
    await agency.join(a1)
    await agency.mark(a1)
    await agency.supervise(sup, a1)
    assert await may(sup, a1, seq=a1.seq) == (True, "supervisor")
    admin.seq = (await admin.social.change_agency_role(ChangeRole(
        command_id=cid(), session=admin.session, agency_id=agency.id, account=sup.account,
        role="accountant", seq=admin.seq))).seq
    assert await may(sup, a1) == (False, "not shared")
    # Closing the agency ends all of it.
    await admin.social.close_agency(AgencyCommand(command_id=cid(), session=admin.session,
                                                  agency_id=agency.id))
    assert await may(admin, a1) == (False, "not shared")
    listed = await a1.social.agencies(ListAgencies(session=a1.session, seq=admin.seq))
    assert listed.agencies == []


async def test_a_replayed_command_id_appends_nothing_twice(nc_all: NATS,
                                                           tmp_path: Path) -> None:
    agency, (admin, _, a1, a2) = await staffed(nc_all, tmp_path, "replay")
    req = HandOver(command_id=cid(), session=admin.session, agency_id=agency.id,
                   owner=a1.account, set_id=BOOKS, to=a2.account)
    first, again = await asyncio.gather(admin.social.hand_over(req),
                                        admin.social.hand_over(req))
    assert first == again
    view = await admin.social.view_agency(ViewAgency(session=admin.session,
                                                     agency_id=agency.id))
    assert [(s.owner, s.keeper) for s in view.sets] == [(a1.account, a2.account)]


async def test_the_agency_index_and_tables_answer_alike_and_rebuild_equal(
        nc_all: NATS, tmp_path: Path, pool: asyncpg.Pool) -> None:
    agency, (admin, sup, a1, a2) = await staffed(nc_all, tmp_path, "rebuild")
    await agency.hand_over(a1, a2)
    await agency.supervise(sup, a2)
    await agency.leave(a1)
    await agency.supervise(sup, a2, end=True)
    everyone = (admin, sup, a1, a2)
    for who in everyone:
        answered = await may(who, a1, seq=admin.seq)  # by the leader's in-memory index
        stored = await sharing_tables.through_agencies(pool, "sharing", who.member_id,
                                                       a1.member_id, BOOKS)
        assert answered == (domain.owner_allows(stored) if who is a1
                            else domain.agency_allows(stored, access="read"))
    await rebuild(nc_all, pool, AccessProjection(), "agency_rebuilt")
    assert await compare(pool, "sharing", "agency_rebuilt", sharing_tables.TABLES) == []


async def test_the_in_memory_index_follows_agencies_as_a_reload_reads_them(
        settings: Settings, nc: NATS, pool: asyncpg.Pool, events: EventStore,
        tmp_path: Path) -> None:
    async with wired_all(settings, nc, pool, events) as (_, wirings):
        live = cast(Sharing, wirings["sharing"].app).index
        assert live is not None
        agency, (admin, sup, a1, a2) = await staffed(nc, tmp_path, "index")
        await agency.hand_over(a1, a2)
        await agency.supervise(sup, a2)
        await agency.leave(a2)  # the set waits for a keeper
        await agency.join(a2)
        await agency.hand_over(a1, a2)
        await agency.remove(sup)
        await admin.sharing.history(HistoryRequest(session=admin.session, set_id=BOOKS,
                                                   at=datetime.now(UTC), seq=admin.seq))
        fresh = AccessIndex()
        async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
            await fresh.reload(conn, "sharing")
        assert (live.agencies, live.agency_access) == (fresh.agencies, fresh.agency_access)
        assert live.through_agencies(a2.member_id, a1.member_id, BOOKS) == {
            agency.id: ("keeper", "read-write")}
        assert live.through_agencies(sup.member_id, a1.member_id, BOOKS) == {}


async def until(ask: Callable[[], Awaitable[bool]], within: float = 20) -> bool:
    """Whether ``ask`` comes true within ``within`` seconds (a policy acts after the
    command that caused it has answered)."""
    deadline = asyncio.get_running_loop().time() + within
    while not await ask():
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.2)
    return True


async def test_an_erased_member_leaves_every_agency_and_an_erased_administrator_closes_it(
        nc_all: NATS, tmp_path: Path, events: EventStore) -> None:
    agency, (admin, sup, a1, _) = await staffed(nc_all, tmp_path, "erase")
    await sup.identity.delete_member(DeleteMember(command_id=cid(), session=sup.session,
                                                  password="secret-1"))

    async def sup_removed() -> bool:
        removed = await events.load(agency_subjects(agency.id))
        return any(e.type == "MemberRemoved" for e in removed)

    assert await until(sup_removed)
    view = await admin.social.view_agency(ViewAgency(session=admin.session,
                                                     agency_id=agency.id))
    assert sup.account not in {m.account for m in view.members}
    await admin.identity.delete_member(DeleteMember(command_id=cid(), session=admin.session,
                                                    password="secret-1"))

    async def closed() -> bool:
        return (await a1.social.agencies(ListAgencies(session=a1.session))).agencies == []

    assert await until(closed)
    assert await may(a1, a1) == (True, "owner")


async def test_a_replay_answers_as_the_first_run_even_when_it_appended_nothing(
        nc_all: NATS, tmp_path: Path, events: EventStore) -> None:
    agency, (admin, _, a1, a2) = await staffed(nc_all, tmp_path, "noop")
    to_a1 = HandOver(command_id=cid(), session=admin.session, agency_id=agency.id,
                     owner=a1.account, set_id=BOOKS, to=a1.account)
    nothing = await admin.social.hand_over(to_a1)  # a1 keeps it already: nothing to do
    await agency.hand_over(a1, a2)
    # The attacker (or a late network duplicate) replays the no-op: it hands nothing back.
    again = await admin.social.hand_over(to_a1)
    assert (again.agency_id, again.seq >= nothing.seq) == (agency.id, True)
    assert await may(a2, a1, "write") == (True, "keeper")
    # A refused command stays refused, though it would pass now.
    (late,) = await people(nc_all, "noop", "late")
    admin.seq = max(admin.seq, late.seq)
    accept = AgencyCommand(command_id=cid(), session=late.session, agency_id=agency.id)
    with pytest.raises(NotInvited):
        await late.social.accept_invitation(accept)
    await agency.invite(late)
    with pytest.raises(NotInvited):
        await late.social.accept_invitation(accept)
    joined = await events.load(agency_subjects(agency.id))
    assert not any(e.type == "MemberJoined" and late.member_id in e.data.decode()
                   for e in joined)
