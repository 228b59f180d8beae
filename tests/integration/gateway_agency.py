"""The gateway matrix's cases for bookkeeping agencies (social's agency operations,
`sharing/agency_sets`, and storage refusing an owner whose set an agency handed over): the
world they stand on (an agency the matrix's owner runs, with members in every relation to
it) and one case per operation and declared error, asked as an attacker would: a member
who is no administrator giving the administrator's commands, an invitee who never
accepted, a removed or departed member, an outsider, replayed command ids.
`test_gateway_matrix.py` runs them with the others."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

from contracts.agency import AgencyCommand, StaffRole, agency_subjects
from tests.helpers import PASSWORD, cid
from tests.integration.gateway_world import OK, Case, upload_body
from tests.integration.test_agency import Agency

if TYPE_CHECKING:
    from tests.integration.gateway_world import World
    from tests.integration.test_sharing import Person

BOOKS = "books-a"  # an accountant's agency set (2018 uploaded)
PRIVATE = "private"  # the giver's own set, never agency work (2018 uploaded)
OWNERS_BOOKS = "owner-books"  # the matrix's owner keeps it as agency work elsewhere
NOWHERE = "no-such-agency"  # an agency id no agency has


@dataclass
class AgencyWorld:
    """One agency ("main", `id`) the matrix's owner administers, with a member in every
    relation to it, and the agencies around it; made over NATS."""

    admin: Person  # the matrix's owner
    sup: Person  # a supervisor, overseeing acc
    acc: Person  # an accountant keeping BOOKS (agency work; version `books`)
    acc2: Person  # an accountant with no agency sets, overseen by nobody
    giver: Person  # an accountant whose BOOKS (version `given`) was handed to keeper
    keeper: Person  # an accountant keeping the giver's BOOKS since
    invitee: Person  # invited as an accountant, never accepted (and to `closed`)
    removed: Person  # a supervisor over acc, removed since
    leaver: Person  # a supervisor over acc, who left since
    outsider: Person  # the matrix's stranger: in no agency
    other: Person  # administers `elsewhere` and `pending`
    pal: Person  # a friend the giver shared BOOKS with before handing it over
    id: str
    closed: str  # the owner's agency, closed since
    elsewhere: str  # the owner is an accountant there, keeping OWNERS_BOOKS
    pending: str  # the owner is invited there, not accepted
    books: str
    given: str
    sets: int = 0

    def fresh_set(self) -> str:
        """A set id no case used before."""
        self.sets += 1
        return f"fresh-{self.sets}"


async def agency_world(w: World) -> AgencyWorld:
    admin = w.owner
    sup, acc, acc2, giver, keeper, invitee, removed, leaver, other, pal = await asyncio.gather(
        *(w.join(name, drive=True) for name in ("Sup", "Acc", "Acc2", "Giver", "Keeper",
                                                "Invitee", "Removed", "Leaver", "Other", "Pal")))
    admin.seq = other.seq = max(p.seq for p in (admin, sup, acc, acc2, giver, keeper, invitee,
                                                removed, leaver, other))
    main = await Agency.create(admin, "诚信代账")
    for person in (sup, removed, leaver):
        await main.join(person, "supervisor")
    for person in (acc, acc2, giver, keeper):
        await main.join(person)
    await main.invite(invitee)
    books = await acc.upload(w.file(), set_id=BOOKS)
    given = await giver.upload(w.file(), set_id=BOOKS)
    await giver.upload(w.file(), set_id=PRIVATE)
    await main.mark(acc)
    await main.mark(giver)
    await giver.befriend(pal)
    await giver.grant(pal, set_id=BOOKS)
    await main.hand_over(giver, keeper)
    for person in (sup, removed, leaver):
        await main.supervise(person, acc)
    await main.remove(removed)
    await main.leave(leaver)
    closed = await Agency.create(admin, "旧公司")
    await closed.invite(invitee)
    await admin.social.close_agency(AgencyCommand(command_id=cid(), session=admin.session,
                                                  agency_id=closed.id))
    elsewhere = await Agency.create(other, "别家代账")
    await elsewhere.join(admin)
    await elsewhere.mark(admin, OWNERS_BOOKS)
    pending = await Agency.create(other, "新开代账")
    await pending.invite(admin)
    return AgencyWorld(admin=admin, sup=sup, acc=acc, acc2=acc2, giver=giver, keeper=keeper,
                       invitee=invitee, removed=removed, leaver=leaver, outsider=w.stranger,
                       other=other, pal=pal, id=main.id, closed=closed.id, elsewhere=elsewhere.id,
                       pending=pending.id, books=books, given=given)


# ---- how a case asks ----------------------------------------------------------------------

Body = Callable[[AgencyWorld], dict[str, Any]]
WHERE: dict[str, Callable[[AgencyWorld], str]] = {
    "main": lambda a: a.id, "closed": lambda a: a.closed, "nowhere": lambda a: NOWHERE,
    "elsewhere": lambda a: a.elsewhere, "pending": lambda a: a.pending}


async def last_seq(w: World, agency_id: str) -> int:
    """The sequence of the agency's newest event (0: none)."""
    last = await w.events.last_on(agency_subjects(agency_id))
    return 0 if last is None else last.seq


def command(agency_id: str, **fields: Any) -> dict[str, Any]:
    return {"command_id": cid(), "agency_id": agency_id, **fields}


def asked(op: str, who: str, status: int, code: str, body: Body, label: str = "") -> Case:
    """Member ``who`` of the agency world sends ``op`` the request ``body`` makes; a
    refused command must append nothing to its agency."""
    async def act(w: World) -> httpx.Response:
        a = w.agency
        fields = body(a)
        agency = fields.get("agency_id") if code != OK and "command_id" in fields else None
        before = await last_seq(w, agency) if agency else 0
        answer = await w.post(op, fields, by=getattr(a, who))
        if agency:
            assert await last_seq(w, agency) == before, "a refusal appended to the agency"
        return answer
    return Case(op, status, code, act, label)


def on(where: str, **fields: Callable[[AgencyWorld], Any] | Any) -> Body:
    """A command's request on the agency named ``where``; a field given as a function of
    the agency world is filled in from it."""
    def body(a: AgencyWorld) -> dict[str, Any]:
        return command(WHERE[where](a), **{k: v(a) if callable(v) else v
                                           for k, v in fields.items()})
    return body


def query(where: str, **fields: Any) -> Body:
    def body(a: AgencyWorld) -> dict[str, Any]:
        return {"agency_id": WHERE[where](a), **fields}
    return body


def acct(who: str) -> Callable[[AgencyWorld], str]:
    """The account of member ``who`` of the agency world."""
    return lambda a: str(getattr(a, who).account)


def nick(who: str) -> Callable[[AgencyWorld], str]:
    return lambda a: str(getattr(a, who).nickname)


# Who is not in the main agency, each a way of not being in it.
NOT_IN = {"invitee": "an invitee who never accepted", "removed": "a removed member",
          "leaver": "a member who left", "outsider": "an outsider"}

# A request of each administrator's command the administrator could give the main agency.
ADMIN_OPS: dict[str, dict[str, Callable[[AgencyWorld], Any] | Any]] = {
    "social/invite_to_agency": {"account": acct("outsider"), "nickname": nick("outsider")},
    "social/remove_from_agency": {"account": acct("acc2")},
    "social/change_agency_role": {"account": acct("acc2"), "role": "supervisor"},
    "social/assign_supervision": {"supervisor": acct("sup"), "accountant": acct("acc2")},
    "social/end_supervision": {"supervisor": acct("sup"), "accountant": acct("acc")},
    "social/hand_over": {"owner": acct("acc"), "set_id": BOOKS, "to": acct("acc2")},
    "social/agency_settings": {"supervisors_write": True},
    "social/close_agency": {},
}


def admin_refusals() -> list[Case]:
    """Every administrator's command refused alike: to members who are no administrator,
    to those not in the agency, and on an agency that does not exist or is closed."""
    cases = []
    for op, fields in ADMIN_OPS.items():
        cases += [
            asked(op, "sup", 403, "not_agency_admin", on("main", **fields), "by a supervisor"),
            asked(op, "acc", 403, "not_agency_admin", on("main", **fields),
                  "by an accountant"),
            asked(op, "keeper", 403, "not_agency_admin", on("main", **fields),
                  "by an accountant handed a set"),
            *(asked(op, who, 404, "no_such_agency", on("main", **fields), f"by {why}")
              for who, why in NOT_IN.items()),
            asked(op, "admin", 404, "no_such_agency", on("nowhere", **fields),
                  "an agency id no agency has"),
            asked(op, "admin", 404, "no_such_agency", on("closed", **fields),
                  "the administrator's agency, closed"),
            asked(op, "other", 404, "no_such_agency", on("main", **fields),
                  "by another agency's administrator")]
    return cases


ADMIN_REFUSALS = admin_refusals()


# ---- the cases that succeed, and each operation's own refusals ----------------------------

def main_agency(w: World) -> Agency:
    """The main agency, as its administrator drives it over NATS."""
    return Agency(w.agency.admin, w.agency.id)


async def newcomer(w: World, admin: Person) -> Person:
    """A member who registered just now, whom ``admin`` may name at once (their
    consistency seq covers the registration)."""
    person = await w.join("Fresh")
    admin.seq = max(admin.seq, person.seq)
    return person


async def joined(w: World, role: StaffRole = "accountant") -> Person:
    """A new member who joined the main agency just now (over NATS)."""
    person = await newcomer(w, w.agency.admin)
    await main_agency(w).join(person, role)
    return person


async def invited(w: World) -> Person:
    """A new member invited to the main agency just now (over NATS)."""
    person = await newcomer(w, w.agency.admin)
    await main_agency(w).invite(person)
    return person


def ok(answer: httpx.Response) -> dict[str, Any]:
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def places(w: World, who: Person) -> dict[str, tuple[str, bool]]:
    """The agencies ``who`` lists: agency id -> (role, invited)."""
    body = ok(await w.post("social/agencies", by=who))
    return {e["agency_id"]: (e["role"], e["invited"]) for e in body["agencies"]}


async def sees(w: World, who: Person, agency_id: str) -> int:
    """The status ``who`` is answered viewing the agency."""
    return (await w.post("social/view_agency", {"agency_id": agency_id}, by=who)).status_code


async def create_again(w: World) -> httpx.Response:
    """The same create command again: the same agency, and nothing appended."""
    p = await w.join()
    body = {"command_id": cid(), "name": "诚信代账"}
    first = ok(await w.post("social/create_agency", body, by=p))
    before = await last_seq(w, first["agency_id"])
    again = await w.post("social/create_agency", body, by=p)
    assert ok(again) == first, again.text
    assert await last_seq(w, first["agency_id"]) == before, "the repeat appended"
    return again


async def create_with_anothers_command_id(w: World) -> httpx.Response:
    """Another member sending someone's create command id makes an agency of their own."""
    a, b = await w.join(), await w.join()
    body = {"command_id": cid(), "name": "诚信代账"}
    first = ok(await w.post("social/create_agency", body, by=a))
    theirs = await w.post("social/create_agency", body, by=b)
    assert ok(theirs)["agency_id"] != first["agency_id"], theirs.text
    assert await sees(w, b, first["agency_id"]) == 404
    return theirs


async def invite_fresh(w: World) -> httpx.Response:
    a, p = w.agency, await w.join("Fresh")
    answer = await w.post("social/invite_to_agency", command(
        a.id, account=p.account, nickname=p.nickname, role="supervisor"), by=a.admin)
    assert (await places(w, p)).get(a.id) == ("supervisor", True), answer.text
    assert await sees(w, p, a.id) == 404, "an invitation opens nothing"
    return answer


async def invite_the_erased(w: World) -> httpx.Response:
    """An account deleted since is no member to invite."""
    p = await w.join("Gone")
    assert (await w.post("identity/delete_member", {"command_id": cid(), "password": PASSWORD},
                         by=p)).status_code == 200
    a = w.agency
    return await w.post("social/invite_to_agency", command(
        a.id, account=p.account, nickname=p.nickname), by=a.admin)


async def remove_joined(w: World) -> httpx.Response:
    a, p = w.agency, await joined(w)
    answer = await w.post("social/remove_from_agency", command(a.id, account=p.account),
                          by=a.admin)
    assert await sees(w, p, a.id) == 404, answer.text
    return answer


async def removal_replayed_after_rejoining(w: World) -> httpx.Response:
    """The administrator's removal sent again after the member rejoined answers as it did
    and does not remove them again."""
    a, p = w.agency, await joined(w)
    body = command(a.id, account=p.account)
    first = ok(await w.post("social/remove_from_agency", body, by=a.admin))
    await main_agency(w).join(p)
    again = await w.post("social/remove_from_agency", body, by=a.admin)
    assert ok(again) == first, again.text
    assert await sees(w, p, a.id) == 200, "the replayed removal removed the member again"
    return again


async def removal_replayed_by_a_supervisor(w: World) -> httpx.Response:
    """The administrator's command, replayed verbatim by a supervisor: their own command,
    refused (not the administrator's answer)."""
    a, p = w.agency, await joined(w)
    body = command(a.id, account=p.account)
    ok(await w.post("social/remove_from_agency", body, by=a.admin))
    before = await last_seq(w, a.id)
    answer = await w.post("social/remove_from_agency", body, by=a.sup)
    assert await last_seq(w, a.id) == before, "a refusal appended to the agency"
    return answer


async def change_role(w: World) -> httpx.Response:
    a, p = w.agency, await joined(w)
    answer = await w.post("social/change_agency_role", command(
        a.id, account=p.account, role="supervisor"), by=a.admin)
    assert (await places(w, p)).get(a.id) == ("supervisor", False), answer.text
    return answer


async def unchanged(w: World, op: str, who: Person, body: dict[str, Any]) -> httpx.Response:
    """``op`` that changes nothing: answered, nothing appended to the agency."""
    before = await last_seq(w, body["agency_id"])
    answer = await w.post(op, body, by=who)
    assert await last_seq(w, body["agency_id"]) == before, "appended: " + answer.text
    return answer


async def supervise_fresh(w: World, *, end: bool = False) -> httpx.Response:
    a = w.agency
    sup, acc = await joined(w, "supervisor"), await joined(w)
    if end:
        await main_agency(w).supervise(sup, acc)
    op = "social/end_supervision" if end else "social/assign_supervision"
    return await w.post(op, command(a.id, supervisor=sup.account, accountant=acc.account),
                        by=a.admin)


async def hand_over_fresh(w: World) -> httpx.Response:
    a = w.agency
    giver, keeper = await joined(w), await joined(w)
    sid = a.fresh_set()
    await main_agency(w).mark(giver, sid)
    answer = await w.post("social/hand_over", command(
        a.id, owner=giver.account, set_id=sid, to=keeper.account), by=a.admin)
    assert (await w.post("social/unmark_agency_set", command(a.id, set_id=sid),
                         by=giver)).status_code == 404, "the giver took the set back"
    return answer


async def settings_of_a_fresh_agency(w: World) -> httpx.Response:
    agency = await Agency.create(await w.join())
    return await w.post("social/agency_settings", command(agency.id, supervisors_write=True),
                        by=agency.admin)


async def close_fresh(w: World) -> httpx.Response:
    agency = await Agency.create(await w.join())
    member = await newcomer(w, agency.admin)
    await agency.join(member, "supervisor")
    answer = await w.post("social/close_agency", command(agency.id), by=agency.admin)
    assert [await sees(w, p, agency.id) for p in (agency.admin, member)] == [404, 404]
    assert agency.id not in await places(w, member), answer.text
    return answer


async def accept_fresh(w: World) -> httpx.Response:
    a, p = w.agency, await invited(w)
    answer = await w.post("social/accept_invitation", command(a.id), by=p)
    assert await sees(w, p, a.id) == 200, answer.text
    return answer


async def accept_replayed_after_removal(w: World) -> httpx.Response:
    """A removed member sends their accept again: answered as it was, and not back in."""
    a, p = w.agency, await invited(w)
    body = command(a.id)
    first = ok(await w.post("social/accept_invitation", body, by=p))
    await main_agency(w).remove(p)
    again = await w.post("social/accept_invitation", body, by=p)
    assert ok(again) == first, again.text
    assert await sees(w, p, a.id) == 404, "the replayed accept let a removed member back in"
    assert a.id not in await places(w, p)
    return again


async def accept_a_withdrawn_invitation(w: World) -> httpx.Response:
    a, p = w.agency, await invited(w)
    ok(await w.post("social/remove_from_agency", command(a.id, account=p.account),
                    by=a.admin))
    return await w.post("social/accept_invitation", command(a.id), by=p)


async def leave_fresh(w: World) -> httpx.Response:
    a, p = w.agency, await joined(w, "supervisor")
    answer = await w.post("social/leave_agency", command(a.id), by=p)
    assert await sees(w, p, a.id) == 404, answer.text
    return answer


async def leave_replayed_after_rejoining(w: World) -> httpx.Response:
    a, p = w.agency, await joined(w)
    body = command(a.id)
    first = ok(await w.post("social/leave_agency", body, by=p))
    await main_agency(w).join(p)
    again = await w.post("social/leave_agency", body, by=p)
    assert ok(again) == first, again.text
    assert await sees(w, p, a.id) == 200, "the replayed leave took the member out again"
    return again


async def mark_fresh(w: World) -> httpx.Response:
    a = w.agency
    return await w.post("social/mark_agency_set", command(a.id, set_id=a.fresh_set()),
                        by=a.acc)


async def unmark_fresh(w: World) -> httpx.Response:
    a = w.agency
    sid = a.fresh_set()
    await main_agency(w).mark(a.acc, sid)
    return await w.post("social/unmark_agency_set", command(a.id, set_id=sid), by=a.acc)


async def agencies_of(w: World, who: str, expected: dict[str, tuple[str, bool]],
                      absent: tuple[str, ...]) -> httpx.Response:
    """``who`` lists at least ``expected`` (named as in WHERE) and none of ``absent``."""
    a = w.agency
    answer = await w.post("social/agencies", by=getattr(a, who))
    listed = {e["agency_id"]: (e["role"], e["invited"]) for e in ok(answer)["agencies"]}
    assert {WHERE[k](a): v for k, v in expected.items()}.items() <= listed.items(), (
        who, listed)
    assert not {WHERE[k](a) for k in absent} & set(listed), (who, listed)
    return answer


def listing(who: str, expected: dict[str, tuple[str, bool]], absent: tuple[str, ...] = (),
            label: str = "") -> Case:
    return Case("social/agencies", 200, OK, lambda w: agencies_of(w, who, expected, absent),
                label or f"{who} lists {sorted(expected) or 'none'}")


async def view_main(w: World, who: str) -> httpx.Response:
    """``who`` views the main agency: every member as the world made them, an invitation
    as one, nobody who left or was removed; its sets and who keeps them."""
    a = w.agency
    answer = await w.post("social/view_agency", {"agency_id": a.id}, by=getattr(a, who))
    body = ok(answer)
    members = {m["account"]: (m["role"], m["invited"]) for m in body["members"]}
    staff = {a.admin: "administrator", a.sup: "supervisor", a.acc: "accountant",
             a.acc2: "accountant", a.giver: "accountant", a.keeper: "accountant"}
    expected = {p.account: (role, False) for p, role in staff.items()}
    expected[a.invitee.account] = ("accountant", True)
    assert expected.items() <= members.items(), members
    assert not {a.removed.account, a.leaver.account, a.outsider.account} & set(members)
    [sup] = [m for m in body["members"] if m["account"] == a.sup.account]
    assert sup["supervises"] == [a.acc.account], sup
    sets = {(s["owner"], s["set_id"], s["keeper"]) for s in body["sets"]}
    assert {(a.acc.account, BOOKS, a.acc.account),
            (a.giver.account, BOOKS, a.keeper.account)} <= sets, sets
    return answer


Work = tuple[str, str, str, str, str]  # owner, keeper, set, reason, permission


async def agency_work(w: World, who: str, expected: set[Work]) -> httpx.Response:
    """``who`` lists exactly ``expected`` of the main agency's sets (named by role)."""
    a = w.agency
    person: Person = getattr(a, who)
    answer = await w.post("sharing/agency_sets", {"agency_id": a.id,
                                                  "drive_token": person.drive}, by=person)
    seen = {(s["owner"], s["keeper"], s["set_id"], s["reason"], s["permission"])
            for s in ok(answer)["sets"]}
    named = {(getattr(a, o).account, getattr(a, k).account, sid, why, perm)
             for o, k, sid, why, perm in expected}
    assert seen == named, (who, seen)
    return answer


def works(who: str, *expected: Work, label: str = "") -> Case:
    return Case("sharing/agency_sets", 200, OK,
                lambda w: agency_work(w, who, set(expected)),
                label or f"{who} sees {len(expected)} set(s)")


# ---- storage through an agency ------------------------------------------------------------

STORAGE_ASK: dict[str, Callable[[World, str], dict[str, Any]]] = {
    "storage/versions": lambda w, sid: {"set_id": sid, "year": 2018},
    "storage/download": lambda w, sid: {"command_id": cid(), "set_id": sid, "year": 2018},
    "storage/begin_upload": lambda w, sid: upload_body(w.file(), set_id=sid, period=3),
}


def on_set(op: str, who: str, owner: str, status: int, code: str, label: str,
           set_id: str = BOOKS) -> Case:
    """Member ``who`` asks ``op`` of ``owner``'s set (their own: no owner named)."""
    async def act(w: World) -> httpx.Response:
        a = w.agency
        person, holder = getattr(a, who), getattr(a, owner)
        fields = STORAGE_ASK[op](w, set_id)
        if person is not holder:
            fields |= {"owner_id": holder.member_id, "drive_token": person.drive}
        return await w.post(op, fields, by=person)
    return Case(op, status, code, act, label)


async def delete_other_set_of_the_giver(w: World) -> httpx.Response:
    """The giver still deletes in their own sets: only the handed-over one is refused."""
    giver = w.agency.giver
    version = await giver.upload(w.file(), set_id=PRIVATE, year=2019)
    return await w.post("storage/delete_version", {"command_id": cid(), "version_id": version},
                        by=giver)


async def shared_after_the_handover(w: World) -> httpx.Response:
    """The giver befriends someone and shares the set handed over (whatever sharing answers
    that), who then asks for it."""
    giver, friend = w.agency.giver, await w.join("Friend", drive=True)
    await giver.befriend(friend)
    granted = await w.post("sharing/grant", {"command_id": cid(), "set_id": BOOKS,
                                             "friends": [friend.account]}, by=giver)
    assert granted.status_code in (200, 400, 403, 404, 409), granted.text
    return await w.post("storage/download", {
        "command_id": cid(), "set_id": BOOKS, "year": 2018, "owner_id": giver.member_id,
        "drive_token": friend.drive}, by=friend)


def delete_by(who: str, version: str, status: int, code: str, label: str) -> Case:
    return Case("storage/delete_version", status, code, lambda w: w.post(
        "storage/delete_version", {"command_id": cid(),
                                   "version_id": getattr(w.agency, version)},
        by=getattr(w.agency, who)), label)


STORAGE = [
    *(on_set(op, who, "acc", 200, OK, f"{who} through the agency")
      for op in ("storage/versions", "storage/download") for who in ("admin", "sup")),
    on_set("storage/download", "keeper", "giver", 200, OK, "the keeper of a handed-over set"),
    on_set("storage/begin_upload", "keeper", "giver", 200, OK,
           "the keeper of a handed-over set"),
    on_set("storage/download", "acc", "acc", 200, OK, "an accountant their own agency set"),
    on_set("storage/download", "giver", "giver", 200, OK, "the giver their other set",
           set_id=PRIVATE),
    on_set("storage/begin_upload", "sup", "acc", 403, "no_access",
           "a supervisor, while supervisors read only"),
    *(on_set(op, who, "acc", 403, "no_access", f"{why}, of an agency set")
      for op in ("storage/versions", "storage/download")
      for who, why in {**NOT_IN, "acc2": "a colleague", "keeper": "another keeper"}.items()),
    *(on_set(op, "giver", "giver", 403, "no_access", "the owner, of the set handed over")
      for op in STORAGE_ASK),
    on_set("storage/download", "keeper", "giver", 403, "no_access",
           "the keeper, of the giver's other set", set_id=PRIVATE),
    *(on_set(op, "pal", "giver", 403, "no_access",
             "a friend the owner shared the set with before handing it over")
      for op in ("storage/versions", "storage/download")),
    Case("storage/download", 403, "no_access", shared_after_the_handover,
         "a friend the owner shares the set with after handing it over"),
    delete_by("giver", "given", 403, "no_access", "the owner, of the set handed over"),
    delete_by("keeper", "given", 404, "no_such_version",
              "the keeper, of the owner's version of the set"),
    delete_by("admin", "books", 404, "no_such_version",
              "the administrator, of an accountant's version"),
    delete_by("sup", "books", 404, "no_such_version",
              "a supervisor, of their accountant's version"),
    Case("storage/delete_version", 200, OK, delete_other_set_of_the_giver,
         "the giver, of their other set"),
]


# ---- the table ----------------------------------------------------------------------------

def no_place(op: str, make: Callable[[str], Body]) -> list[Case]:
    """A member's command (or query) on an agency the caller has no place in: the request
    ``make`` makes on the agency named as in WHERE."""
    return [
        *(asked(op, who, 404, "no_such_agency", make("main"), f"by {why}")
          for who, why in NOT_IN.items()),
        asked(op, "acc", 404, "no_such_agency", make("nowhere"), "an agency id no agency has"),
        asked(op, "invitee", 404, "no_such_agency", make("closed"),
              "by an invitee of an agency closed since"),
    ]


WRONG_DRIVE: dict[str, Callable[[World], str]] = {
    "none": lambda w: "",
    "another member's": lambda w: w.agency.acc.drive,
    "a session": lambda w: w.agency.sup.session,
    "expired": lambda w: w.token("drive", w.agency.sup, expired=True),
    "signed by another key": lambda w: w.token("drive", w.agency.sup, forged=True),
}


def agency_sets_with(drive: str) -> Case:
    return Case("sharing/agency_sets", 401, "invalid_token", lambda w: w.post(
        "sharing/agency_sets", {"agency_id": w.agency.id, "drive_token": WRONG_DRIVE[drive](w)},
        by=w.agency.sup), f"a supervisor with drive token: {drive}")


def agency_sets_by(who: str, where: str, label: str) -> Case:
    async def act(w: World) -> httpx.Response:
        person: Person = getattr(w.agency, who)
        return await w.post("sharing/agency_sets", {"agency_id": WHERE[where](w.agency),
                                                    "drive_token": person.drive}, by=person)
    return Case("sharing/agency_sets", 404, "no_such_agency", act, label)


TOO_LONG_NAME = "代" * 61


def create_named(name: str) -> Callable[[World], Awaitable[httpx.Response]]:
    return lambda w: w.post("social/create_agency", {"command_id": cid(), "name": name},
                            by=w.agency.acc2)

CREATE = [
    Case("social/create_agency", 200, OK, lambda w: w.post(
        "social/create_agency", {"command_id": cid(), "name": "诚信代账"}, by=w.agency.acc2)),
    Case("social/create_agency", 200, OK, create_again, "the same command again"),
    Case("social/create_agency", 200, OK, create_with_anothers_command_id,
         "another member's command id"),
    *(Case("social/create_agency", 400, "bad_request", create_named(name), why)
      for why, name in {"a blank name": "   ", "a name past 60 characters": TOO_LONG_NAME,
                        "a name with a bidi override": "诚信\u202e代账"}.items()),
]
ADMINISTRATOR = [
    Case("social/invite_to_agency", 200, OK, invite_fresh),
    asked("social/invite_to_agency", "admin", 404, "no_such_member", on(
        "main", account="no-such-member", nickname="N")),
    asked("social/invite_to_agency", "admin", 404, "no_such_member", on(
        "main", account=acct("outsider"), nickname="Not Them"),
        "the account with another nickname"),
    Case("social/invite_to_agency", 404, "no_such_member", invite_the_erased,
         "an account deleted since"),
    asked("social/invite_to_agency", "admin", 400, "cannot_invite_self", on(
        "main", account=acct("admin"), nickname=nick("admin"))),
    *(asked("social/invite_to_agency", "admin", 409, "already_in_agency", on(
        "main", account=acct(who), nickname=nick(who)),
        why) for who, why in {"acc": "a member", "invitee": "invited already",
                              "sup": "a supervisor, as an accountant"}.items()),
    asked("social/invite_to_agency", "admin", 400, "bad_request", on(
        "main", account=acct("outsider"), nickname=nick("outsider"),
        role="administrator"), "as a second administrator"),
    Case("social/remove_from_agency", 200, OK, remove_joined),
    Case("social/remove_from_agency", 200, OK, removal_replayed_after_rejoining,
         "the same removal again after the member rejoined"),
    Case("social/remove_from_agency", 403, "not_agency_admin", removal_replayed_by_a_supervisor,
         "the administrator's removal, replayed by a supervisor"),
    asked("social/remove_from_agency", "admin", 404, "no_such_member", on(
        "main", account="no-such-member")),
    *(asked("social/remove_from_agency", "admin", 404, "not_in_agency", on(
        "main", account=acct(who)), why) for who, why in NOT_IN.items() if who != "invitee"),
    asked("social/remove_from_agency", "admin", 409, "administrator_stays", on(
        "main", account=acct("admin"))),
    Case("social/change_agency_role", 200, OK, change_role),
    Case("social/change_agency_role", 200, OK, lambda w: unchanged(
        w, "social/change_agency_role", w.agency.admin,
        command(w.agency.id, account=w.agency.acc2.account, role="accountant")),
         "the role the member holds: nothing appended"),
    asked("social/change_agency_role", "admin", 404, "no_such_member", on(
        "main", account="no-such-member", role="supervisor")),
    *(asked("social/change_agency_role", "admin", 404, "not_in_agency", on(
        "main", account=acct(who), role="supervisor"), why) for who, why in NOT_IN.items()),
    asked("social/change_agency_role", "admin", 409, "wrong_role", on(
        "main", account=acct("admin"), role="accountant"), "the administrator's own"),
    asked("social/change_agency_role", "acc", 403, "not_agency_admin", on(
        "main", account=acct("acc"), role="supervisor"), "an accountant promoting themself"),
    asked("social/change_agency_role", "admin", 400, "bad_request", on(
        "main", account=acct("sup"), role="administrator"), "to administrator"),
    Case("social/assign_supervision", 200, OK, supervise_fresh),
    *(asked("social/assign_supervision", "admin", 404, "no_such_member", on(
        "main", **{role: "no-such-member", other: acct(who)}), f"no such {role}")
      for role, other, who in (("supervisor", "accountant", "acc2"),
                               ("accountant", "supervisor", "sup"))),
    asked("social/assign_supervision", "admin", 404, "not_in_agency", on(
        "main", supervisor=acct("invitee"), accountant=acct("acc2")),
        "an invitee who never accepted, as supervisor"),
    *(asked("social/assign_supervision", "admin", 404, "not_in_agency", on(
        "main", supervisor=acct("sup"), accountant=acct(who)), f"{why}, as accountant")
      for who, why in NOT_IN.items()),
    asked("social/assign_supervision", "admin", 404, "not_in_agency", on(
        "main", supervisor=acct("removed"), accountant=acct("acc")),
        "a removed supervisor, again"),
    *(asked("social/assign_supervision", "admin", 409, "wrong_role", on(
        "main", supervisor=acct(sup), accountant=acct(acc)), why)
      for sup, acc, why in (("acc2", "acc", "an accountant as supervisor"),
                            ("sup", "sup", "a supervisor as accountant"),
                            ("sup", "admin", "the administrator as accountant"),
                            ("admin", "acc2", "the administrator as supervisor"))),
    asked("social/assign_supervision", "admin", 409, "supervision_exists", on(
        "main", supervisor=acct("sup"), accountant=acct("acc"))),
    asked("social/assign_supervision", "sup", 403, "not_agency_admin", on(
        "main", supervisor=acct("sup"), accountant=acct("acc2")),
        "a supervisor taking on another accountant"),
    Case("social/end_supervision", 200, OK, lambda w: supervise_fresh(w, end=True)),
    asked("social/end_supervision", "admin", 404, "no_such_member", on(
        "main", supervisor="no-such-member", accountant=acct("acc"))),
    *(asked("social/end_supervision", "admin", 404, "no_supervision", on(
        "main", supervisor=acct(sup), accountant=acct(acc)), why)
      for sup, acc, why in (("sup", "acc2", "never assigned"),
                            ("acc", "sup", "the other way round"),
                            ("removed", "acc", "of a supervisor removed since"),
                            ("leaver", "acc", "of a supervisor who left since"))),
    asked("social/end_supervision", "acc", 403, "not_agency_admin", on(
        "main", supervisor=acct("sup"), accountant=acct("acc")),
        "an accountant ending their own oversight"),
    Case("social/hand_over", 200, OK, hand_over_fresh),
    Case("social/hand_over", 200, OK, lambda w: unchanged(
        w, "social/hand_over", w.agency.admin, command(
            w.agency.id, owner=w.agency.acc.account, set_id=BOOKS, to=w.agency.acc.account)),
         "to the set's keeper: nothing appended"),
    *(asked("social/hand_over", "admin", 404, "no_such_member", on(
        "main", owner=owner, set_id=BOOKS, to=to), why)
      for owner, to, why in (("no-such-member", acct("acc2"), "no such owner"),
                             (acct("acc"), "no-such-member", "no such member to take it"))),
    *(asked("social/hand_over", "admin", 404, "not_agency_set", on(
        "main", owner=acct(owner), set_id=sid, to=acct("acc2")), why)
      for owner, sid, why in (("acc", "never-marked", "a set never marked"),
                              ("giver", PRIVATE, "an accountant's own set"),
                              ("outsider", "set-123", "an outsider's set"),
                              ("keeper", BOOKS, "named as its keeper's, not its owner's"))),
    *(asked("social/hand_over", "admin", 404, "not_in_agency", on(
        "main", owner=acct("acc"), set_id=BOOKS, to=acct(who)), f"to {why}")
      for who, why in NOT_IN.items()),
    *(asked("social/hand_over", "admin", 409, "wrong_role", on(
        "main", owner=acct("acc"), set_id=BOOKS, to=acct(who)), f"to {why}")
      for who, why in (("sup", "a supervisor"), ("admin", "the administrator"))),
    asked("social/hand_over", "acc2", 403, "not_agency_admin", on(
        "main", owner=acct("acc"), set_id=BOOKS, to=acct("acc2")),
        "a colleague taking an accountant's set"),
    asked("social/hand_over", "giver", 403, "not_agency_admin", on(
        "main", owner=acct("giver"), set_id=BOOKS, to=acct("giver")),
        "the giver taking their set back"),
    Case("social/agency_settings", 200, OK, settings_of_a_fresh_agency),
    Case("social/agency_settings", 200, OK, lambda w: unchanged(
        w, "social/agency_settings", w.agency.admin,
        command(w.agency.id, supervisors_write=False)), "as they are: nothing appended"),
    asked("social/agency_settings", "sup", 403, "not_agency_admin", on(
        "main", supervisors_write=True), "a supervisor letting themself write"),
    Case("social/close_agency", 200, OK, close_fresh),
    *ADMIN_REFUSALS,
]
MEMBERS = [
    Case("social/accept_invitation", 200, OK, accept_fresh),
    Case("social/accept_invitation", 200, OK, accept_replayed_after_removal,
         "the same accept again, by the member removed since"),
    Case("social/accept_invitation", 404, "not_invited", accept_a_withdrawn_invitation,
         "an invitation the administrator withdrew"),
    *(asked("social/accept_invitation", who, 404, "not_invited", on(where), why)
      for who, where, why in (
          ("acc", "main", "a member already"), ("admin", "main", "the administrator"),
          ("removed", "main", "a removed member"), ("leaver", "main", "a member who left"),
          ("outsider", "main", "an outsider, while another's invitation is open"),
          ("invitee", "closed", "an invitation to an agency closed since"),
          ("invitee", "nowhere", "an agency id no agency has"))),
    Case("social/leave_agency", 200, OK, leave_fresh),
    Case("social/leave_agency", 200, OK, leave_replayed_after_rejoining,
         "the same leave again after the member rejoined"),
    asked("social/leave_agency", "admin", 409, "administrator_stays", on("main")),
    *no_place("social/leave_agency", lambda where: on(where)),
    Case("social/mark_agency_set", 200, OK, mark_fresh),
    *(asked("social/mark_agency_set", who, 409, "wrong_role", on("main", set_id="own-set"),
            why) for who, why in (("sup", "a supervisor"), ("admin", "the administrator"))),
    asked("social/mark_agency_set", "acc", 409, "agency_set_taken", on("main", set_id=BOOKS)),
    asked("social/mark_agency_set", "giver", 409, "agency_set_taken", on(
        "main", set_id=BOOKS), "the giver marking the set handed over again"),
    *no_place("social/mark_agency_set", lambda where: on(where, set_id="own-set")),
    Case("social/unmark_agency_set", 200, OK, unmark_fresh),
    *(asked("social/unmark_agency_set", who, 404, "not_agency_set", on(
        "main", set_id=sid), why)
      for who, sid, why in (("acc", "never-marked", "a set never marked"),
                            ("giver", BOOKS, "the giver taking the set handed over back"),
                            ("keeper", BOOKS, "the keeper, of a set in another's drive"),
                            ("acc2", BOOKS, "a colleague, of another's set"))),
    *no_place("social/unmark_agency_set", lambda where: on(where, set_id=BOOKS)),
]
QUERIES = [
    listing("admin", {"main": ("administrator", False), "elsewhere": ("accountant", False),
                      "pending": ("accountant", True)}, ("closed",)),
    listing("invitee", {"main": ("accountant", True)}, ("closed",)),
    listing("sup", {"main": ("supervisor", False)}),
    *(listing(who, {}, ("main",)) for who in ("removed", "leaver", "outsider")),
    Case("social/view_agency", 200, OK, lambda w: view_main(w, "admin")),
    Case("social/view_agency", 200, OK, lambda w: view_main(w, "acc2"), "by an accountant"),
    *no_place("social/view_agency", query),
    asked("social/view_agency", "admin", 404, "no_such_agency", query("closed"),
          "the administrator's agency, closed"),
    works("admin", ("acc", "acc", BOOKS, "administrator", "read-only"),
          ("giver", "keeper", BOOKS, "administrator", "read-only")),
    works("sup", ("acc", "acc", BOOKS, "supervisor", "read-only")),
    works("keeper", ("giver", "keeper", BOOKS, "keeper", "read-write")),
    *(works(who, label=f"{who} sees none") for who in ("acc", "acc2", "giver")),
    *(agency_sets_by(who, "main", f"by {why}") for who, why in NOT_IN.items()),
    agency_sets_by("acc", "nowhere", "an agency id no agency has"),
    agency_sets_by("admin", "closed", "the administrator's agency, closed"),
    *(agency_sets_with(drive) for drive in WRONG_DRIVE),
]
AGENCY = [*CREATE, *ADMINISTRATOR, *MEMBERS, *QUERIES, *STORAGE]


def administrators(fields: dict[str, Any]) -> Callable[[World], dict[str, Any]]:
    return lambda w: on("main", **fields)(w.agency)


# A well-formed request of every agency operation that the matrix's owner could make: only
# the session may be wrong (the session matrix).
AS_OWNER: dict[str, Callable[[World], dict[str, Any]]] = {
    "social/create_agency": lambda w: {"command_id": cid(), "name": "诚信代账"},
    **{op: administrators(fields) for op, fields in ADMIN_OPS.items()},
    "social/accept_invitation": lambda w: command(w.agency.pending),
    "social/leave_agency": lambda w: command(w.agency.elsewhere),
    "social/mark_agency_set": lambda w: command(w.agency.elsewhere, set_id="owner-other"),
    "social/unmark_agency_set": lambda w: command(w.agency.elsewhere, set_id=OWNERS_BOOKS),
    "social/agencies": lambda w: {},
    "social/view_agency": lambda w: {"agency_id": w.agency.id},
    "sharing/agency_sets": lambda w: {"agency_id": w.agency.id,
                                      "drive_token": w.owner.drive},
}
