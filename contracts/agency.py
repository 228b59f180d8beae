"""agencies: a bookkeeping agency (代账公司), its members' roles, who supervises whom, and
which account sets are agency work. Hosted by the social service, beside friendships:
an invitation is proved as a friend request is (account and nickname) against social's
directory. Who may read or write a set through an agency is sharing's answer
(`sharing.check`), projected from these events.

Subjects:
  evt.social.agency.<agency id>.<Type>   one agency: every fact about it, in one order
Requests: social.<operation> (see `contracts.social.SocialClient`).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

import msgspec

from contracts.base import CommandReply, Event, Reply, Request
from contracts.errors import BadRequest, Conflict, Forbidden, NotFound
from contracts.identity import Account, CommandId, Nickname
from contracts.storage import SetId
from contracts.subjects import aggregate_subjects, event_subject
from contracts.text import plain_text

CONTEXT = "social"  # the context that hosts agencies
AGGREGATE = "agency"
_AGENCIES = uuid.UUID("5b7e2f0a-9c43-4d1e-b6a8-0e3c71d4f925")
Role = Literal["administrator", "supervisor", "accountant"]
StaffRole = Literal["supervisor", "accountant"]  # what an invitation or a role change gives
AgencyName = Annotated[str, plain_text(min_length=1, max_length=60, blank=False)]
AgencyId = Annotated[str, msgspec.Meta(min_length=1, max_length=64,
                                       pattern=r"^[A-Za-z0-9_-]+$")]
Seq = Annotated[int, msgspec.Meta(ge=0)]  # a log position (consistency), never a credential
RemoveReason = Literal["removed", "erased"]


class AgencyEvent(Event, frozen=True, kw_only=True):
    """Base of an agency's events: each names its agency and when it happened."""

    agency_id: str
    at: datetime


class AgencyCreated(AgencyEvent, frozen=True, kw_only=True):
    """``admin_id`` created the agency and is its administrator."""

    name: str
    admin_id: str


class MemberInvited(AgencyEvent, frozen=True, kw_only=True):
    """The administrator invited ``member_id`` as ``role``; nothing changes until they accept."""

    member_id: str
    role: StaffRole


class MemberJoined(AgencyEvent, frozen=True, kw_only=True):
    """``member_id`` accepted the invitation and holds its role."""

    member_id: str
    role: StaffRole


class MemberLeft(AgencyEvent, frozen=True, kw_only=True):
    """``member_id`` left: every access they had through the agency ended."""

    member_id: str


class MemberRemoved(AgencyEvent, frozen=True, kw_only=True):
    """The administrator removed ``member_id`` (or their erasure did)."""

    member_id: str
    reason: RemoveReason = "removed"


class RoleChanged(AgencyEvent, frozen=True, kw_only=True):
    """``member_id`` now holds ``role``; supervision that no longer fits it ended."""

    member_id: str
    role: StaffRole


class SupervisionAssigned(AgencyEvent, frozen=True, kw_only=True):
    """``supervisor_id`` oversees ``accountant_id``'s agency sets."""

    supervisor_id: str
    accountant_id: str


class SupervisionEnded(AgencyEvent, frozen=True, kw_only=True):
    """``supervisor_id`` no longer oversees ``accountant_id``."""

    supervisor_id: str
    accountant_id: str


class SetMarked(AgencyEvent, frozen=True, kw_only=True):
    """``owner_id`` (an accountant) marked their account set as the agency's work."""

    owner_id: str
    set_id: str


class SetUnmarked(AgencyEvent, frozen=True, kw_only=True):
    """The owner took a set they still keep back from the agency."""

    owner_id: str
    set_id: str


class SetHandedOver(AgencyEvent, frozen=True, kw_only=True):
    """The administrator handed an agency set to ``to_id``, who keeps it from now on;
    ``from_id`` (its keeper until now, "" for none) lost the access it gave at once. The
    files stay in ``owner_id``'s drive."""

    owner_id: str
    set_id: str
    from_id: str
    to_id: str


class SettingsChanged(AgencyEvent, frozen=True, kw_only=True):
    """Whether supervisors (and the administrator) may upload corrected versions."""

    supervisors_write: bool


class AgencyClosed(AgencyEvent, frozen=True, kw_only=True):
    """The agency ended (its administrator closed it, or was erased): all its access ended."""

    reason: RemoveReason = "removed"


AnyAgencyEvent = (AgencyCreated | MemberInvited | MemberJoined | MemberLeft | MemberRemoved
                  | RoleChanged | SupervisionAssigned | SupervisionEnded | SetMarked
                  | SetUnmarked | SetHandedOver | SettingsChanged | AgencyClosed)
# What ends someone's place in an agency (sharing and social's listing drop them alike).
DEPARTURES = (MemberLeft, MemberRemoved)


def agency_id_for(member_id: str, command_id: str) -> str:
    """The id of the agency a member's create command makes: the same on a retry."""
    return str(uuid.uuid5(_AGENCIES, f"{member_id}:{command_id}"))


def agency_subjects(agency_id: str) -> str:
    return aggregate_subjects(CONTEXT, AGGREGATE, agency_id)


def agency_subject(agency_id: str, event: AgencyEvent) -> str:
    return event_subject(CONTEXT, AGGREGATE, agency_id, type(event).__name__)


# ---- errors -----------------------------------------------------------------------------

class NoSuchAgency(NotFound):
    """No agency has that id, or it is closed, or the caller is not in it."""

    code = "no_such_agency"


class NotAgencyAdmin(Forbidden):
    """Only the agency's administrator may do that."""

    code = "not_agency_admin"


class NotInAgency(NotFound):
    """That member is not (or no longer) in the agency."""

    code = "not_in_agency"


class AlreadyInAgency(Conflict):
    """That member is in the agency already, or invited."""

    code = "already_in_agency"


class NotInvited(NotFound):
    """There is no open invitation to that agency for the caller."""

    code = "not_invited"


class WrongRole(Conflict):
    """The member's role does not allow that (only accountants keep sets, only supervisors
    supervise, the administrator's role does not change)."""

    code = "wrong_role"


class AdministratorStays(Conflict):
    """The administrator cannot leave or be removed; they close the agency instead."""

    code = "administrator_stays"


class AgencySetTaken(Conflict):
    """That account set is agency work already."""

    code = "agency_set_taken"


class NotAgencySet(NotFound):
    """That account set is not agency work of this agency (or not the caller's to unmark)."""

    code = "not_agency_set"


class SupervisionExists(Conflict):
    """That supervisor oversees that accountant already."""

    code = "supervision_exists"


class NoSupervision(NotFound):
    """That supervisor does not oversee that accountant."""

    code = "no_supervision"


class CannotInviteSelf(BadRequest):
    """The administrator is in the agency already."""

    code = "cannot_invite_self"


# ---- requests and replies ---------------------------------------------------------------

class CreateAgency(Request, frozen=True, kw_only=True):
    command_id: CommandId
    session: str
    name: AgencyName
    seq: Seq = 0


class Invite(Request, frozen=True, kw_only=True):
    command_id: CommandId
    session: str
    agency_id: AgencyId
    account: Account
    nickname: Nickname
    role: StaffRole = "accountant"
    seq: Seq = 0


class AgencyCommand(Request, frozen=True, kw_only=True):
    """A command about the caller's own place in an agency (accept, leave, close)."""

    command_id: CommandId
    session: str
    agency_id: AgencyId
    seq: Seq = 0


class MemberCommand(Request, frozen=True, kw_only=True):
    """The administrator's command about one member (remove)."""

    command_id: CommandId
    session: str
    agency_id: AgencyId
    account: Account
    seq: Seq = 0


class ChangeRole(Request, frozen=True, kw_only=True):
    command_id: CommandId
    session: str
    agency_id: AgencyId
    account: Account
    role: StaffRole
    seq: Seq = 0


class Supervision(Request, frozen=True, kw_only=True):
    command_id: CommandId
    session: str
    agency_id: AgencyId
    supervisor: Account
    accountant: Account
    seq: Seq = 0


class MarkSet(Request, frozen=True, kw_only=True):
    command_id: CommandId
    session: str
    agency_id: AgencyId
    set_id: SetId
    seq: Seq = 0


class HandOver(Request, frozen=True, kw_only=True):
    command_id: CommandId
    session: str
    agency_id: AgencyId
    owner: Account  # whose drive holds the set
    set_id: SetId
    to: Account
    seq: Seq = 0


class ChangeSettings(Request, frozen=True, kw_only=True):
    command_id: CommandId
    session: str
    agency_id: AgencyId
    supervisors_write: bool
    seq: Seq = 0


class AgencyChanged(CommandReply, frozen=True, kw_only=True):
    agency_id: str


class ListAgencies(Request, frozen=True, kw_only=True):
    session: str
    seq: Seq = 0


class AgencyEntry(msgspec.Struct, frozen=True, kw_only=True):
    agency_id: str
    name: str
    role: Role
    invited: bool  # an invitation the caller has not accepted yet
    administrator: str  # the administrator's account


class AgencyList(Reply, frozen=True, kw_only=True):
    agencies: list[AgencyEntry]


class ViewAgency(Request, frozen=True, kw_only=True):
    session: str
    agency_id: AgencyId
    seq: Seq = 0


class AgencyMember(msgspec.Struct, frozen=True, kw_only=True):
    account: str
    nickname: str
    role: Role
    since: datetime
    invited: bool = False  # invited, not joined yet
    supervises: list[str] = []  # the accounts of the accountants they oversee


class AgencySet(msgspec.Struct, frozen=True, kw_only=True):
    owner: str  # the account whose drive holds it
    set_id: str
    keeper: str  # the account that works on it ("" for nobody, after its keeper left)


class AgencyView(Reply, frozen=True, kw_only=True):
    agency_id: str
    name: str
    supervisors_write: bool
    members: list[AgencyMember]
    sets: list[AgencySet]
