"""The bookkeeping-agency part of `ledgershare demo`: an agency (代账公司) at work.

An administrator creates the agency and invites a supervisor and two accountants, who
accept; the supervisor is given accountant 1 to oversee. Accountant 1 backs up a client's
books, marks them as agency work (and keeps a set of their own that is not); the
supervisor lists the agency sets and downloads a year, and is refused the other set. The
administrator hands the books over to accountant 2 and removes accountant 1: accountant 2
downloads them, accountant 1 (the leaver) is refused, and the history says who could see
the set and why, before the handover and now.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from contracts.agency import (
    AgencyCommand,
    CreateAgency,
    HandOver,
    Invite,
    MarkSet,
    MemberCommand,
    StaffRole,
    Supervision,
    ViewAgency,
)
from contracts.identity import SetDrivePassword, VerifyDrivePassword
from contracts.sharing import AgencySetsRequest, HistoryRequest, SharingClient
from contracts.social import SocialClient
from contracts.storage import megabytes

if TYPE_CHECKING:
    from cli.demo import Member, Walkthrough

AGENCY = "诚信代账"
BOOKS_ID = "5d1c2e3f-0000-4000-8000-000000000456"  # a client's books: agency work
BOOKS = "星河贸易"
OWN_ID = "5d1c2e3f-0000-4000-8000-000000000789"  # the accountant's own set: not agency work
OWN = "家庭账"


class AgencyWalk:
    """An administrator, a supervisor and two accountants through an agency's work."""

    def __init__(self, w: Walkthrough) -> None:
        from cli.demo import Member

        self.w = w
        self.social: SocialClient = w.social
        self.sharing: SharingClient = w.sharing
        base = w.a.account[:-1]  # the walkthrough's accounts, numbered on from A and B
        self.admin = Member(f"{base}3", "王芳")
        self.sup = Member(f"{base}4", "刘洋")
        self.a1 = Member(f"{base}5", "陈静")
        self.a2 = Member(f"{base}6", "杨帆")
        self.agency_id = ""
        self.roles = {self.admin.account: "administrator", self.sup.account: "supervisor",
                      self.a1.account: "accountant 1", self.a2.account: "accountant 2"}

    def who(self, m: Member) -> str:
        """A member as a step names them: their part in the agency and their account."""
        return f"{self.roles[m.account]} {m.account}"

    def nick(self, account: str) -> str:
        """An account in an answer, with its nickname."""
        found = [m.nickname for m in self.everyone if m.account == account]
        return f"{account} ({found[0]})" if found else account

    @property
    def everyone(self) -> tuple[Member, ...]:
        return self.admin, self.sup, self.a1, self.a2

    def seen(self, seq: int) -> None:
        """Every desktop program passes on the newest consistency token any has seen."""
        newest = max(seq, *(m.seq for m in self.everyone))
        for m in self.everyone:
            m.seq = newest

    async def run(self) -> None:
        for m in self.everyone:
            await self.w.register(m)
        await self.staff()
        original = await self.books()
        await self.supervise(original)
        before = datetime.now(UTC)
        await self.hand_over(original)
        await self.history(before)

    # ---- the agency and its people ------------------------------------------------------

    async def staff(self) -> None:
        from cli.demo import new_id

        admin = self.admin
        made = await self.social.create_agency(CreateAgency(
            command_id=new_id(), session=admin.session, name=AGENCY, seq=admin.seq))
        self.agency_id = made.agency_id
        self.seen(made.seq)
        self.w.step(f"{admin.account} ({admin.nickname}) creates the bookkeeping agency "
                    f"(代账公司) {AGENCY}",
                    f"agency {made.agency_id[:8]}…; {admin.nickname} is its administrator")
        staff: list[tuple[Member, StaffRole]] = [
            (self.sup, "supervisor"), (self.a1, "accountant"), (self.a2, "accountant")]
        for m, role in staff:
            invited = await self.social.invite_to_agency(Invite(
                command_id=new_id(), session=admin.session, agency_id=self.agency_id,
                account=m.account, nickname=m.nickname, role=role, seq=admin.seq))
            self.seen(invited.seq)
        self.w.step(f"{self.who(admin)} invites {self.nick(self.sup.account)} as supervisor, "
                    f"{self.nick(self.a1.account)} and {self.nick(self.a2.account)} as "
                    "accountants (account and nickname, as a friend request)",
                    f"{len(staff)} invitation(s) open")
        for m, _ in staff:
            accepted = await self.social.accept_invitation(AgencyCommand(
                command_id=new_id(), session=m.session, agency_id=self.agency_id,
                seq=m.seq))
            self.seen(accepted.seq)
        self.w.step(f"{self.who(self.sup)}, {self.who(self.a1)} and {self.who(self.a2)} "
                    "accept",
                    f"{len(staff)} joined {AGENCY}")
        assigned = await self.social.assign_supervision(Supervision(
            command_id=new_id(), session=admin.session, agency_id=self.agency_id,
            supervisor=self.sup.account, accountant=self.a1.account, seq=admin.seq))
        self.seen(assigned.seq)
        view = await self.social.view_agency(ViewAgency(
            session=admin.session, agency_id=self.agency_id, seq=admin.seq))
        rows = "; ".join(
            f"{self.nick(m.account)} {m.role}" + (
                f" over {', '.join(self.nick(a) for a in m.supervises)}"
                if m.supervises else "")
            for m in view.members)
        self.w.step(f"{self.who(admin)} has {self.who(self.sup)} supervise "
                    f"{self.who(self.a1)}; the agency's members", rows)
        for m in (self.sup, self.a2):
            await self.unlock(m)
        self.w.step(f"{self.who(self.sup)} and {self.who(self.a2)} open Cloud Share with "
                    "their cloud-drive passwords", "drive tokens issued")

    async def unlock(self, m: Member) -> None:
        from cli.demo import new_id

        await self.w.identity.drive_password_set(SetDrivePassword(
            command_id=new_id(), session=m.session, password="drive-789",
            question="first pet?", answer="Rex"))
        m.drive = (await self.w.identity.drive_password_verify(VerifyDrivePassword(
            command_id=new_id(), session=m.session, password="drive-789"))).drive_token

    # ---- accountant 1's work, the supervisor reading it ---------------------------------

    async def books(self) -> Path:
        from cli.demo import account_set_file, new_id

        a1, folder = self.a1, self.w.folder
        original = account_set_file(folder / "books-2018.bak", year=2018, period=3,
                                    name=BOOKS)
        await self.w.put(a1, a1, original, period=3, base=None, set_id=BOOKS_ID,
                         set_name=BOOKS)
        own = account_set_file(folder / "own-2018.bak", year=2018, period=1, size=100_000,
                               name=OWN)
        await self.w.put(a1, a1, own, period=1, base=None, set_id=OWN_ID, set_name=OWN)
        self.seen(a1.seq)
        marked = await self.social.mark_agency_set(MarkSet(
            command_id=new_id(), session=a1.session, agency_id=self.agency_id,
            set_id=BOOKS_ID, seq=a1.seq))
        self.seen(marked.seq)
        self.w.step(f"{self.who(a1)} marks set {BOOKS} as the agency's work ({OWN} stays "
                    "their own)", f"agency work of {AGENCY}, kept by {self.nick(a1.account)}")
        return original

    async def supervise(self, original: Path) -> None:
        sup, a1 = self.sup, self.a1
        listed = await self.sharing.agency_sets(AgencySetsRequest(
            session=sup.session, agency_id=self.agency_id, drive_token=sup.drive,
            seq=sup.seq))
        rows = "; ".join(
            f"{w.set_name} in {w.owner}'s drive, kept by {self.nick(w.keeper) or 'nobody'}, as "
            f"{w.reason}, {w.permission}: " + ", ".join(
                f"{y.year} ({', '.join(v.remark for v in y.versions)})" for y in w.years)
            for w in listed.sets)
        self.w.step(f"{self.who(sup)} lists the agency sets of {AGENCY} they may see", rows)
        await self.same(sup, original, f"{self.who(sup)} downloads {BOOKS}, 2018 from "
                                       f"{a1.account}'s drive", "sup-2018.bak")
        await self.w.refused(f"{self.who(sup)} tries to download {a1.account}'s {OWN}, "
                             "2018 (not agency work)",
                             self.w.fetch(sup, a1, "sup-own.bak", set_id=OWN_ID))

    async def same(self, who: Member, original: Path, asked: str, name: str) -> None:
        from cli.demo import facts

        got = await self.w.fetch(who, self.a1, name, set_id=BOOKS_ID)
        (size, got_sha), (_, sha) = [await asyncio.to_thread(facts, p)
                                     for p in (got, original)]
        self.w.step(asked, f"{megabytes(size)}, identical to {self.a1.account}'s backup: "
                           f"{got_sha == sha}")

    # ---- the handover, the leaver, the history -------------------------------------------

    async def hand_over(self, original: Path) -> None:
        from cli.demo import new_id

        admin, a1, a2 = self.admin, self.a1, self.a2
        handed = await self.social.hand_over(HandOver(
            command_id=new_id(), session=admin.session, agency_id=self.agency_id,
            owner=a1.account, set_id=BOOKS_ID, to=a2.account, seq=admin.seq))
        self.seen(handed.seq)
        self.w.step(f"{self.who(admin)} hands {BOOKS} (in {a1.account}'s drive) over to "
                    f"{self.who(a2)}", f"kept by {self.nick(a2.account)} from now on; the "
                                       f"files stay in {a1.account}'s drive")
        removed = await self.social.remove_from_agency(MemberCommand(
            command_id=new_id(), session=admin.session, agency_id=self.agency_id,
            account=a1.account, seq=admin.seq))
        self.seen(removed.seq)
        self.w.step(f"{self.who(admin)} removes {self.who(a1)} from {AGENCY}",
                    "removed: every access through the agency ended")
        await self.same(a2, original, f"{self.who(a2)} downloads {BOOKS}, 2018 (now "
                                      "theirs to keep)", "a2-2018.bak")
        await self.w.refused(f"{self.who(a1)}, who left, tries to download {BOOKS}, 2018",
                             self.w.fetch(a1, a1, "a1-late.bak", set_id=BOOKS_ID))

    async def history(self, before: datetime) -> None:
        a1 = self.a1
        for when, at in (("just before the handover", before), ("now", datetime.now(UTC))):
            seen = await self.sharing.history(HistoryRequest(
                session=a1.session, set_id=BOOKS_ID, at=at, seq=a1.seq))
            self.w.step(f"who could see {BOOKS} in {a1.account}'s drive {when} (history)",
                        "; ".join(f"{self.nick(s.account)}: {s.reason}" for s in seen.seen)
                        or "nobody else")
