"""sharing: grants and revocations, and the one answer to "who may see or write what".

Subjects:
  evt.sharing.share.<share id>.ShareGranted|ShareRevoked   one (owner, account set)
Requests: sharing.<operation>; `sharing.check` is for other services.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

import msgspec

from contracts.agency import AgencyId, NoSuchAgency
from contracts.base import CommandReply, Event, Reply, Request
from contracts.client import ServiceClient
from contracts.errors import BadRequest, NotFound
from contracts.identity import Account, CommandId, InvalidToken
from contracts.operations import Operation
from contracts.storage import MemberId, SetId, VersionInfo, Year
from contracts.subjects import aggregate_subjects, event_subject

CONTEXT = "sharing"
_SHARES = uuid.UUID("3e9d7c51-7a0b-4c22-9a55-2b8f6d0e4c13")
Permission = Literal["read-write", "read-only"]
Access = Literal["read", "write"]
Seq = Annotated[int, msgspec.Meta(ge=0)]  # a log position (consistency), never a credential
# A time without a zone is ambiguous (whose midnight?): refused when decoded.
AwareTime = Annotated[datetime, msgspec.Meta(tz=True)]


class SharingEvent(Event, frozen=True, kw_only=True):
    """Base of sharing's events."""


class ShareGranted(SharingEvent, frozen=True, kw_only=True):
    """``owner_id`` shares ``set_id`` with ``friend_id`` (replacing any earlier grant)."""

    personal = (("set_name", "owner_id"),)

    share_id: str
    owner_id: str
    set_id: str
    set_name: str
    friend_id: str
    # Named "scope" in the log, where events written before the rename keep it.
    permission: Permission = msgspec.field(default="read-write", name="scope")
    years: list[int] | None = None
    expires_at: datetime | None = None
    at: datetime


RevokeReason = Literal["owner", "unfriended"]


class ShareRevoked(SharingEvent, frozen=True, kw_only=True):
    """A share ended: by the owner, or because the two are no longer friends."""

    share_id: str
    owner_id: str
    set_id: str
    friend_id: str
    reason: RevokeReason = "owner"
    at: datetime


AnySharingEvent = ShareGranted | ShareRevoked


def share_id(owner_id: str, set_id: str) -> str:
    """One aggregate per (owner, account set)."""
    return str(uuid.uuid5(_SHARES, f"{owner_id}:{set_id}"))


def share_subjects(sid: str) -> str:
    return aggregate_subjects(CONTEXT, "share", sid)


def share_subject(sid: str, event: SharingEvent) -> str:
    return event_subject(CONTEXT, "share", sid, type(event).__name__)


class NoBackup(BadRequest):
    """The account set has no cloud backup to share yet."""

    code = "no_backup"


class NotAFriend(BadRequest):
    """Shares go to friends only; that member is not a friend."""

    code = "not_a_friend"


class NotShared(NotFound):
    """That account set is not shared with that friend."""

    code = "not_shared"


class Grant(Request, frozen=True, kw_only=True):
    command_id: CommandId
    session: str
    set_id: SetId
    friends: Annotated[list[Account], msgspec.Meta(min_length=1, max_length=100)]
    permission: Permission = "read-write"
    years: Annotated[list[Year], msgspec.Meta(min_length=1, max_length=50)] | None = None
    expires_at: AwareTime | None = None
    seq: Seq = 0


class Revoke(Request, frozen=True, kw_only=True):
    command_id: CommandId
    session: str
    set_id: SetId
    friend: Account | None = None
    seq: Seq = 0


class Changed(CommandReply, frozen=True, kw_only=True):
    friends: list[str]


class Check(Request, frozen=True, kw_only=True):
    member_id: MemberId
    owner_id: MemberId
    set_id: SetId
    year: Year
    access: Access
    seq: Seq = 0


class Verdict(Reply, frozen=True, kw_only=True):
    allowed: bool
    reason: str = ""


class ShareListRequest(Request, frozen=True, kw_only=True):
    session: str
    seq: Seq = 0


class SharedWith(msgspec.Struct, frozen=True, kw_only=True):
    account: str
    nickname: str
    since: datetime
    permission: Permission
    years: list[int] | None = None
    expires_at: datetime | None = None


class SharedSet(msgspec.Struct, frozen=True, kw_only=True):
    set_id: str
    set_name: str
    friends: list[SharedWith]


class ShareList(Reply, frozen=True, kw_only=True):
    sets: list[SharedSet]
    summary: str


class CloudSharesRequest(Request, frozen=True, kw_only=True):
    session: str
    # Cloud Share opens with the cloud-drive password, as in the guide; missing, it is
    # refused like a wrong one (the default only makes the refusal say what to do).
    drive_token: str = ""
    seq: Seq = 0


class ShareYear(msgspec.Struct, frozen=True, kw_only=True):
    year: int
    versions: list[VersionInfo]


class ShareSet(msgspec.Struct, frozen=True, kw_only=True):
    set_id: str
    set_name: str
    permission: Permission
    years: list[ShareYear]


class Sharer(msgspec.Struct, frozen=True, kw_only=True):
    owner_id: str
    account: str
    nickname: str
    sets: list[ShareSet]


class CloudShares(Reply, frozen=True, kw_only=True):
    sharers: list[Sharer]


class HistoryRequest(Request, frozen=True, kw_only=True):
    session: str
    set_id: SetId
    at: AwareTime
    seq: Seq = 0


class Seen(msgspec.Struct, frozen=True, kw_only=True):
    """One way a member could see the set: a friend's share, or through an agency."""

    account: str
    reason: str  # "shared", or "administrator"/"supervisor"/"keeper" + " of <agency name>"


class History(Reply, frozen=True, kw_only=True):
    accounts: list[str]  # everyone who could see it, whichever way
    seen: list[Seen] = msgspec.field(default_factory=list)  # each way each of them could


class AgencySetsRequest(Request, frozen=True, kw_only=True):
    session: str
    agency_id: AgencyId
    drive_token: str = ""  # as Cloud Share: the cloud-drive password's token
    seq: Seq = 0


class AgencyWork(msgspec.Struct, frozen=True, kw_only=True):
    """One agency set the caller may see: whose drive holds it, who keeps it, why the caller
    sees it, and its years with every version (newest first)."""

    owner_id: str
    owner: str  # account
    keeper: str  # account ("" for nobody)
    set_id: str
    set_name: str
    reason: str  # administrator, supervisor or keeper
    permission: Permission
    years: list[ShareYear]


class AgencySets(Reply, frozen=True, kw_only=True):
    """By accountant (keeper), then set, then year."""

    sets: list[AgencyWork]


class SharingClient(ServiceClient):
    """The sharing service's operations."""

    context = CONTEXT
    grant = Operation(Grant, Changed, errors=(InvalidToken, NoBackup, NotAFriend))
    # Anyone the set is not shared with, friend or not, is not_shared.
    revoke = Operation(Revoke, Changed, errors=(InvalidToken, NotShared))
    check = Operation(Check, Verdict, audience=frozenset({"services"}))
    shares = Operation(ShareListRequest, ShareList, errors=(InvalidToken,))
    cloud_shares = Operation(CloudSharesRequest, CloudShares, errors=(InvalidToken,))
    history = Operation(HistoryRequest, History, errors=(InvalidToken,))
    agency_sets = Operation(AgencySetsRequest, AgencySets, errors=(InvalidToken, NoSuchAgency))
