"""social's domain: one friendship between two members, `evolve` and `decide`; the
decisions about one agency (its state and fold: `contracts.agency_state`). Pure."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import msgspec

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
    Role,
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
)
from contracts.agency_state import AgencyState
from contracts.social import (
    AlreadyFriends,
    CannotFriendSelf,
    FriendAdded,
    FriendRemoved,
    NotFriends,
    SocialEvent,
    pair_id,
)


class Friendship(msgspec.Struct, frozen=True, kw_only=True):
    """Whether two members are friends, and since when."""

    active: bool = False
    since: datetime | None = None


def evolve(state: Friendship, event: SocialEvent) -> Friendship:
    match event:
        case FriendAdded(at=at):
            return Friendship(active=True, since=at)
        case FriendRemoved():
            return Friendship()
    return state


def fold(events: Iterable[SocialEvent]) -> Friendship:
    state = Friendship()
    for event in events:
        state = evolve(state, event)
    return state


def decide_add(state: Friendship, *, member_id: str, friend_id: str, friend_nickname: str,
               at: datetime) -> FriendAdded:
    """Befriend someone who is not yet a friend (and not oneself)."""
    if member_id == friend_id:
        raise CannotFriendSelf("you cannot add yourself as a friend")
    if state.active:
        raise AlreadyFriends("you are already friends")
    return FriendAdded(friendship_id=pair_id(member_id, friend_id), member_id=member_id,
                       friend_id=friend_id, friend_nickname=friend_nickname, at=at)


def decide_remove(state: Friendship, *, member_id: str, friend_id: str,
                  at: datetime) -> FriendRemoved:
    """End a friendship that exists."""
    if not state.active:
        raise NotFriends("that member is not your friend")
    return FriendRemoved(friendship_id=pair_id(member_id, friend_id), member_id=member_id,
                         friend_id=friend_id, at=at)


# ---- agencies (contracts/agency.py; the state and its fold: contracts/agency_state.py) --

def _admin(state: AgencyState, caller: str) -> None:
    """Refuse anyone but the administrator; to someone not in the agency it does not
    exist (no answer tells an outsider that an agency id is real)."""
    _member(state, caller)
    if caller != state.admin_id:
        raise NotAgencyAdmin("only the agency's administrator may do that")


def _member(state: AgencyState, caller: str) -> Role:
    """The caller's role; an agency they are not in does not exist for them."""
    role = state.role(caller) if state.exists else None
    if role is None:
        raise NoSuchAgency("no such agency, or you are not in it")
    return role


def _staff(state: AgencyState, member_id: str) -> Role:
    role = state.role(member_id)
    if role is None:
        raise NotInAgency("that member is not in the agency")
    return role


def decide_create(*, agency_id: str, name: str, caller: str, at: datetime) -> list[AgencyEvent]:
    return [AgencyCreated(agency_id=agency_id, name=name, admin_id=caller, at=at)]


def decide_invite(state: AgencyState, *, agency_id: str, caller: str, member_id: str,
                  role: StaffRole, at: datetime) -> list[AgencyEvent]:
    _admin(state, caller)
    if member_id == caller:
        raise CannotInviteSelf("you cannot invite yourself")
    if member_id in state.members or member_id in state.invited:
        raise AlreadyInAgency("that member is in the agency already, or invited")
    return [MemberInvited(agency_id=agency_id, member_id=member_id, role=role, at=at)]


def decide_accept(state: AgencyState, *, agency_id: str, caller: str,
                  at: datetime) -> list[AgencyEvent]:
    place = state.invited.get(caller) if state.exists else None
    if place is None:
        raise NotInvited("you have no open invitation to that agency")
    role: StaffRole = "supervisor" if place.role == "supervisor" else "accountant"
    return [MemberJoined(agency_id=agency_id, member_id=caller, role=role, at=at)]


def decide_leave(state: AgencyState, *, agency_id: str, caller: str,
                 at: datetime) -> list[AgencyEvent]:
    if _member(state, caller) == "administrator":
        raise AdministratorStays("the administrator cannot leave; close the agency instead")
    return [MemberLeft(agency_id=agency_id, member_id=caller, at=at)]


def decide_remove_member(state: AgencyState, *, agency_id: str, caller: str, member_id: str,
                  at: datetime) -> list[AgencyEvent]:
    _admin(state, caller)
    if member_id == state.admin_id:
        raise AdministratorStays("the administrator cannot be removed; close the agency")
    if member_id not in state.members and member_id not in state.invited:
        raise NotInAgency("that member is not in the agency")
    return [MemberRemoved(agency_id=agency_id, member_id=member_id, at=at)]


def decide_role(state: AgencyState, *, agency_id: str, caller: str, member_id: str,
                role: StaffRole, at: datetime) -> list[AgencyEvent]:
    _admin(state, caller)
    current = _staff(state, member_id)
    if current == "administrator":
        raise WrongRole("the administrator's role does not change")
    if current == role:
        return []
    if any(keeper == member_id for kept in state.sets.values() for keeper in kept.values()):
        raise WrongRole("that accountant keeps agency sets; hand them over first")
    return [RoleChanged(agency_id=agency_id, member_id=member_id, role=role, at=at)]


def decide_supervise(state: AgencyState, *, agency_id: str, caller: str, supervisor: str,
                     accountant: str, at: datetime) -> list[AgencyEvent]:
    _admin(state, caller)
    if _staff(state, supervisor) != "supervisor":
        raise WrongRole("only a supervisor can oversee accountants")
    if _staff(state, accountant) != "accountant":
        raise WrongRole("a supervisor oversees accountants only")
    if accountant in state.supervision.get(supervisor, []):
        raise SupervisionExists("that supervisor already oversees that accountant")
    return [SupervisionAssigned(agency_id=agency_id, supervisor_id=supervisor,
                                accountant_id=accountant, at=at)]


def decide_unsupervise(state: AgencyState, *, agency_id: str, caller: str, supervisor: str,
                       accountant: str, at: datetime) -> list[AgencyEvent]:
    _admin(state, caller)
    if accountant not in state.supervision.get(supervisor, []):
        raise NoSupervision("that supervisor does not oversee that accountant")
    return [SupervisionEnded(agency_id=agency_id, supervisor_id=supervisor,
                             accountant_id=accountant, at=at)]


def decide_mark(state: AgencyState, *, agency_id: str, caller: str, set_id: str,
                at: datetime) -> list[AgencyEvent]:
    if _member(state, caller) != "accountant":
        raise WrongRole("only an accountant marks their account sets as agency work")
    if state.keeper(caller, set_id) is not None:
        raise AgencySetTaken("that account set is agency work already")
    return [SetMarked(agency_id=agency_id, owner_id=caller, set_id=set_id, at=at)]


def decide_unmark(state: AgencyState, *, agency_id: str, caller: str, set_id: str,
                  at: datetime) -> list[AgencyEvent]:
    _member(state, caller)
    if state.keeper(caller, set_id) != caller:
        raise NotAgencySet("that is not an agency set you keep")
    return [SetUnmarked(agency_id=agency_id, owner_id=caller, set_id=set_id, at=at)]


def decide_hand_over(state: AgencyState, *, agency_id: str, caller: str, owner_id: str,
                     set_id: str, to_id: str, at: datetime) -> list[AgencyEvent]:
    _admin(state, caller)
    keeper = state.keeper(owner_id, set_id)
    if keeper is None:
        raise NotAgencySet("that account set is not this agency's work")
    if _staff(state, to_id) != "accountant":
        raise WrongRole("an agency set is handed over to an accountant")
    if keeper == to_id:
        return []
    return [SetHandedOver(agency_id=agency_id, owner_id=owner_id, set_id=set_id,
                          from_id=keeper, to_id=to_id, at=at)]


def decide_settings(state: AgencyState, *, agency_id: str, caller: str,
                    supervisors_write: bool, at: datetime) -> list[AgencyEvent]:
    _admin(state, caller)
    if state.supervisors_write == supervisors_write:
        return []
    return [SettingsChanged(agency_id=agency_id, supervisors_write=supervisors_write, at=at)]


def decide_close(state: AgencyState, *, agency_id: str, caller: str,
                 at: datetime) -> list[AgencyEvent]:
    _admin(state, caller)
    return [AgencyClosed(agency_id=agency_id, at=at)]


def decide_erased(state: AgencyState, *, agency_id: str, member_id: str,
                  at: datetime) -> list[AgencyEvent]:
    """A member's erasure: an administrator's agency closes; anyone else is removed."""
    if not state.exists:
        return []
    if member_id == state.admin_id:
        return [AgencyClosed(agency_id=agency_id, reason="erased", at=at)]
    if member_id in state.members or member_id in state.invited:
        return [MemberRemoved(agency_id=agency_id, member_id=member_id, reason="erased",
                              at=at)]
    return []
