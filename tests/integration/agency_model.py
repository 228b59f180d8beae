"""What each agency command must come to, for the stateful model test (test_model.py).

Read from the agency contract (contracts/agency.py: its events', errors' and requests'
words), never from social's decisions or the fold in contracts/agency_state.py: a second
reading of the same rules, so that both can be wrong only in the same way by chance. Each
function answers, for the model's `Agency` (None: the agency does not exist), a `Decision`:
the refusals the command deserves (any of them is right, when several apply), else the
kinds of the events it must append (none when it changes nothing) and the change itself.

Who may ask is decided before what is asked: an administrator's command from another
member is refused as such (`NotAgencyAdmin`), and from someone not in the agency as if it
did not exist (`NoSuchAgency`), never with a refusal that would tell them about its
members or sets.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from contracts.agency import (
    AdministratorStays,
    AgencySetTaken,
    AlreadyInAgency,
    CannotInviteSelf,
    NoSuchAgency,
    NoSupervision,
    NotAgencyAdmin,
    NotAgencySet,
    NotInAgency,
    NotInvited,
    SupervisionExists,
    WrongRole,
)
from contracts.errors import LedgerError
from tests.integration.sharing_model import Agency, Refusals, StaffRole


def _nothing() -> None:
    return None


@dataclass(frozen=True)
class Decision:
    """Refused with one of ``refuse`` (when any); else accepted, appending one event of
    each kind in ``events``, after which ``then`` brings the model along."""

    refuse: Refusals = ()
    events: tuple[str, ...] = ()
    then: Callable[[], None] = _nothing


def _refused(*errors: type[LedgerError]) -> Decision:
    return Decision(refuse=tuple(dict.fromkeys(errors)))


def _admin_refusals(agency: Agency | None, caller: int) -> Refusals:
    """Only an agency's administrator runs it, while it is open; to anyone not in it, it
    does not exist."""
    if agency is None or not agency.is_member(caller):
        return (NoSuchAgency,)
    return () if caller == agency.admin else (NotAgencyAdmin,)


def create(agencies: list[Agency], caller: int) -> Decision:
    """Anyone creates an agency and is its administrator."""
    return Decision(events=("AgencyCreated",), then=lambda: agencies.append(Agency(caller)))


def invite(agency: Agency | None, caller: int, member: int, role: StaffRole) -> Decision:
    """The administrator invites anyone not in it (nor invited) as a supervisor or an
    accountant; nothing changes until they accept."""
    if refuse := _admin_refusals(agency, caller):
        return _refused(*refuse)
    assert agency is not None
    refusals: list[type[LedgerError]] = []
    if member == caller:
        refusals.append(CannotInviteSelf)
    if agency.is_member(member) or member in agency.invited:
        refusals.append(AlreadyInAgency)
    if refusals:
        return _refused(*refusals)
    return Decision(events=("MemberInvited",),
                    then=lambda: agency.invited.__setitem__(member, role))


def accept(agency: Agency | None, caller: int) -> Decision:
    """Whoever holds an open invitation to an open agency joins it in the invited role."""
    if agency is None or not agency.open or caller not in agency.invited:
        return _refused(NotInvited)

    def join() -> None:
        agency.staff[caller] = agency.invited.pop(caller)

    return Decision(events=("MemberJoined",), then=join)


def leave(agency: Agency | None, caller: int) -> Decision:
    """A member leaves (the administrator stays: they close it instead)."""
    if agency is None or not agency.is_member(caller):
        return _refused(NoSuchAgency)
    if caller == agency.admin:
        return _refused(AdministratorStays)
    return Decision(events=("MemberLeft",), then=lambda: agency.depart(caller))


def remove(agency: Agency | None, caller: int, member: int) -> Decision:
    """The administrator removes a member or withdraws an invitation."""
    if refuse := _admin_refusals(agency, caller):
        return _refused(*refuse)
    assert agency is not None
    if member == agency.admin:
        return _refused(AdministratorStays)
    if member not in agency.staff and member not in agency.invited:
        return _refused(NotInAgency)
    return Decision(events=("MemberRemoved",), then=lambda: agency.depart(member))


def change_role(agency: Agency | None, caller: int, member: int,
                role: StaffRole) -> Decision:
    """The administrator changes a member's role (never their own; nor an accountant's
    who keeps agency sets: only accountants keep sets, so they are handed over first); the
    same role again changes nothing."""
    if refuse := _admin_refusals(agency, caller):
        return _refused(*refuse)
    assert agency is not None
    if member == agency.admin:
        return _refused(WrongRole)
    if member not in agency.staff:
        return _refused(NotInAgency)
    if agency.staff[member] == role:
        return Decision()
    if member in agency.work.values():
        return _refused(WrongRole)
    return Decision(events=("RoleChanged",), then=lambda: agency.change_role(member, role))


def supervise(agency: Agency | None, caller: int, supervisor: int,
              accountant: int) -> Decision:
    """The administrator has a supervisor oversee an accountant (both members, each in
    that role, not already so)."""
    if refuse := _admin_refusals(agency, caller):
        return _refused(*refuse)
    assert agency is not None
    refusals: list[type[LedgerError]] = []
    for who, role in ((supervisor, "supervisor"), (accountant, "accountant")):
        if not agency.is_member(who):
            refusals.append(NotInAgency)
        elif agency.role(who) != role:
            refusals.append(WrongRole)
    if not refusals and (supervisor, accountant) in agency.oversees:
        refusals.append(SupervisionExists)
    if refusals:
        return _refused(*refusals)
    return Decision(events=("SupervisionAssigned",),
                    then=lambda: agency.oversees.add((supervisor, accountant)))


def end_supervision(agency: Agency | None, caller: int, supervisor: int,
                    accountant: int) -> Decision:
    if refuse := _admin_refusals(agency, caller):
        return _refused(*refuse)
    assert agency is not None
    if (supervisor, accountant) not in agency.oversees:
        return _refused(NoSupervision)
    return Decision(events=("SupervisionEnded",),
                    then=lambda: agency.oversees.discard((supervisor, accountant)))


def mark(agency: Agency | None, caller: int, set_id: str) -> Decision:
    """An accountant marks a set of their own drive as the agency's work, and keeps it."""
    if agency is None or not agency.is_member(caller):
        return _refused(NoSuchAgency)
    if agency.role(caller) != "accountant":
        return _refused(WrongRole)
    if (caller, set_id) in agency.work:
        return _refused(AgencySetTaken)
    return Decision(events=("SetMarked",),
                    then=lambda: agency.work.__setitem__((caller, set_id), caller))


def unmark(agency: Agency | None, caller: int, set_id: str) -> Decision:
    """A member takes back a set of their own they still keep."""
    if agency is None or not agency.is_member(caller):
        return _refused(NoSuchAgency)
    if agency.work.get((caller, set_id), -1) != caller:
        return _refused(NotAgencySet)
    return Decision(events=("SetUnmarked",),
                    then=lambda: agency.work.__delitem__((caller, set_id)))


def hand_over(agency: Agency | None, caller: int, owner: int, set_id: str,
              to: int) -> Decision:
    """The administrator gives an agency set to an accountant to keep; to its keeper
    already, it changes nothing."""
    if refuse := _admin_refusals(agency, caller):
        return _refused(*refuse)
    assert agency is not None
    refusals: list[type[LedgerError]] = []
    if (owner, set_id) not in agency.work:
        refusals.append(NotAgencySet)
    if not agency.is_member(to):
        refusals.append(NotInAgency)
    elif agency.role(to) != "accountant":
        refusals.append(WrongRole)
    if refusals:
        return _refused(*refusals)
    if agency.work[(owner, set_id)] == to:
        return Decision()
    return Decision(events=("SetHandedOver",),
                    then=lambda: agency.work.__setitem__((owner, set_id), to))


def settings(agency: Agency | None, caller: int, supervisors_write: bool) -> Decision:
    """The administrator lets supervisors (and themself) upload, or not; the same setting
    again changes nothing."""
    if refuse := _admin_refusals(agency, caller):
        return _refused(*refuse)
    assert agency is not None
    if agency.supervisors_write == supervisors_write:
        return Decision()

    def change() -> None:
        agency.supervisors_write = supervisors_write

    return Decision(events=("SettingsChanged",), then=change)


def close(agency: Agency | None, caller: int) -> Decision:
    """The administrator closes the agency: all the access it gave ends."""
    if refuse := _admin_refusals(agency, caller):
        return _refused(*refuse)
    assert agency is not None

    def shut() -> None:
        agency.open = False

    return Decision(events=("AgencyClosed",), then=shut)


AGENCY_KINDS = ("AgencyCreated", "MemberInvited", "MemberJoined", "MemberLeft",
                "MemberRemoved", "RoleChanged", "SupervisionAssigned", "SupervisionEnded",
                "SetMarked", "SetUnmarked", "SetHandedOver", "SettingsChanged",
                "AgencyClosed")
