"""social: friendships between members, and the member directory social keeps itself.

Subjects:
  evt.social.friendship.<pair id>.FriendAdded|FriendRemoved   (pair id: see `pair_id`)
  evt.social.agency.<agency id>.<Type>                       agencies (`contracts.agency`)
Requests: social.<operation>.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

import msgspec

from contracts import agency
from contracts.agency import (
    AgencyChanged,
    AgencyCommand,
    AgencyList,
    AgencyView,
    AnyAgencyEvent,
    ChangeRole,
    ChangeSettings,
    CreateAgency,
    HandOver,
    Invite,
    ListAgencies,
    MarkSet,
    MemberCommand,
    Supervision,
    ViewAgency,
)
from contracts.base import CommandReply, Event, Reply, Request
from contracts.client import ServiceClient
from contracts.errors import BadRequest, Conflict, NotFound
from contracts.identity import Account, CommandId, InvalidToken, Nickname
from contracts.operations import Operation
from contracts.subjects import aggregate_subjects, event_subject

CONTEXT = "social"
_PAIRS = uuid.UUID("0f4a3c9e-31c1-4b8e-8f0e-7d1f9b5c2a61")
Seq = Annotated[int, msgspec.Meta(ge=0)]  # a log position (consistency), never a credential


class SocialEvent(Event, frozen=True, kw_only=True):
    """Base of social's events."""


class FriendAdded(SocialEvent, frozen=True, kw_only=True):
    """``member_id`` added ``friend_id``; friendship is mutual from then on."""

    personal = (("friend_nickname", "friend_id"),)

    friendship_id: str
    member_id: str
    friend_id: str
    friend_nickname: str
    at: datetime


class FriendRemoved(SocialEvent, frozen=True, kw_only=True):
    """``member_id`` ended the friendship with ``friend_id``."""

    friendship_id: str
    member_id: str
    friend_id: str
    at: datetime


FriendshipEvent = FriendAdded | FriendRemoved
AnySocialEvent = FriendAdded | FriendRemoved | AnyAgencyEvent


def pair_id(a: str, b: str) -> str:
    """One id per unordered pair of members."""
    low, high = sorted((a, b))
    return str(uuid.uuid5(_PAIRS, f"{low}:{high}"))


def friendship_subjects(friendship_id: str) -> str:
    return aggregate_subjects(CONTEXT, "friendship", friendship_id)


def friendship_subject(friendship_id: str, event: SocialEvent) -> str:
    return event_subject(CONTEXT, "friendship", friendship_id, type(event).__name__)


class NoSuchMember(NotFound):
    """No member has that account (and nickname)."""

    code = "no_such_member"


class CannotFriendSelf(BadRequest):
    """A member cannot add themself as a friend."""

    code = "cannot_friend_self"


class AlreadyFriends(Conflict):
    """The two members are friends already."""

    code = "already_friends"


class NotFriends(NotFound):
    """The two members are not friends."""

    code = "not_friends"


class AddFriend(Request, frozen=True, kw_only=True):
    command_id: CommandId
    session: str
    account: Account
    nickname: Nickname
    seq: Seq = 0


class RemoveFriend(Request, frozen=True, kw_only=True):
    command_id: CommandId
    session: str
    account: Account
    seq: Seq = 0


class ListFriends(Request, frozen=True, kw_only=True):
    session: str
    seq: Seq = 0


class FriendChanged(CommandReply, frozen=True, kw_only=True):
    friend_id: str
    account: str
    nickname: str


class Friend(msgspec.Struct, frozen=True, kw_only=True):
    member_id: str
    account: str
    nickname: str
    since: datetime


class FriendList(Reply, frozen=True, kw_only=True):
    friends: list[Friend]


# What every administrator's command may answer first.
_ADMIN = (InvalidToken, agency.NoSuchAgency, agency.NotAgencyAdmin)


class SocialClient(ServiceClient):
    """The social service's operations."""

    context = CONTEXT
    add_friend = Operation(AddFriend, FriendChanged, errors=(
        InvalidToken, NoSuchMember, CannotFriendSelf, AlreadyFriends))
    remove_friend = Operation(RemoveFriend, FriendChanged, errors=(
        InvalidToken, NoSuchMember, NotFriends))
    list_friends = Operation(ListFriends, FriendList, errors=(InvalidToken,))
    # Agencies (contracts/agency.py): the administrator's commands, then the members'.
    create_agency = Operation(CreateAgency, AgencyChanged, errors=(InvalidToken,))
    invite_to_agency = Operation(Invite, AgencyChanged, errors=(
        *_ADMIN, NoSuchMember, agency.CannotInviteSelf, agency.AlreadyInAgency))
    remove_from_agency = Operation(MemberCommand, AgencyChanged, errors=(
        *_ADMIN, NoSuchMember, agency.NotInAgency, agency.AdministratorStays))
    change_agency_role = Operation(ChangeRole, AgencyChanged, errors=(
        *_ADMIN, NoSuchMember, agency.NotInAgency, agency.WrongRole))
    assign_supervision = Operation(Supervision, AgencyChanged, errors=(
        *_ADMIN, NoSuchMember, agency.NotInAgency, agency.WrongRole,
        agency.SupervisionExists))
    end_supervision = Operation(Supervision, AgencyChanged, errors=(
        *_ADMIN, NoSuchMember, agency.NoSupervision))
    hand_over = Operation(HandOver, AgencyChanged, errors=(
        *_ADMIN, NoSuchMember, agency.NotInAgency, agency.NotAgencySet, agency.WrongRole))
    agency_settings = Operation(ChangeSettings, AgencyChanged, errors=_ADMIN)
    close_agency = Operation(AgencyCommand, AgencyChanged, errors=_ADMIN)
    accept_invitation = Operation(AgencyCommand, AgencyChanged, errors=(
        InvalidToken, agency.NotInvited))
    leave_agency = Operation(AgencyCommand, AgencyChanged, errors=(
        InvalidToken, agency.NoSuchAgency, agency.AdministratorStays))
    mark_agency_set = Operation(MarkSet, AgencyChanged, errors=(
        InvalidToken, agency.NoSuchAgency, agency.WrongRole, agency.AgencySetTaken))
    unmark_agency_set = Operation(MarkSet, AgencyChanged, errors=(
        InvalidToken, agency.NoSuchAgency, agency.NotAgencySet))
    agencies = Operation(ListAgencies, AgencyList, errors=(InvalidToken,))
    view_agency = Operation(ViewAgency, AgencyView, errors=(InvalidToken, agency.NoSuchAgency))
