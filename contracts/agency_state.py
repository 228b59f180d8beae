"""What an agency's events mean: the fold of one agency, and the access it gives. Pure.

One definition read by both sides: social decides agency commands on this state, and
sharing projects `access` from it beside friends' shares, so the rule "a member who left
keeps nothing through the agency" cannot mean two things in two services.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Literal

import msgspec

from contracts.agency import (
    AgencyClosed,
    AgencyCreated,
    AgencyEvent,
    MemberInvited,
    MemberJoined,
    MemberLeft,
    MemberRemoved,
    Role,
    RoleChanged,
    SetHandedOver,
    SetMarked,
    SettingsChanged,
    SetUnmarked,
    SupervisionAssigned,
    SupervisionEnded,
)

Why = Literal["administrator", "supervisor", "keeper", "handed over"]
Grant = Literal["read-write", "read-only", "none"]  # "none": the owner's, once handed over


class Place(msgspec.Struct, frozen=True, kw_only=True):
    role: Role
    since: datetime


class AgencyState(msgspec.Struct, frozen=True, kw_only=True):
    """One agency. Stored as JSON by the read models, so keys are plain strings."""

    name: str = ""
    admin_id: str = ""
    closed: bool = False
    supervisors_write: bool = False
    members: dict[str, Place] = {}
    invited: dict[str, Place] = {}
    supervision: dict[str, list[str]] = {}  # supervisor -> the accountants they oversee
    sets: dict[str, dict[str, str]] = {}  # owner -> set id -> keeper ("" for nobody)

    @property
    def exists(self) -> bool:
        return bool(self.admin_id) and not self.closed

    def role(self, member_id: str) -> Role | None:
        place = self.members.get(member_id)
        return None if place is None else place.role

    def keeper(self, owner_id: str, set_id: str) -> str | None:
        return self.sets.get(owner_id, {}).get(set_id)


def evolve(state: AgencyState, event: AgencyEvent) -> AgencyState:
    """The agency after one event."""
    match event:
        case AgencyCreated(name=name, admin_id=admin, at=at):
            return AgencyState(name=name, admin_id=admin,
                               members={admin: Place(role="administrator", since=at)})
        case MemberInvited(member_id=mid, role=role, at=at):
            return _with(state, invited={**state.invited, mid: Place(role=role, since=at)})
        case MemberJoined(member_id=mid, role=role, at=at):
            invited = {k: v for k, v in state.invited.items() if k != mid}
            return _with(state, invited=invited,
                         members={**state.members, mid: Place(role=role, since=at)})
        case MemberLeft(member_id=mid) | MemberRemoved(member_id=mid):
            return _departed(state, mid)
        case RoleChanged(member_id=mid, role=role):
            return _role_changed(state, mid, role)
        case SupervisionAssigned(supervisor_id=sup, accountant_id=acc):
            accountants = sorted({*state.supervision.get(sup, []), acc})
            return _with(state, supervision={**state.supervision, sup: accountants})
        case SupervisionEnded(supervisor_id=sup, accountant_id=acc):
            return _with(state, supervision=_without_pair(state.supervision, sup, acc))
        case SetMarked(owner_id=owner, set_id=sid):
            return _with(state, sets=_set_keeper(state.sets, owner, sid, owner))
        case SetUnmarked(owner_id=owner, set_id=sid):
            return _with(state, sets=_set_keeper(state.sets, owner, sid, None))
        case SetHandedOver(owner_id=owner, set_id=sid, to_id=to):
            return _with(state, sets=_set_keeper(state.sets, owner, sid, to))
        case SettingsChanged(supervisors_write=writes):
            return _with(state, supervisors_write=writes)
        case AgencyClosed():
            return AgencyState(name=state.name, admin_id=state.admin_id, closed=True)
    return state


def fold(events: Iterable[AgencyEvent]) -> AgencyState:
    state = AgencyState()
    for event in events:
        state = evolve(state, event)
    return state


def _with(state: AgencyState, **changes: object) -> AgencyState:
    return msgspec.structs.replace(state, **changes)


def _departed(state: AgencyState, mid: str) -> AgencyState:
    """A member gone: their place, invitation and supervision end; the sets they own and
    keep are theirs alone again; a set handed to them waits for a keeper."""
    supervision = {sup: [a for a in accs if a != mid]
                   for sup, accs in state.supervision.items() if sup != mid}
    sets: dict[str, dict[str, str]] = {}
    for owner, kept in state.sets.items():
        for sid, keeper in kept.items():
            if keeper != mid:
                sets.setdefault(owner, {})[sid] = keeper
            elif owner != mid:
                sets.setdefault(owner, {})[sid] = ""
    return _with(state, members={k: v for k, v in state.members.items() if k != mid},
                 invited={k: v for k, v in state.invited.items() if k != mid},
                 supervision={k: v for k, v in supervision.items() if v}, sets=sets)


def _role_changed(state: AgencyState, mid: str, role: Role) -> AgencyState:
    """A new role; the supervision that no longer fits it ends."""
    place = state.members[mid]
    supervision = dict(state.supervision)
    if role != "supervisor":
        supervision.pop(mid, None)
    if role != "accountant":
        supervision = {s: [a for a in accs if a != mid] for s, accs in supervision.items()}
    return _with(state, members={**state.members, mid: Place(role=role, since=place.since)},
                 supervision={k: v for k, v in supervision.items() if v})


def _without_pair(supervision: dict[str, list[str]], sup: str,
                  acc: str) -> dict[str, list[str]]:
    rest = [a for a in supervision.get(sup, []) if a != acc]
    return {**{k: v for k, v in supervision.items() if k != sup}, **({sup: rest} if rest else {})}


def _set_keeper(sets: dict[str, dict[str, str]], owner: str, sid: str,
                keeper: str | None) -> dict[str, dict[str, str]]:
    kept = dict(sets.get(owner, {}))
    if keeper is None:
        kept.pop(sid, None)
    else:
        kept[sid] = keeper
    return {**{k: v for k, v in sets.items() if k != owner}, **({owner: kept} if kept else {})}


# ---- the access an agency gives ---------------------------------------------------------

AccessKey = tuple[str, str, str]  # (owner, set, member)


def access(state: AgencyState) -> dict[AccessKey, tuple[Why, Grant]]:
    """Who may use which agency set, and why: the administrator over every set, a
    supervisor over the sets their accountants keep, a keeper (after a handover) as the
    owner did. An owner whose set was handed to someone else is refused it ("none")."""
    if not state.exists:
        return {}
    oversight: Grant = "read-write" if state.supervisors_write else "read-only"
    found: dict[AccessKey, tuple[Why, Grant]] = {}
    for owner, kept in state.sets.items():
        for sid, keeper in kept.items():
            for sup, accountants in state.supervision.items():
                if keeper in accountants:
                    found[(owner, sid, sup)] = ("supervisor", oversight)
            found[(owner, sid, state.admin_id)] = ("administrator", oversight)
            if keeper != owner:
                if keeper:
                    found[(owner, sid, keeper)] = ("keeper", "read-write")
                found[(owner, sid, owner)] = ("handed over", "none")
    return found
