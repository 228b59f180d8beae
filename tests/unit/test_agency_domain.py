"""The bookkeeping agency's domain (contracts/agency.py, contracts/agency_state.py and the
agency decisions in services/social/domain.py): given events / when a command / then
events, the access they give, or a coded error."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import NamedTuple, TypeVar

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.agency import (
    AdministratorStays,
    AgencyClosed,
    AgencyCreated,
    AgencyEvent,
    AgencySetTaken,
    AlreadyInAgency,
    CannotInviteSelf,
    MemberInvited,
    MemberJoined,
    MemberLeft,
    MemberRemoved,
    NoSuchAgency,
    NoSupervision,
    NotAgencyAdmin,
    NotAgencySet,
    NotInAgency,
    NotInvited,
    RoleChanged,
    SetHandedOver,
    SetMarked,
    SettingsChanged,
    SetUnmarked,
    StaffRole,
    SupervisionAssigned,
    SupervisionEnded,
    SupervisionExists,
    WrongRole,
    agency_id_for,
    agency_subject,
    agency_subjects,
)
from contracts.agency_state import AgencyState, Place, access, evolve, fold
from contracts.errors import LedgerError
from services.social import domain

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
LATER = T0 + timedelta(days=1)
AID = "agency-1"
ADMIN, ANN, BOB, SUE, EVE = "adm-id", "ann-id", "bob-id", "sue-id", "eve-id"
# ANN and BOB are accountants, SUE a supervisor, EVE an outsider (invited in some tests).
READ_ONLY, READ_WRITE = "read-only", "read-write"

_clock = iter(T0 + timedelta(minutes=n) for n in range(10**6))


def tick() -> datetime:
    return next(_clock)


# ---- events -----------------------------------------------------------------------------

def created() -> AgencyCreated:
    return AgencyCreated(agency_id=AID, name="好帐房", admin_id=ADMIN, at=T0)


def invited(mid: str, role: StaffRole = "accountant") -> MemberInvited:
    return MemberInvited(agency_id=AID, member_id=mid, role=role, at=tick())


def joined(mid: str, role: StaffRole = "accountant") -> list[AgencyEvent]:
    return [invited(mid, role), MemberJoined(agency_id=AID, member_id=mid, role=role,
                                             at=tick())]


def left(mid: str) -> MemberLeft:
    return MemberLeft(agency_id=AID, member_id=mid, at=tick())


def removed(mid: str) -> MemberRemoved:
    return MemberRemoved(agency_id=AID, member_id=mid, at=tick())


def supervising(sup: str = SUE, acc: str = ANN) -> SupervisionAssigned:
    return SupervisionAssigned(agency_id=AID, supervisor_id=sup, accountant_id=acc,
                               at=tick())


def marked(owner: str = ANN, sid: str = "s1") -> SetMarked:
    return SetMarked(agency_id=AID, owner_id=owner, set_id=sid, at=tick())


def handed(owner: str = ANN, sid: str = "s1", *, frm: str = ANN,
           to: str = BOB) -> SetHandedOver:
    return SetHandedOver(agency_id=AID, owner_id=owner, set_id=sid, from_id=frm, to_id=to,
                         at=tick())


def staffed() -> list[AgencyEvent]:
    """An agency with two accountants (ANN, BOB) and a supervisor (SUE)."""
    return [created(), *joined(ANN), *joined(BOB), *joined(SUE, "supervisor")]


def agency(*more: AgencyEvent) -> AgencyState:
    return fold([*staffed(), *more])


def closed() -> AgencyState:
    return agency(AgencyClosed(agency_id=AID, at=tick()))


def then(state: AgencyState, events: list[AgencyEvent]) -> AgencyState:
    for event in events:
        state = evolve(state, event)
    return state


def rows_of(state: AgencyState, member: str) -> dict[tuple[str, str], tuple[str, str]]:
    """What one member may do with which (owner, set) through the agency."""
    return {(o, s): why for (o, s, m), why in access(state).items() if m == member}


# ---- the contract -------------------------------------------------------------------------

def test_an_agency_id_is_the_same_on_a_retry_and_differs_by_member_and_command() -> None:
    assert agency_id_for(ADMIN, "c1") == agency_id_for(ADMIN, "c1")
    assert len({agency_id_for(ADMIN, "c1"), agency_id_for(ADMIN, "c2"),
                agency_id_for(ANN, "c1")}) == 3


def test_an_agencys_events_share_its_subjects() -> None:
    subject = agency_subject(AID, marked())
    assert subject.endswith(".SetMarked")
    assert subject.rsplit(".", 1)[0] == agency_subjects(AID).rsplit(".", 1)[0]


def test_an_agency_state_survives_its_json_form() -> None:
    state = agency(supervising(), marked(), handed(), marked(BOB, "s2"),
                   invited(EVE, "supervisor"))
    again = msgspec.json.decode(msgspec.json.encode(state), type=AgencyState)
    assert again == state
    assert access(again) == access(state)


# ---- create -----------------------------------------------------------------------------

def test_when_creating_then_the_caller_administers_a_new_agency() -> None:
    events = domain.decide_create(agency_id=AID, name="好帐房", caller=ADMIN, at=T0)
    assert events == [created()]
    state = fold(events)
    assert state.exists and state.name == "好帐房"
    assert state.members == {ADMIN: Place(role="administrator", since=T0)}
    assert state.role(ADMIN) == "administrator"
    assert access(state) == {}


def test_an_agency_never_created_does_not_exist() -> None:
    assert not AgencyState().exists
    assert access(AgencyState()) == {}


# ---- the administrator's commands: who may give them --------------------------------------

AdminCommand = Callable[[AgencyState, str], list[AgencyEvent]]
ADMIN_COMMANDS: dict[str, AdminCommand] = {
    "invite": lambda s, c: domain.decide_invite(s, agency_id=AID, caller=c, member_id=EVE,
                                                role="accountant", at=LATER),
    "remove": lambda s, c: domain.decide_remove_member(s, agency_id=AID, caller=c,
                                                       member_id=BOB, at=LATER),
    "role": lambda s, c: domain.decide_role(s, agency_id=AID, caller=c, member_id=BOB,
                                            role="supervisor", at=LATER),
    "supervise": lambda s, c: domain.decide_supervise(s, agency_id=AID, caller=c,
                                                      supervisor=SUE, accountant=BOB,
                                                      at=LATER),
    "unsupervise": lambda s, c: domain.decide_unsupervise(s, agency_id=AID, caller=c,
                                                          supervisor=SUE, accountant=ANN,
                                                          at=LATER),
    "hand over": lambda s, c: domain.decide_hand_over(s, agency_id=AID, caller=c,
                                                      owner_id=ANN, set_id="s1", to_id=BOB,
                                                      at=LATER),
    "settings": lambda s, c: domain.decide_settings(s, agency_id=AID, caller=c,
                                                    supervisors_write=True, at=LATER),
    "close": lambda s, c: domain.decide_close(s, agency_id=AID, caller=c, at=LATER),
}


@pytest.mark.parametrize("command", ADMIN_COMMANDS.values(), ids=ADMIN_COMMANDS.keys())
def test_given_an_agency_when_its_administrator_commands_then_events(
        command: AdminCommand) -> None:
    state = agency(supervising(SUE, ANN), marked())
    events = command(state, ADMIN)
    assert len(events) == 1 and events[0].agency_id == AID


@pytest.mark.parametrize("caller", [ANN, SUE], ids=["an accountant", "a supervisor"])
@pytest.mark.parametrize("command", ADMIN_COMMANDS.values(), ids=ADMIN_COMMANDS.keys())
def test_given_a_member_when_giving_an_administrators_command_then_not_agency_admin(
        command: AdminCommand, caller: str) -> None:
    with pytest.raises(NotAgencyAdmin) as caught:
        command(agency(supervising(SUE, ANN), marked()), caller)
    assert caught.value.code == "not_agency_admin"


@pytest.mark.parametrize("state", [AgencyState(), closed()], ids=["never created", "closed"])
@pytest.mark.parametrize("command", ADMIN_COMMANDS.values(), ids=ADMIN_COMMANDS.keys())
def test_given_no_agency_when_even_its_administrator_commands_then_no_such_agency(
        command: AdminCommand, state: AgencyState) -> None:
    with pytest.raises(NoSuchAgency) as caught:
        command(state, ADMIN)
    assert caught.value.code == "no_such_agency"


@pytest.mark.parametrize("caller", [EVE, "invitee", BOB],
                         ids=["an outsider", "an invitee", "a former member"])
@pytest.mark.parametrize("command", ADMIN_COMMANDS.values(), ids=ADMIN_COMMANDS.keys())
def test_given_a_non_member_when_giving_an_administrators_command_then_no_such_agency(
        command: AdminCommand, caller: str) -> None:
    """Nothing tells someone not in an agency that its id is real."""
    with pytest.raises(NoSuchAgency) as caught:
        command(agency(supervising(SUE, ANN), marked(), invited("invitee"), left(BOB)), caller)
    assert caught.value.code == "no_such_agency"


# ---- invite and accept --------------------------------------------------------------------

@pytest.mark.parametrize("role", ["accountant", "supervisor"])
def test_given_an_agency_when_the_administrator_invites_then_invited_with_that_role(
        role: StaffRole) -> None:
    state = agency()
    events = domain.decide_invite(state, agency_id=AID, caller=ADMIN, member_id=EVE,
                                  role=role, at=LATER)
    assert events == [MemberInvited(agency_id=AID, member_id=EVE, role=role, at=LATER)]
    after = then(state, events)
    assert after.invited == {EVE: Place(role=role, since=LATER)}
    assert after.role(EVE) is None and after.members == state.members


def test_given_an_agency_when_the_administrator_invites_themself_then_cannot_invite_self(
        ) -> None:
    with pytest.raises(CannotInviteSelf) as caught:
        domain.decide_invite(agency(), agency_id=AID, caller=ADMIN, member_id=ADMIN,
                             role="accountant", at=LATER)
    assert caught.value.code == "cannot_invite_self"


@pytest.mark.parametrize("state, member", [
    (agency(), ANN), (agency(), SUE), (agency(invited(EVE)), EVE)],
    ids=["an accountant", "a supervisor", "an invitee"])
def test_given_someone_in_the_agency_when_invited_again_then_already_in_agency(
        state: AgencyState, member: str) -> None:
    with pytest.raises(AlreadyInAgency) as caught:
        domain.decide_invite(state, agency_id=AID, caller=ADMIN, member_id=member,
                             role="supervisor", at=LATER)
    assert caught.value.code == "already_in_agency"


def test_an_invitation_gives_nothing_until_accepted() -> None:
    state = agency(marked(), invited(EVE, "supervisor"), invited("inv-acc"))
    assert rows_of(state, EVE) == {} and rows_of(state, "inv-acc") == {}
    with pytest.raises(NotInAgency):  # an invitee cannot be given work or oversight
        domain.decide_supervise(state, agency_id=AID, caller=ADMIN, supervisor=EVE,
                                accountant=ANN, at=LATER)
    with pytest.raises(NotInAgency):
        domain.decide_hand_over(state, agency_id=AID, caller=ADMIN, owner_id=ANN,
                                set_id="s1", to_id="inv-acc", at=LATER)
    with pytest.raises(NotInAgency):
        domain.decide_role(state, agency_id=AID, caller=ADMIN, member_id=EVE,
                           role="accountant", at=LATER)
    with pytest.raises(NoSuchAgency):  # nor mark sets, nor leave
        domain.decide_mark(state, agency_id=AID, caller="inv-acc", set_id="s9", at=LATER)
    with pytest.raises(NoSuchAgency):
        domain.decide_leave(state, agency_id=AID, caller=EVE, at=LATER)


@pytest.mark.parametrize("role", ["accountant", "supervisor"])
def test_given_an_invitation_when_accepted_then_joined_with_its_role(role: StaffRole) -> None:
    state = agency(invited(EVE, role))
    events = domain.decide_accept(state, agency_id=AID, caller=EVE, at=LATER)
    assert events == [MemberJoined(agency_id=AID, member_id=EVE, role=role, at=LATER)]
    after = then(state, events)
    assert after.role(EVE) == role and after.members[EVE].since == LATER
    assert EVE not in after.invited


@pytest.mark.parametrize("state, caller", [
    (agency(), EVE), (agency(), ANN), (agency(), ADMIN),
    (agency(invited(EVE), removed(EVE)), EVE), (AgencyState(), EVE),
    (fold([*staffed(), invited(EVE), AgencyClosed(agency_id=AID, at=tick())]), EVE)],
    ids=["never invited", "a member", "the administrator", "invitation withdrawn",
         "no agency", "agency closed"])
def test_given_no_open_invitation_when_accepting_then_not_invited(
        state: AgencyState, caller: str) -> None:
    with pytest.raises(NotInvited) as caught:
        domain.decide_accept(state, agency_id=AID, caller=caller, at=LATER)
    assert caught.value.code == "not_invited"


# ---- leave and remove ---------------------------------------------------------------------

@pytest.mark.parametrize("member", [ANN, SUE])
def test_given_a_member_when_leaving_then_left(member: str) -> None:
    state = agency()
    events = domain.decide_leave(state, agency_id=AID, caller=member, at=LATER)
    assert events == [MemberLeft(agency_id=AID, member_id=member, at=LATER)]
    assert then(state, events).role(member) is None


def test_given_the_administrator_when_leaving_then_administrator_stays() -> None:
    with pytest.raises(AdministratorStays) as caught:
        domain.decide_leave(agency(), agency_id=AID, caller=ADMIN, at=LATER)
    assert caught.value.code == "administrator_stays"


@pytest.mark.parametrize("state, caller", [
    (agency(), EVE), (agency(invited(EVE)), EVE), (agency(left(ANN)), ANN), (closed(), ANN),
    (AgencyState(), ANN)],
    ids=["an outsider", "an invitee", "a former member", "agency closed", "no agency"])
def test_given_a_non_member_when_leaving_then_no_such_agency(
        state: AgencyState, caller: str) -> None:
    with pytest.raises(NoSuchAgency) as caught:
        domain.decide_leave(state, agency_id=AID, caller=caller, at=LATER)
    assert caught.value.code == "no_such_agency"


@pytest.mark.parametrize("member", [ANN, SUE, EVE], ids=["accountant", "supervisor",
                                                          "invitee"])
def test_given_someone_in_the_agency_when_the_administrator_removes_them_then_removed(
        member: str) -> None:
    state = agency(invited(EVE))
    events = domain.decide_remove_member(state, agency_id=AID, caller=ADMIN,
                                         member_id=member, at=LATER)
    assert events == [MemberRemoved(agency_id=AID, member_id=member, reason="removed",
                                    at=LATER)]
    after = then(state, events)
    assert member not in after.members and member not in after.invited


def test_given_the_administrator_when_removed_then_administrator_stays() -> None:
    with pytest.raises(AdministratorStays):
        domain.decide_remove_member(agency(), agency_id=AID, caller=ADMIN, member_id=ADMIN,
                                    at=LATER)


@pytest.mark.parametrize("state, member", [(agency(), EVE), (agency(left(BOB)), BOB)],
                         ids=["an outsider", "a former member"])
def test_given_someone_not_in_the_agency_when_removed_then_not_in_agency(
        state: AgencyState, member: str) -> None:
    with pytest.raises(NotInAgency) as caught:
        domain.decide_remove_member(state, agency_id=AID, caller=ADMIN, member_id=member,
                                    at=LATER)
    assert caught.value.code == "not_in_agency"


def departure(kind: str, mid: str) -> AgencyEvent:
    return left(mid) if kind == "left" else removed(mid)


DEPARTS = pytest.mark.parametrize("kind", ["left", "removed"])


@DEPARTS
def test_given_an_accountant_when_they_depart_then_their_own_sets_and_supervision_go(
        kind: str) -> None:
    state = agency(supervising(SUE, ANN), supervising(SUE, BOB), marked(ANN, "s1"),
                   marked(ANN, "s2"), marked(BOB, "s3"))
    assert set(rows_of(state, SUE)) == {(ANN, "s1"), (ANN, "s2"), (BOB, "s3")}
    after = then(state, [departure(kind, ANN)])
    assert rows_of(after, ANN) == {}
    assert ANN not in after.sets  # their own sets are no longer agency work
    assert after.supervision == {SUE: [BOB]}
    assert set(rows_of(after, SUE)) == {(BOB, "s3")}
    assert set(rows_of(after, ADMIN)) == {(BOB, "s3")}


@DEPARTS
def test_given_a_supervisor_when_they_depart_then_their_oversight_ends(kind: str) -> None:
    state = agency(supervising(SUE, ANN), marked())
    after = then(state, [departure(kind, SUE)])
    assert after.supervision == {} and rows_of(after, SUE) == {}
    assert rows_of(after, ADMIN) == {(ANN, "s1"): ("administrator", READ_ONLY)}


@DEPARTS
def test_given_a_keeper_when_they_depart_then_the_set_has_no_keeper_and_only_the_admin_sees_it(
        kind: str) -> None:
    state = agency(supervising(SUE, BOB), marked(), handed())
    assert rows_of(state, SUE) == {(ANN, "s1"): ("supervisor", READ_ONLY)}
    after = then(state, [departure(kind, BOB)])
    assert after.keeper(ANN, "s1") == ""
    assert access(after) == {(ANN, "s1", ADMIN): ("administrator", READ_ONLY),
                             (ANN, "s1", ANN): ("handed over", "none")}


@DEPARTS
def test_given_the_owner_of_a_set_handed_over_when_they_depart_then_the_work_stays(
        kind: str) -> None:
    """The agency's work stays with the agency: the keeper goes on, the departed owner is
    still refused the set (the only row a non-member may have)."""
    state = agency(marked(), handed())
    after = then(state, [departure(kind, ANN)])
    assert after.keeper(ANN, "s1") == BOB
    assert access(after) == {(ANN, "s1", ADMIN): ("administrator", READ_ONLY),
                             (ANN, "s1", BOB): ("keeper", READ_WRITE),
                             (ANN, "s1", ANN): ("handed over", "none")}


@DEPARTS
def test_given_a_departed_member_when_they_rejoin_then_nothing_comes_back(kind: str) -> None:
    state = agency(supervising(SUE, ANN), marked(ANN, "s1"), departure(kind, ANN),
                   *joined(ANN))
    assert state.role(ANN) == "accountant"
    assert state.supervision == {} and state.sets == {}
    assert access(state) == {}
    again = agency(supervising(SUE, ANN), departure(kind, SUE), *joined(SUE, "supervisor"))
    assert again.supervision == {}


# ---- roles ---------------------------------------------------------------------------------

def test_given_a_member_when_the_administrator_changes_their_role_then_role_changed() -> None:
    state = agency()
    events = domain.decide_role(state, agency_id=AID, caller=ADMIN, member_id=ANN,
                                role="supervisor", at=LATER)
    assert events == [RoleChanged(agency_id=AID, member_id=ANN, role="supervisor", at=LATER)]
    after = then(state, events)
    assert after.role(ANN) == "supervisor"
    assert after.members[ANN].since == state.members[ANN].since


def test_given_a_member_when_given_the_role_they_hold_then_nothing() -> None:
    assert domain.decide_role(agency(), agency_id=AID, caller=ADMIN, member_id=SUE,
                              role="supervisor", at=LATER) == []


@pytest.mark.parametrize("role", ["accountant", "supervisor"])
def test_given_the_administrator_when_their_role_changes_then_wrong_role(
        role: StaffRole) -> None:
    with pytest.raises(WrongRole) as caught:
        domain.decide_role(agency(), agency_id=AID, caller=ADMIN, member_id=ADMIN, role=role,
                           at=LATER)
    assert caught.value.code == "wrong_role"


@pytest.mark.parametrize("member", [EVE, "invitee"], ids=["an outsider", "an invitee"])
def test_given_someone_not_a_member_when_their_role_changes_then_not_in_agency(
        member: str) -> None:
    with pytest.raises(NotInAgency):
        domain.decide_role(agency(invited("invitee")), agency_id=AID, caller=ADMIN,
                           member_id=member, role="supervisor", at=LATER)


def test_given_a_supervised_accountant_when_made_supervisor_then_that_supervision_ends(
        ) -> None:
    state = agency(supervising(SUE, ANN), supervising(SUE, BOB), marked(BOB, "s2"))
    after = then(state, domain.decide_role(state, agency_id=AID, caller=ADMIN,
                                           member_id=ANN, role="supervisor", at=LATER))
    assert after.supervision == {SUE: [BOB]}
    assert set(rows_of(after, SUE)) == {(BOB, "s2")}


def test_given_an_accountant_keeping_sets_when_made_supervisor_then_wrong_role() -> None:
    for state in (agency(marked(ANN)), agency(marked(BOB, "s2"), handed(BOB, "s2", frm=BOB,
                                                                        to=ANN))):
        with pytest.raises(WrongRole, match="hand them over first"):
            domain.decide_role(state, agency_id=AID, caller=ADMIN, member_id=ANN,
                               role="supervisor", at=LATER)


def test_given_a_supervisor_when_made_accountant_then_their_oversight_ends() -> None:
    state = agency(supervising(SUE, ANN), marked())
    after = then(state, domain.decide_role(state, agency_id=AID, caller=ADMIN,
                                           member_id=SUE, role="accountant", at=LATER))
    assert after.supervision == {} and rows_of(after, SUE) == {}


# ---- supervision ---------------------------------------------------------------------------

def test_given_a_supervisor_and_an_accountant_when_assigned_then_they_see_its_sets() -> None:
    state = agency(marked())
    events = domain.decide_supervise(state, agency_id=AID, caller=ADMIN, supervisor=SUE,
                                     accountant=ANN, at=LATER)
    assert events == [SupervisionAssigned(agency_id=AID, supervisor_id=SUE,
                                          accountant_id=ANN, at=LATER)]
    after = then(state, events)
    assert after.supervision == {SUE: [ANN]}
    assert rows_of(after, SUE) == {(ANN, "s1"): ("supervisor", READ_ONLY)}


@pytest.mark.parametrize("supervisor, accountant", [
    (ANN, BOB), (SUE, SUE), (SUE, ADMIN), (ADMIN, ANN), (SUE, "sue2")],
    ids=["accountant over accountant", "supervisor over themself",
         "supervisor over the administrator", "administrator over accountant",
         "supervisor over supervisor"])
def test_given_the_wrong_roles_when_assigning_supervision_then_wrong_role(
        supervisor: str, accountant: str) -> None:
    with pytest.raises(WrongRole):
        domain.decide_supervise(agency(*joined("sue2", "supervisor")), agency_id=AID,
                                caller=ADMIN, supervisor=supervisor, accountant=accountant,
                                at=LATER)


@pytest.mark.parametrize("supervisor, accountant", [(EVE, ANN), (SUE, EVE)],
                         ids=["no such supervisor", "no such accountant"])
def test_given_a_non_member_when_assigning_supervision_then_not_in_agency(
        supervisor: str, accountant: str) -> None:
    with pytest.raises(NotInAgency):
        domain.decide_supervise(agency(invited(EVE)), agency_id=AID, caller=ADMIN,
                                supervisor=supervisor, accountant=accountant, at=LATER)


def test_given_a_supervision_when_assigned_again_then_supervision_exists() -> None:
    with pytest.raises(SupervisionExists) as caught:
        domain.decide_supervise(agency(supervising()), agency_id=AID, caller=ADMIN,
                                supervisor=SUE, accountant=ANN, at=LATER)
    assert caught.value.code == "supervision_exists"


def test_given_a_supervision_when_ended_then_the_supervisor_no_longer_sees_the_sets() -> None:
    state = agency(supervising(), marked())
    events = domain.decide_unsupervise(state, agency_id=AID, caller=ADMIN, supervisor=SUE,
                                       accountant=ANN, at=LATER)
    assert events == [SupervisionEnded(agency_id=AID, supervisor_id=SUE, accountant_id=ANN,
                                       at=LATER)]
    after = then(state, events)
    assert after.supervision == {} and rows_of(after, SUE) == {}


@pytest.mark.parametrize("supervisor, accountant", [(SUE, BOB), (SUE, EVE), (ANN, SUE)])
def test_given_no_such_supervision_when_ending_it_then_no_supervision(
        supervisor: str, accountant: str) -> None:
    with pytest.raises(NoSupervision) as caught:
        domain.decide_unsupervise(agency(supervising(SUE, ANN)), agency_id=AID, caller=ADMIN,
                                  supervisor=supervisor, accountant=accountant, at=LATER)
    assert caught.value.code == "no_supervision"


# ---- marking sets ----------------------------------------------------------------------------

def test_given_an_accountant_when_marking_a_set_then_they_keep_it_and_the_admin_oversees(
        ) -> None:
    state = agency()
    events = domain.decide_mark(state, agency_id=AID, caller=ANN, set_id="s1", at=LATER)
    assert events == [SetMarked(agency_id=AID, owner_id=ANN, set_id="s1", at=LATER)]
    after = then(state, events)
    assert after.keeper(ANN, "s1") == ANN
    # the owner keeping their own set needs no row: it is theirs anyway
    assert access(after) == {(ANN, "s1", ADMIN): ("administrator", READ_ONLY)}


@pytest.mark.parametrize("caller", [ADMIN, SUE], ids=["the administrator", "a supervisor"])
def test_given_a_member_not_an_accountant_when_marking_then_wrong_role(caller: str) -> None:
    with pytest.raises(WrongRole) as caught:
        domain.decide_mark(agency(), agency_id=AID, caller=caller, set_id="s1", at=LATER)
    assert caught.value.code == "wrong_role"


@pytest.mark.parametrize("state, caller", [
    (agency(), EVE), (agency(invited(EVE)), EVE), (closed(), ANN), (AgencyState(), ANN)],
    ids=["an outsider", "an invitee", "agency closed", "no agency"])
def test_given_a_non_member_when_marking_or_unmarking_then_no_such_agency(
        state: AgencyState, caller: str) -> None:
    with pytest.raises(NoSuchAgency):
        domain.decide_mark(state, agency_id=AID, caller=caller, set_id="s1", at=LATER)
    with pytest.raises(NoSuchAgency):
        domain.decide_unmark(state, agency_id=AID, caller=caller, set_id="s1", at=LATER)


@pytest.mark.parametrize("state", [
    agency(marked()), agency(marked(), handed()), agency(marked(), handed(), left(BOB))],
    ids=["marked", "handed over", "its keeper left"])
def test_given_an_agency_set_when_its_owner_marks_it_again_then_agency_set_taken(
        state: AgencyState) -> None:
    with pytest.raises(AgencySetTaken) as caught:
        domain.decide_mark(state, agency_id=AID, caller=ANN, set_id="s1", at=LATER)
    assert caught.value.code == "agency_set_taken"


def test_given_a_set_they_keep_when_the_owner_unmarks_it_then_it_leaves_the_agency() -> None:
    state = agency(supervising(), marked(), marked(ANN, "s2"))
    events = domain.decide_unmark(state, agency_id=AID, caller=ANN, set_id="s1", at=LATER)
    assert events == [SetUnmarked(agency_id=AID, owner_id=ANN, set_id="s1", at=LATER)]
    after = then(state, events)
    assert after.sets == {ANN: {"s2": ANN}}
    assert set(rows_of(after, SUE)) == {(ANN, "s2")}
    assert then(after, [SetUnmarked(agency_id=AID, owner_id=ANN, set_id="s2",
                                    at=LATER)]).sets == {}


@pytest.mark.parametrize("state, caller", [
    (agency(), ANN), (agency(marked()), BOB), (agency(marked(), handed()), ANN),
    (agency(marked(), handed()), BOB)],
    ids=["never marked", "someone else's", "handed over, by its owner",
         "handed over, by its keeper"])
def test_given_no_set_the_caller_keeps_when_unmarking_then_not_agency_set(
        state: AgencyState, caller: str) -> None:
    with pytest.raises(NotAgencySet) as caught:
        domain.decide_unmark(state, agency_id=AID, caller=caller, set_id="s1", at=LATER)
    assert caught.value.code == "not_agency_set"


# ---- handing over ------------------------------------------------------------------------

def test_given_a_marked_set_when_handed_over_then_the_owner_is_refused_and_the_keeper_writes(
        ) -> None:
    state = agency(supervising(SUE, ANN), marked())
    events = domain.decide_hand_over(state, agency_id=AID, caller=ADMIN, owner_id=ANN,
                                     set_id="s1", to_id=BOB, at=LATER)
    assert events == [SetHandedOver(agency_id=AID, owner_id=ANN, set_id="s1", from_id=ANN,
                                    to_id=BOB, at=LATER)]
    after = then(state, events)
    assert after.keeper(ANN, "s1") == BOB
    assert access(after) == {(ANN, "s1", ADMIN): ("administrator", READ_ONLY),
                             (ANN, "s1", BOB): ("keeper", READ_WRITE),
                             (ANN, "s1", ANN): ("handed over", "none")}
    # SUE oversees ANN, not BOB: she sees the set again once she oversees its keeper
    later = then(after, [supervising(SUE, BOB)])
    assert rows_of(later, SUE) == {(ANN, "s1"): ("supervisor", READ_ONLY)}


def test_given_a_set_handed_over_when_handed_back_to_its_owner_then_the_refusal_ends() -> None:
    state = agency(marked(), handed())
    events = domain.decide_hand_over(state, agency_id=AID, caller=ADMIN, owner_id=ANN,
                                     set_id="s1", to_id=ANN, at=LATER)
    assert events == [SetHandedOver(agency_id=AID, owner_id=ANN, set_id="s1", from_id=BOB,
                                    to_id=ANN, at=LATER)]
    assert access(then(state, events)) == {(ANN, "s1", ADMIN): ("administrator", READ_ONLY)}


def test_given_a_set_whose_keeper_left_when_handed_over_then_from_nobody() -> None:
    state = agency(*joined("cat-id"), marked(), handed(), left(BOB))
    [event] = domain.decide_hand_over(state, agency_id=AID, caller=ADMIN, owner_id=ANN,
                                      set_id="s1", to_id="cat-id", at=LATER)
    assert isinstance(event, SetHandedOver) and (event.from_id, event.to_id) == ("", "cat-id")
    assert rows_of(then(state, [event]), "cat-id") == {(ANN, "s1"): ("keeper", READ_WRITE)}


def test_given_a_set_when_handed_to_its_keeper_then_nothing() -> None:
    assert domain.decide_hand_over(agency(marked(), handed()), agency_id=AID, caller=ADMIN,
                                   owner_id=ANN, set_id="s1", to_id=BOB, at=LATER) == []


@pytest.mark.parametrize("to", [SUE, ADMIN], ids=["a supervisor", "the administrator"])
def test_given_a_member_not_an_accountant_when_handed_a_set_then_wrong_role(to: str) -> None:
    with pytest.raises(WrongRole):
        domain.decide_hand_over(agency(marked()), agency_id=AID, caller=ADMIN, owner_id=ANN,
                                set_id="s1", to_id=to, at=LATER)


@pytest.mark.parametrize("state", [agency(marked()), agency(marked(), invited(EVE)),
                                   agency(marked(), *joined(EVE), left(EVE))],
                         ids=["an outsider", "an invitee", "a former member"])
def test_given_someone_not_a_member_when_handed_a_set_then_not_in_agency(
        state: AgencyState) -> None:
    with pytest.raises(NotInAgency):
        domain.decide_hand_over(state, agency_id=AID, caller=ADMIN, owner_id=ANN,
                                set_id="s1", to_id=EVE, at=LATER)


@pytest.mark.parametrize("state, owner", [
    (agency(), ANN), (agency(marked()), BOB), (agency(marked(), left(ANN)), ANN)],
    ids=["never marked", "another owner", "its owner left"])
def test_given_a_set_not_agency_work_when_handed_over_then_not_agency_set(
        state: AgencyState, owner: str) -> None:
    with pytest.raises(NotAgencySet):
        domain.decide_hand_over(state, agency_id=AID, caller=ADMIN, owner_id=owner,
                                set_id="s1", to_id=BOB, at=LATER)


# ---- settings ------------------------------------------------------------------------------

def test_given_supervisors_write_when_changed_then_oversight_reads_and_writes() -> None:
    state = agency(supervising(SUE, ANN), marked())
    events = domain.decide_settings(state, agency_id=AID, caller=ADMIN,
                                    supervisors_write=True, at=LATER)
    assert events == [SettingsChanged(agency_id=AID, supervisors_write=True, at=LATER)]
    after = then(state, events)
    assert access(after) == {(ANN, "s1", SUE): ("supervisor", READ_WRITE),
                             (ANN, "s1", ADMIN): ("administrator", READ_WRITE)}
    assert domain.decide_settings(after, agency_id=AID, caller=ADMIN,
                                  supervisors_write=True, at=LATER) == []
    back = then(after, domain.decide_settings(after, agency_id=AID, caller=ADMIN,
                                              supervisors_write=False, at=LATER))
    assert access(back) == access(state)


def test_a_keeper_writes_whatever_the_setting() -> None:
    for writes in (False, True):
        state = agency(marked(), handed(),
                       SettingsChanged(agency_id=AID, supervisors_write=writes, at=tick()))
        assert rows_of(state, BOB) == {(ANN, "s1"): ("keeper", READ_WRITE)}


def test_given_no_change_when_setting_read_only_then_nothing() -> None:
    assert domain.decide_settings(agency(), agency_id=AID, caller=ADMIN,
                                  supervisors_write=False, at=LATER) == []


# ---- close and erasure ---------------------------------------------------------------------

MEMBER_COMMANDS: dict[str, Callable[[AgencyState], list[AgencyEvent]]] = {
    "leave": lambda s: domain.decide_leave(s, agency_id=AID, caller=BOB, at=LATER),
    "mark": lambda s: domain.decide_mark(s, agency_id=AID, caller=BOB, set_id="s9", at=LATER),
    "unmark": lambda s: domain.decide_unmark(s, agency_id=AID, caller=ANN, set_id="s1",
                                             at=LATER),
}


def test_given_an_agency_when_its_administrator_closes_it_then_all_its_access_ends() -> None:
    state = agency(supervising(), marked(), handed(), marked(BOB, "s2"), invited(EVE),
                   SettingsChanged(agency_id=AID, supervisors_write=True, at=tick()))
    assert access(state) != {}
    events = domain.decide_close(state, agency_id=AID, caller=ADMIN, at=LATER)
    assert events == [AgencyClosed(agency_id=AID, reason="removed", at=LATER)]
    after = then(state, events)
    assert not after.exists and access(after) == {}
    assert (after.members, after.invited, after.sets, after.supervision) == ({}, {}, {}, {})
    for decide in MEMBER_COMMANDS.values():
        with pytest.raises(NoSuchAgency):
            decide(after)
    with pytest.raises(NotInvited):
        domain.decide_accept(after, agency_id=AID, caller=EVE, at=LATER)


def test_given_an_administrator_when_erased_then_their_agency_closes() -> None:
    state = agency(marked())
    events = domain.decide_erased(state, agency_id=AID, member_id=ADMIN, at=LATER)
    assert events == [AgencyClosed(agency_id=AID, reason="erased", at=LATER)]
    assert access(then(state, events)) == {}


@pytest.mark.parametrize("member", [ANN, SUE, EVE], ids=["accountant", "supervisor",
                                                          "invitee"])
def test_given_anyone_else_in_it_when_erased_then_removed(member: str) -> None:
    state = agency(supervising(), marked(), invited(EVE))
    events = domain.decide_erased(state, agency_id=AID, member_id=member, at=LATER)
    assert events == [MemberRemoved(agency_id=AID, member_id=member, reason="erased",
                                    at=LATER)]
    after = then(state, events)
    assert member not in after.members and member not in after.invited
    assert rows_of(after, member) == {}


@pytest.mark.parametrize("state, member", [
    (agency(), EVE), (agency(left(ANN)), ANN), (closed(), ANN), (closed(), ADMIN),
    (AgencyState(), ADMIN)],
    ids=["an outsider", "a former member", "closed, a member", "closed, the administrator",
         "no agency"])
def test_given_nothing_to_end_when_erased_then_nothing(state: AgencyState,
                                                        member: str) -> None:
    assert domain.decide_erased(state, agency_id=AID, member_id=member, at=LATER) == []


# ---- invariants over any history -----------------------------------------------------------

POOL = [ADMIN, ANN, BOB, SUE, EVE]
SETS = ["s1", "s2"]
ADMIN_ONLY = {"invite", "remove", "role", "supervise", "unsupervise", "hand over", "settings",
              "close"}
AGENCY_ERRORS: tuple[type[LedgerError], ...] = (
    NoSuchAgency, NotAgencyAdmin, NotInAgency, AlreadyInAgency, NotInvited, WrongRole,
    AdministratorStays, AgencySetTaken, NotAgencySet, SupervisionExists, NoSupervision,
    CannotInviteSelf)


class Cmd(NamedTuple):
    kind: str
    caller: str
    who: str
    other: str
    role: StaffRole
    set_id: str
    flag: bool


# What ends it all is rare, so histories go on a while.
KINDS = [*["hand over"] * 40, *["invite", "accept", "mark", "supervise"] * 25,
         *["unsupervise", "unmark", "settings"] * 10, *["role", "remove", "leave"] * 5,
         "erased", "close"]


def holding(state: AgencyState, role: StaffRole) -> list[str]:
    return [m for m, p in state.members.items() if p.role == role]


SEED = st.integers(min_value=0, max_value=2**128)
ROLES: list[StaffRole] = ["accountant", "supervisor"]
T = TypeVar("T")


def draw_command(data: st.DataObject, state: AgencyState) -> Cmd:
    """Any command, valid or not, over the pool; callers and targets lean to those the
    command is for (so a history gets somewhere) but are anyone often enough."""
    seed = data.draw(SEED)  # one draw a command, every choice a digit of it

    def pick(choices: list[T]) -> T:
        nonlocal seed
        seed, digit = divmod(seed, len(choices))
        return choices[digit]

    def anyone_or(*likely: str) -> str:
        return pick([*sorted(likely) * 6, *POOL])

    supervisors, accountants = holding(state, "supervisor"), holding(state, "accountant")
    owners, staff = list(state.sets), [*supervisors, *accountants]
    outsiders = [m for m in POOL if m not in state.members and m not in state.invited]
    marked = sorted({sid for kept in state.sets.values() for sid in kept})
    paired = [*state.supervision, *(a for accs in state.supervision.values() for a in accs)]
    kind = pick(KINDS)
    match kind:
        case "accept":
            caller = anyone_or(*state.invited)
        case "leave":
            caller = anyone_or(*staff)
        case "mark":
            caller = anyone_or(*accountants)
        case "unmark":
            caller = anyone_or(*owners)
        case _:
            caller = anyone_or(state.admin_id)
    match kind:
        case "invite":
            who = anyone_or(*outsiders)
        case "remove" | "erased":
            who = anyone_or(*staff, *state.invited)
        case "role":
            who = anyone_or(*staff, *paired)
        case "supervise":
            who = anyone_or(*supervisors)
        case "unsupervise":
            who = anyone_or(*state.supervision)
        case "hand over":
            who = anyone_or(*owners)
        case _:
            who = anyone_or()
    return Cmd(kind, caller, who, other=anyone_or(*accountants), role=pick(ROLES),
               set_id=pick([*marked * 3, *SETS]), flag=pick([False, True]))


def decide(state: AgencyState, cmd: Cmd, at: datetime) -> list[AgencyEvent]:
    """One command of any kind, valid or not."""
    c = cmd.caller
    match cmd.kind:
        case "invite":
            return domain.decide_invite(state, agency_id=AID, caller=c, member_id=cmd.who,
                                        role=cmd.role, at=at)
        case "accept":
            return domain.decide_accept(state, agency_id=AID, caller=c, at=at)
        case "leave":
            return domain.decide_leave(state, agency_id=AID, caller=c, at=at)
        case "remove":
            return domain.decide_remove_member(state, agency_id=AID, caller=c,
                                               member_id=cmd.who, at=at)
        case "role":
            return domain.decide_role(state, agency_id=AID, caller=c, member_id=cmd.who,
                                      role=cmd.role, at=at)
        case "supervise":
            return domain.decide_supervise(state, agency_id=AID, caller=c, supervisor=cmd.who,
                                           accountant=cmd.other, at=at)
        case "unsupervise":
            return domain.decide_unsupervise(state, agency_id=AID, caller=c,
                                             supervisor=cmd.who, accountant=cmd.other, at=at)
        case "mark":
            return domain.decide_mark(state, agency_id=AID, caller=c, set_id=cmd.set_id,
                                      at=at)
        case "unmark":
            return domain.decide_unmark(state, agency_id=AID, caller=c, set_id=cmd.set_id,
                                        at=at)
        case "hand over":
            return domain.decide_hand_over(state, agency_id=AID, caller=c, owner_id=cmd.who,
                                           set_id=cmd.set_id, to_id=cmd.other, at=at)
        case "settings":
            return domain.decide_settings(state, agency_id=AID, caller=c,
                                          supervisors_write=cmd.flag, at=at)
        case "erased":
            return domain.decide_erased(state, agency_id=AID, member_id=cmd.who, at=at)
    return domain.decide_close(state, agency_id=AID, caller=c, at=at)


def check_refusal(state: AgencyState, cmd: Cmd, error: LedgerError) -> None:
    """A refusal names the first rule the command broke."""
    in_it = state.exists and cmd.caller in state.members
    if cmd.kind == "accept":
        assert isinstance(error, NotInvited)
    elif not in_it:  # to someone not in it, the agency does not exist
        assert isinstance(error, NoSuchAgency)
    elif cmd.kind in ADMIN_ONLY and cmd.caller != state.admin_id:
        assert isinstance(error, NotAgencyAdmin)
    elif cmd.kind == "mark" and state.role(cmd.caller) != "accountant":
        assert isinstance(error, WrongRole)
    assert cmd.kind != "erased"  # erasure is never refused


def check_invariants(state: AgencyState, history: list[AgencyEvent]) -> None:
    assert fold(history) == state
    assert msgspec.json.decode(msgspec.json.encode(state), type=AgencyState) == state
    rows = access(state)
    if not state.exists:
        assert rows == {}
        return
    # one administrator, who is a member; nobody both invited and in
    assert [m for m, p in state.members.items() if p.role == "administrator"] == [
        state.admin_id]
    assert not set(state.members) & set(state.invited)
    # only current members have access; a non-member only the owner's refusal
    for (owner, _sid, member), (why, grant) in rows.items():
        if (why, grant) == ("handed over", "none"):
            assert member == owner
        else:
            assert member in state.members, (member, why)
            assert grant != "none"
    # supervision runs from a supervisor to an accountant, both members
    for sup, accountants in state.supervision.items():
        assert state.role(sup) == "supervisor"
        assert accountants and accountants == sorted(set(accountants))
        assert all(state.role(acc) == "accountant" for acc in accountants)
    # a refusal exactly where the set's keeper is not its owner; keepers are members; an
    # owner who keeps their own set is a member
    for owner, kept in state.sets.items():
        assert kept
        for sid, keeper in kept.items():
            refused = rows.get((owner, sid, owner)) == ("handed over", "none")
            assert refused == (keeper != owner)
            assert keeper == "" or keeper in state.members
            assert rows[(owner, sid, state.admin_id)][0] == "administrator"
    assert sum(1 for why in rows.values() if why[1] == "none") == sum(
        1 for owner, kept in state.sets.items() for k in kept.values() if k != owner)


STEPS = st.integers(min_value=0, max_value=60)
# Who the administrator invites first (with the role, and whether they accept), so that a
# history starts with some staff; the commands after that invite and accept too.
CAST = st.dictionaries(st.sampled_from([ANN, BOB, SUE, EVE]),
                       st.tuples(st.sampled_from(ROLES), st.booleans()))


def begun(cast: dict[str, tuple[StaffRole, bool]]) -> list[AgencyEvent]:
    """An agency's first events: created, then the cast invited and (some) joined, each
    decided as a command is."""
    history = domain.decide_create(agency_id=AID, name="好帐房", caller=ADMIN, at=T0)
    for mid, (role, accepts) in cast.items():
        history += domain.decide_invite(fold(history), agency_id=AID, caller=ADMIN,
                                        member_id=mid, role=role, at=T0)
        if accepts:
            history += domain.decide_accept(fold(history), agency_id=AID, caller=mid, at=T0)
    return history


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_whatever_is_commanded_the_agency_keeps_its_invariants(data: st.DataObject) -> None:
    """Random commands, valid or not: those refused are refused with the right error, the
    events of the others are applied, and the invariants hold after every step."""
    history = begun(data.draw(CAST))
    state = fold(history)
    check_invariants(state, history)
    for n in range(1, data.draw(STEPS) + 1):
        cmd, at = draw_command(data, state), T0 + timedelta(minutes=n)
        try:
            events = decide(state, cmd, at)
        except AGENCY_ERRORS as error:
            check_refusal(state, cmd, error)
            continue
        assert all(e.agency_id == AID and msgspec.structs.asdict(e)["at"] == at
                   for e in events)
        for event in events:
            state = evolve(state, event)
        history += events
        check_invariants(state, history)


@settings(max_examples=100, deadline=None)
@given(st.data(), st.sampled_from([ANN, BOB, SUE]), st.sampled_from(["leave", "remove",
                                                                     "erased"]))
def test_whoever_departs_keeps_nothing_but_the_refusal_of_sets_handed_on(
        data: st.DataObject, member: str, how: str) -> None:
    """After any history, a member who leaves, is removed or is erased keeps no place, no
    oversight, no work and no access: only the refusal of their own sets the agency handed
    to someone else; rejoining gives none of it back."""
    state = fold(begun(data.draw(CAST)))
    for n in range(1, data.draw(STEPS) + 1):
        try:
            events = decide(state, draw_command(data, state), T0 + timedelta(minutes=n))
        except AGENCY_ERRORS:
            continue
        state = then(state, events)
    if member not in state.members:
        return
    caller = member if how == "leave" else ADMIN
    after = then(state, decide(state, Cmd(how, caller, member, member, "accountant", "s1",
                                          False), LATER))
    assert member not in after.members and member not in after.supervision
    assert all(member not in accs for accs in after.supervision.values())
    assert all(member not in kept.values() for kept in after.sets.values())
    for (owner, sid), why in rows_of(after, member).items():
        assert owner == member and why == ("handed over", "none")
        assert after.keeper(owner, sid) not in (None, member)
    # and coming back brings nothing back: no oversight, no work, no access
    back = then(after, [*domain.decide_invite(after, agency_id=AID, caller=ADMIN,
                                              member_id=member, role="accountant",
                                              at=LATER),
                        MemberJoined(agency_id=AID, member_id=member, role="accountant",
                                     at=LATER)])
    assert back.role(member) == "accountant"
    assert member not in back.supervision
    assert all(member not in accs for accs in back.supervision.values())
    assert rows_of(back, member) == rows_of(after, member)
    assert all(member not in kept.values() for kept in back.sets.values())
