"""`ledgershare agency …`: bookkeeping agencies (代账公司), their members and roles, who
supervises whom, which account sets are agency work, and what the caller may see through
an agency.

An AGENCY argument is the agency's id or, for convenience, the name of one of the
caller's agencies (or open invitations) when that name is unique among them; the
agency list (`social.agencies`) says which.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

from cli.client import (
    VERSION_COLUMNS,
    Client,
    Handler,
    confirm,
    drive_token,
    fetch,
    new_id,
    put_file,
    table,
    version_rows,
)
from contracts import agency as agc
from contracts import sharing as shc
from contracts import storage as stc
from contracts.errors import BadRequest

STAFF_ROLES = ("supervisor", "accountant")
_ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")


@dataclass(frozen=True)
class Agency:
    """An agency the command is about: its id, and its name for the messages."""

    agency_id: str
    name: str


def _e(value: object) -> str:
    """Text from other members (names, nicknames) shown as it is, never read as markup."""
    return escape(str(value))


def _could_be_id(text: str) -> bool:
    return 0 < len(text) <= 64 and set(text) <= _ID_CHARS


async def agency_of(c: Client, text: str, *, invited: bool = False) -> Agency:
    """The agency ``text`` names among the caller's agencies: by id, else by a unique name
    (exact, then ignoring case). Several with one name: the one the command is for
    (``invited`` for accepting an invitation, a joined one otherwise), else refused with
    their ids. Not among them: an id-shaped text goes to the service as an id (which
    answers no_such_agency when it is none of the caller's)."""
    reply = await c.social.agencies(agc.ListAgencies(session=c.me().session, seq=c.saved.seq))
    for entry in reply.agencies:
        if entry.agency_id == text:
            return Agency(entry.agency_id, entry.name)
    for exact in (True, False):
        found = [e for e in reply.agencies
                 if (e.name == text if exact else e.name.casefold() == text.casefold())]
        if len(found) > 1:
            found = [e for e in found if e.invited == invited] or found
        if len(found) == 1:
            return Agency(found[0].agency_id, found[0].name)
        if found:
            raise BadRequest(f"{len(found)} of your agencies are named {text!r}: give the id "
                             f"of the one you mean ({', '.join(e.agency_id for e in found)})")
    if _could_be_id(text):
        return Agency(text, text)
    raise agc.NoSuchAgency(f"you are in no agency named {text!r} and invited to none; "
                           "`ledgershare agency list` shows yours")


def _done(c: Client, reply: agc.AgencyChanged, text: str) -> None:
    """A command's answer: keep its log position, then say what changed."""
    c.seen(reply.seq)
    c.show(reply, text)


def _ask(yes: bool, question: str) -> None:
    """Go on only with --yes or a yes from the terminal."""
    if not yes and not confirm(question):
        raise SystemExit("nothing changed (give --yes to skip the question)")


def _show_all(c: Client, value: Any, parts: list[Table | str]) -> None:
    """Several tables for one answer (JSON: the answer itself)."""
    if c.as_json:
        c.show(value)
        return
    for part in parts:
        c.console.print(part)


# ---- looking -----------------------------------------------------------------------------

async def agency_list(c: Client, a: argparse.Namespace) -> None:
    reply = await c.social.agencies(agc.ListAgencies(session=c.me().session, seq=c.saved.seq))
    rows = [[e.agency_id, _e(e.name), e.role, e.administrator,
             "invited: `ledgershare agency accept`" if e.invited else "member"]
            for e in reply.agencies]
    c.show(reply, table("my agencies and open invitations",
                        ["agency", "name", "my role", "administrator", "state"], rows))


def _person(account: str, nicknames: dict[str, str]) -> str:
    if not account:
        return "nobody (hand it over)"
    nick = nicknames.get(account)
    return f"{account} ({_e(nick)})" if nick else account


async def agency_show(c: Client, a: argparse.Namespace) -> None:
    found = await agency_of(c, a.agency)
    view = await c.social.view_agency(agc.ViewAgency(
        session=c.me().session, agency_id=found.agency_id, seq=c.saved.seq))
    nicknames = {m.account: m.nickname for m in view.members}
    supervisors: dict[str, list[str]] = {}
    for m in view.members:
        for accountant in m.supervises:
            supervisors.setdefault(accountant, []).append(m.account)
    members = table(
        f"agency {_e(view.name)} ({view.agency_id}); supervisors may write: "
        f"{'yes' if view.supervisors_write else 'no'}",
        ["account", "nickname", "role", "since", "state", "supervises", "supervised by"],
        [[m.account, _e(m.nickname), m.role, f"{m.since:%Y-%m-%d %H:%M}",
          "invited" if m.invited else "member",
          ", ".join(_person(x, nicknames) for x in m.supervises) or "-",
          ", ".join(_person(x, nicknames) for x in supervisors.get(m.account, [])) or "-"]
         for m in view.members])
    sets = table("agency sets", ["owner (drive)", "set", "keeper"], [
        [_person(s.owner, nicknames), s.set_id, _person(s.keeper, nicknames)]
        for s in view.sets])
    _show_all(c, view, [members, sets])


async def _visible(c: Client, text: str) -> tuple[Agency, shc.AgencySets]:
    """The agency, and the sets the caller may see through it (the drive token asked for
    as Cloud Share asks it)."""
    found = await agency_of(c, text)
    reply = await c.sharing.agency_sets(shc.AgencySetsRequest(
        session=c.me().session, agency_id=found.agency_id, drive_token=await drive_token(c),
        seq=c.saved.seq))
    return found, reply


async def agency_sets(c: Client, a: argparse.Namespace) -> None:
    """What the caller may see through the agency: keeper → set → year → versions."""
    found, reply = await _visible(c, a.agency)
    rows: list[list[Any]] = []
    for w in reply.sets:
        head = [w.keeper or "nobody", w.owner, _e(w.set_name), w.set_id, w.reason,
                w.permission]
        versions = [[y.year, _e(v.remark), v.uploader_id[:8],
                     f"{v.uploaded_at:%Y-%m-%d %H:%M}", stc.megabytes(v.size),
                     "conflict" if v.conflict_with else ""]
                    for y in w.years for v in y.versions]
        rows.extend([*head, *v] for v in versions or [["-", "no backup yet", "", "", "", ""]])
    c.show(reply, table(f"agency sets of {_e(found.name)} that I may see",
                        ["keeper", "owner", "set", "set id", "as", "permission", "year",
                         "remark", "uploader", "time", "size", "mark"], rows))


async def _work(c: Client, a: argparse.Namespace) -> shc.AgencyWork:
    """The agency set OWNER's SET among those the caller may see through the agency."""
    found, reply = await _visible(c, a.agency)
    for w in reply.sets:
        if w.owner.casefold() == a.owner.casefold() and w.set_id == a.set:
            return w
    raise agc.NotAgencySet(f"{a.owner}'s {a.set} is no agency set of {found.name} you may see")


async def agency_download(c: Client, a: argparse.Namespace) -> None:
    """Download one fiscal year of an agency set (the supervisor's, the keeper's)."""
    work = await _work(c, a)
    path = await fetch(c, owner_id=work.owner_id, set_id=a.set, year=a.year,
                       version=a.version, out=a.output)
    c.show({"file": str(path)}, f"saved {path}")


async def agency_upload(c: Client, a: argparse.Namespace) -> None:
    """Upload a year back into the owner's drive (a keeper; a supervisor when allowed)."""
    work = await _work(c, a)
    done = await put_file(c, Path(a.file), owner_id=work.owner_id, set_id=a.set,
                          name=a.name or work.set_name, year=a.year, period=a.period,
                          remark=a.remark or f"{a.year}年{a.period}期", base=a.base)
    c.show(done, table(f"uploaded into {_e(work.owner)}'s drive", VERSION_COLUMNS,
                       version_rows([done.version])))


# ---- the administrator -------------------------------------------------------------------

async def agency_create(c: Client, a: argparse.Namespace) -> None:
    reply = await c.social.create_agency(agc.CreateAgency(
        command_id=new_id(), session=c.me().session, name=a.name, seq=c.saved.seq))
    _done(c, reply, f"agency {_e(a.name)} created ({reply.agency_id}); you are its "
                    "administrator")


async def agency_invite(c: Client, a: argparse.Namespace) -> None:
    found = await agency_of(c, a.agency)
    reply = await c.social.invite_to_agency(agc.Invite(
        command_id=new_id(), session=c.me().session, agency_id=found.agency_id,
        account=a.account, nickname=a.nickname, role=a.role, seq=c.saved.seq))
    _done(c, reply, f"{a.account} ({_e(a.nickname)}) invited to {_e(found.name)} as "
                    f"{a.role}; they join with `ledgershare agency accept {reply.agency_id}`")


async def agency_remove(c: Client, a: argparse.Namespace) -> None:
    found = await agency_of(c, a.agency)
    _ask(a.yes, f"remove {a.account} from {found.name}? Every access they have through it "
                "ends at once")
    reply = await c.social.remove_from_agency(agc.MemberCommand(
        command_id=new_id(), session=c.me().session, agency_id=found.agency_id,
        account=a.account, seq=c.saved.seq))
    _done(c, reply, f"{a.account} removed from {_e(found.name)}")


async def agency_role(c: Client, a: argparse.Namespace) -> None:
    found = await agency_of(c, a.agency)
    reply = await c.social.change_agency_role(agc.ChangeRole(
        command_id=new_id(), session=c.me().session, agency_id=found.agency_id,
        account=a.account, role=a.role, seq=c.saved.seq))
    _done(c, reply, f"{a.account} is now a {a.role} of {_e(found.name)} (supervision that "
                    "no longer fits the role ended)")


async def agency_supervise(c: Client, a: argparse.Namespace) -> None:
    found = await agency_of(c, a.agency)
    request = agc.Supervision(
        command_id=new_id(), session=c.me().session, agency_id=found.agency_id,
        supervisor=a.supervisor, accountant=a.accountant, seq=c.saved.seq)
    if a.end:
        reply = await c.social.end_supervision(request)
        _done(c, reply, f"{a.supervisor} no longer supervises {a.accountant} in "
                        f"{_e(found.name)}")
    else:
        reply = await c.social.assign_supervision(request)
        _done(c, reply, f"{a.supervisor} now supervises {a.accountant}'s agency sets in "
                        f"{_e(found.name)}")


async def agency_handover(c: Client, a: argparse.Namespace) -> None:
    found = await agency_of(c, a.agency)
    reply = await c.social.hand_over(agc.HandOver(
        command_id=new_id(), session=c.me().session, agency_id=found.agency_id,
        owner=a.owner, set_id=a.set_id, to=a.to, seq=c.saved.seq))
    _done(c, reply, f"set {a.set_id} (in {a.owner}'s drive) is now kept by {a.to}; its "
                    "previous keeper lost the access it gave")


async def agency_settings(c: Client, a: argparse.Namespace) -> None:
    found = await agency_of(c, a.agency)
    write = a.supervisors_write == "on"
    reply = await c.social.agency_settings(agc.ChangeSettings(
        command_id=new_id(), session=c.me().session, agency_id=found.agency_id,
        supervisors_write=write, seq=c.saved.seq))
    _done(c, reply, f"{_e(found.name)}: supervisors (and the administrator) "
                    f"{'may' if write else 'may not'} upload corrected versions")


async def agency_close(c: Client, a: argparse.Namespace) -> None:
    found = await agency_of(c, a.agency)
    _ask(a.yes, f"close {found.name} for good? Every member loses every access through it")
    reply = await c.social.close_agency(agc.AgencyCommand(
        command_id=new_id(), session=c.me().session, agency_id=found.agency_id,
        seq=c.saved.seq))
    _done(c, reply, f"{_e(found.name)} closed: every access through it ended")


# ---- a member ----------------------------------------------------------------------------

async def agency_accept(c: Client, a: argparse.Namespace) -> None:
    found = await agency_of(c, a.agency, invited=True)
    reply = await c.social.accept_invitation(agc.AgencyCommand(
        command_id=new_id(), session=c.me().session, agency_id=found.agency_id,
        seq=c.saved.seq))
    _done(c, reply, f"you joined {_e(found.name)}")


async def agency_leave(c: Client, a: argparse.Namespace) -> None:
    found = await agency_of(c, a.agency)
    _ask(a.yes, f"leave {found.name}? Every access you have through it ends at once")
    reply = await c.social.leave_agency(agc.AgencyCommand(
        command_id=new_id(), session=c.me().session, agency_id=found.agency_id,
        seq=c.saved.seq))
    _done(c, reply, f"you left {_e(found.name)}")


async def agency_mark(c: Client, a: argparse.Namespace) -> None:
    found = await agency_of(c, a.agency)
    request = agc.MarkSet(command_id=new_id(), session=c.me().session,
                          agency_id=found.agency_id, set_id=a.set_id, seq=c.saved.seq)
    if a.unmark:
        reply = await c.social.unmark_agency_set(request)
        _done(c, reply, f"set {a.set_id} is no longer agency work of {_e(found.name)}")
    else:
        reply = await c.social.mark_agency_set(request)
        _done(c, reply, f"set {a.set_id} is now agency work of {_e(found.name)}; you keep it")


# ---- the parser -------------------------------------------------------------------------

def commands(sub: Any, parser_class: type[argparse.ArgumentParser]) -> None:
    """Add `agency …` to the command's subparsers."""
    g = sub.add_parser("agency", help="bookkeeping agencies (代账公司): members, roles, "
                       "supervision, agency sets").add_subparsers(
        dest="action", required=True, parser_class=parser_class)

    def agency(p: Any) -> Any:
        p.add_argument("agency", help="the agency's id, or its name if unique among yours")
        return p

    def yes(p: Any) -> None:
        p.add_argument("--yes", action="store_true", help="do not ask to confirm")

    g.add_parser("create", help="create an agency; you are its administrator").add_argument(
        "name")
    g.add_parser("list", help="my agencies and open invitations")
    agency(g.add_parser("show", help="members, roles, who supervises whom, agency sets "
                        "and their keepers"))
    inv = agency(g.add_parser("invite", help="invite a member by account and nickname "
                              "(administrator)"))
    inv.add_argument("account")
    inv.add_argument("nickname")
    inv.add_argument("--role", choices=STAFF_ROLES, default="accountant",
                     help="default: accountant")
    agency(g.add_parser("accept", help="accept an invitation"))
    yes(agency(g.add_parser("leave", help="leave an agency (every access through it ends)")))
    yes(agency(g.add_parser("close", help="close an agency for good (administrator)")))
    rm = agency(g.add_parser("remove", help="remove a member (administrator)"))
    rm.add_argument("account")
    yes(rm)
    ro = agency(g.add_parser("role", help="change a member's role (administrator)"))
    ro.add_argument("account")
    ro.add_argument("role", choices=STAFF_ROLES)
    sv = agency(g.add_parser("supervise", help="a supervisor oversees an accountant's "
                             "agency sets (administrator)"))
    sv.add_argument("supervisor", help="the supervisor's account")
    sv.add_argument("accountant", help="the accountant's account")
    sv.add_argument("--end", action="store_true", help="end that supervision instead")
    mk = agency(g.add_parser("mark", help="mark one of your account sets as the agency's "
                             "work (accountant)"))
    mk.add_argument("set_id")
    mk.add_argument("--unmark", action="store_true", help="take it back from the agency")
    ho = agency(g.add_parser("handover", help="hand an agency set to another accountant "
                             "(administrator)"))
    ho.add_argument("owner", help="the account whose drive holds the set")
    ho.add_argument("set_id")
    ho.add_argument("to", help="the accountant who keeps it from now on")
    st = agency(g.add_parser("settings", help="the agency's settings (administrator)"))
    st.add_argument("--supervisors-write", required=True, choices=("on", "off"),
                    help="whether supervisors (and the administrator) may upload "
                         "corrected versions")
    agency(g.add_parser("sets", help="the agency sets I may see: keeper, set, year, "
                        "versions (asks for the cloud-drive password as Cloud Share does)"))
    dl = agency(g.add_parser("download", help="download one fiscal year of an agency set"))
    _owner_set_year(dl)
    dl.add_argument("--version")
    dl.add_argument("-o", "--output")
    up = agency(g.add_parser("upload", help="upload a year into the owner's drive (the "
                             "keeper; supervisors if the agency allows)"))
    up.add_argument("file")
    _owner_set_year(up)
    up.add_argument("--period", required=True, type=int, help="closed to period 1..12")
    up.add_argument("--name", help="account set name (default: its current name)")
    up.add_argument("--remark", help="default: <year>年<period>期")
    up.add_argument("--base", help="the version this file was based on")


def _owner_set_year(p: Any) -> None:
    p.add_argument("--owner", required=True, help="the account whose drive holds the set")
    p.add_argument("--set", required=True, help="account set id")
    p.add_argument("--year", required=True, type=int)


CLIENT: dict[tuple[str, ...], Handler] = {
    ("agency", "create"): agency_create, ("agency", "list"): agency_list,
    ("agency", "show"): agency_show, ("agency", "invite"): agency_invite,
    ("agency", "accept"): agency_accept, ("agency", "leave"): agency_leave,
    ("agency", "close"): agency_close, ("agency", "remove"): agency_remove,
    ("agency", "role"): agency_role, ("agency", "supervise"): agency_supervise,
    ("agency", "mark"): agency_mark, ("agency", "handover"): agency_handover,
    ("agency", "settings"): agency_settings, ("agency", "sets"): agency_sets,
    ("agency", "download"): agency_download, ("agency", "upload"): agency_upload,
}
