"""sync: one member's account sets on several machines (云同步): devices, leases, versions.

Subjects:
  evt.sync.device.<device id>.DeviceRegistered|DeviceRevoked        one machine of a member
  evt.sync.setyear.<set-year id>.<Event>   one member's synced (set, fiscal year): sync on/off,
                                           its lease, the versions its devices synced
Requests: sync.<operation>. The bytes of a sync upload travel like any backup's (storage's
presigned URLs); the version lands in the member's drive, charged to its quota.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

import msgspec

from contracts.base import CommandReply, Event, Reply, Request
from contracts.client import ServiceClient
from contracts.errors import Conflict, Forbidden, NotFound
from contracts.identity import CommandId, InvalidToken
from contracts.operations import Operation
from contracts.storage import (
    ChecksumMismatch,
    DownloadExpired,
    DownloadTicket,
    NoSuchUpload,
    NoSuchVersion,
    Period,
    QuotaExceeded,
    Remark,
    Seq,
    SetId,
    SetName,
    Sha256,
    Size,
    StorageUnavailable,
    UploadExpired,
    UploadIncomplete,
    UploadPlan,
    VersionId,
    VersionInfo,
    Year,
)
from contracts.subjects import aggregate_subjects, event_subject
from contracts.text import plain_text

CONTEXT = "sync"
_SET_YEARS = uuid.UUID("9b1f3c2e-55d4-4f0a-8e61-7c2d9a4b3e10")

# A device id is a uuid the server made at registration; anything else is refused.
DeviceId = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-"
                                               r"[0-9a-f]{4}-[0-9a-f]{12}$")]
# Shown to the member on their other machines ("in use on 办公室电脑 since 09:12").
DeviceName = Annotated[str, plain_text(min_length=1, max_length=60, blank=False)]
# How long a lease lasts unless renewed: a crashed laptop blocks the others at most this.
LeaseSeconds = Annotated[int, msgspec.Meta(ge=1, le=3600)]


# ---- events ---------------------------------------------------------------------------

class SyncEvent(Event, frozen=True, kw_only=True):
    """Base of sync's events."""


class DeviceRegistered(SyncEvent, frozen=True, kw_only=True):
    """A machine of the desktop program became a device of the member."""

    personal = (("name", "member_id"),)  # sealed with the member's key (erasure)

    device_id: str
    member_id: str
    name: str
    at: datetime


class DeviceRevoked(SyncEvent, frozen=True, kw_only=True):
    """The member revoked a device: its credential stops working at once, everywhere."""

    device_id: str
    member_id: str
    by_device: str | None = None  # the device the member revoked it from, if any
    at: datetime


class SetYearEvent(SyncEvent, frozen=True, kw_only=True):
    """An event of one member's synced (set, year)."""

    set_year_id: str
    member_id: str
    set_id: str
    year: int
    device_id: str  # the device that acted ("": none, the member's erasure)
    at: datetime


class SyncTurnedOn(SetYearEvent, frozen=True, kw_only=True):
    """Sync started for the set-year; ``current`` is the version it starts from."""

    personal = (("set_name", "member_id"),)

    set_name: str
    current: str | None = None
    current_at: datetime | None = None


class SyncTurnedOff(SetYearEvent, frozen=True, kw_only=True):
    """Sync stopped for the set-year (its versions stay in the drive)."""


class LeaseTaken(SetYearEvent, frozen=True, kw_only=True):
    """``device_id`` works on the set-year until ``until`` unless it renews; the others
    open it read-only meanwhile."""

    personal = (("device_name", "member_id"),)

    lease_id: str
    device_name: str
    until: datetime


class LeaseRenewed(SetYearEvent, frozen=True, kw_only=True):
    """The holder renewed its lease, now valid until ``until``."""

    lease_id: str
    until: datetime


class LeaseReleased(SetYearEvent, frozen=True, kw_only=True):
    """The holder released its lease (it synced and closed)."""

    lease_id: str


class LeaseExpired(SetYearEvent, frozen=True, kw_only=True):
    """The holder (``device_id``) stopped renewing: the lease ended at ``until``; ``at``
    is when that was recorded (by the next take, or the sweeper)."""

    lease_id: str
    until: datetime


class LeaseBroken(SetYearEvent, frozen=True, kw_only=True):
    """The member broke the lease ``device_id`` held, from another device (audited)."""

    lease_id: str
    by_device: str


class VersionSynced(SetYearEvent, frozen=True, kw_only=True):
    """A device's upload became version ``version_id`` of the member's drive, based on
    ``base_version``. ``conflict``: the set-year had moved on past that base, so the
    version is kept beside the current one (``current``), which it did not replace."""

    version_id: str
    base_version: str | None = None
    conflict: bool
    current: str
    current_at: datetime


AnySyncEvent = (DeviceRegistered | DeviceRevoked | SyncTurnedOn | SyncTurnedOff | LeaseTaken
                | LeaseRenewed | LeaseReleased | LeaseExpired | LeaseBroken | VersionSynced)


def set_year_id(member_id: str, set_id: str, year: int) -> str:
    """One aggregate per (member, account set, fiscal year): no user text in the subject."""
    return str(uuid.uuid5(_SET_YEARS, f"{member_id}\x1f{set_id}\x1f{year}"))


def device_subjects(device_id: str) -> str:
    return aggregate_subjects(CONTEXT, "device", device_id)


def device_subject(device_id: str, event: SyncEvent) -> str:
    return event_subject(CONTEXT, "device", device_id, type(event).__name__)


def device_revocation(device_id: str) -> str:
    """The one subject whose newest event says a device is revoked (one direct get)."""
    return event_subject(CONTEXT, "device", device_id, DeviceRevoked.__name__)


def device_registration(device_id: str) -> str:
    return event_subject(CONTEXT, "device", device_id, DeviceRegistered.__name__)


def set_year_subjects(sy_id: str) -> str:
    return aggregate_subjects(CONTEXT, "setyear", sy_id)


def set_year_subject(sy_id: str, event: SyncEvent) -> str:
    return event_subject(CONTEXT, "setyear", sy_id, type(event).__name__)


# ---- errors ---------------------------------------------------------------------------

class NoSuchDevice(NotFound):
    """No such device of yours: the same answer whether it exists for someone else or not."""

    code = "no_such_device"


class DeviceRevokedError(Forbidden):
    """That device was revoked: it may do nothing more (register the machine again)."""

    code = "device_revoked"


class SyncOff(Conflict):
    """Sync is not on for that account set and year (turn it on first)."""

    code = "sync_off"


class LeaseHeld(Conflict):
    """Another device holds the set-year's lease; open it read-only, wait, or break it.
    ``details``: holder (device id), holder_name, since, until."""

    code = "lease_held"


class LeaseNotHeld(Conflict):
    """This device does not hold the lease (it expired, was broken, released or taken)."""

    code = "lease_not_held"


class NoLease(NotFound):
    """Nobody holds the set-year's lease: there is nothing to break."""

    code = "no_lease"


# ---- requests and replies ------------------------------------------------------------

class RegisterDevice(Request, frozen=True, kw_only=True):
    command_id: CommandId
    session: str
    name: DeviceName


class DeviceRegisteredReply(CommandReply, frozen=True, kw_only=True):
    device_id: str
    name: str


class RevokeDevice(Request, frozen=True, kw_only=True):
    """Revoke ``device_id`` (from ``by_device``, or from elsewhere with the session)."""

    command_id: CommandId
    session: str
    device_id: DeviceId
    by_device: DeviceId | None = None


class Done(CommandReply, frozen=True, kw_only=True):
    """A command's reply that carries nothing but its seq."""


class DevicesRequest(Request, frozen=True, kw_only=True):
    session: str
    seq: Seq = 0


class DeviceInfo(msgspec.Struct, frozen=True, kw_only=True):
    device_id: str
    name: str
    first_seen: datetime
    last_seen: datetime
    revoked_at: datetime | None = None


class DeviceList(Reply, frozen=True, kw_only=True):
    devices: list[DeviceInfo]


class OnSetYear(Request, frozen=True, kw_only=True):
    """A device acting on one of the member's set-years."""

    command_id: CommandId
    session: str
    device_id: DeviceId
    set_id: SetId
    year: Year


class TurnOn(OnSetYear, frozen=True, kw_only=True):
    set_name: SetName


class SyncChanged(CommandReply, frozen=True, kw_only=True):
    on: bool
    current: str | None = None


class TakeLease(OnSetYear, frozen=True, kw_only=True):
    ttl_s: LeaseSeconds | None = None  # default: the service's setting


class LeaseInfo(msgspec.Struct, frozen=True, kw_only=True):
    lease_id: str
    device_id: str
    device_name: str
    since: datetime
    until: datetime


class LeaseReply(CommandReply, frozen=True, kw_only=True):
    lease: LeaseInfo | None = None  # None: released, broken or expired by this command


class BeginSync(OnSetYear, frozen=True, kw_only=True):
    """A sync upload: a new version of the set-year based on ``base_version``."""

    set_name: SetName
    period: Period
    size: Size
    sha256: Sha256
    remark: Remark = ""
    base_version: VersionId | None = None


class CompleteSync(OnSetYear, frozen=True, kw_only=True):
    upload_id: VersionId


class Synced(CommandReply, frozen=True, kw_only=True):
    """The version made; ``conflict``: kept beside ``current``, which it did not replace."""

    version: VersionInfo
    conflict: bool
    current: str


class Pull(OnSetYear, frozen=True, kw_only=True):
    version_id: VersionId | None = None  # default: the set-year's current version


class StatusRequest(Request, frozen=True, kw_only=True):
    session: str
    seq: Seq = 0


class DeviceVersion(msgspec.Struct, frozen=True, kw_only=True):
    device_id: str
    device_name: str
    version_id: str
    at: datetime


class SetYearStatus(msgspec.Struct, frozen=True, kw_only=True):
    set_id: str
    set_name: str
    year: int
    on: bool
    current: str | None = None
    current_device: str | None = None
    lease: LeaseInfo | None = None  # only a live one
    devices: list[DeviceVersion] = []  # each device's last synced version


class SyncStatus(Reply, frozen=True, kw_only=True):
    set_years: list[SetYearStatus]


DEVICE = (InvalidToken, NoSuchDevice, DeviceRevokedError)


class SyncClient(ServiceClient):
    """The sync service's operations."""

    context = CONTEXT
    register_device = Operation(RegisterDevice, DeviceRegisteredReply, errors=(InvalidToken,))
    revoke_device = Operation(RevokeDevice, Done, errors=DEVICE)
    devices = Operation(DevicesRequest, DeviceList, errors=(InvalidToken,))
    turn_on = Operation(TurnOn, SyncChanged, errors=DEVICE)
    turn_off = Operation(OnSetYear, SyncChanged, errors=(*DEVICE, SyncOff, LeaseHeld))
    take_lease = Operation(TakeLease, LeaseReply, errors=(*DEVICE, SyncOff, LeaseHeld))
    renew_lease = Operation(TakeLease, LeaseReply, errors=(*DEVICE, SyncOff, LeaseNotHeld))
    release_lease = Operation(OnSetYear, LeaseReply, errors=(*DEVICE, SyncOff, LeaseNotHeld))
    break_lease = Operation(OnSetYear, LeaseReply, errors=(*DEVICE, SyncOff, NoLease))
    # Refused while another device holds a live lease (it opened the set-year read-only).
    begin_upload = Operation(BeginSync, UploadPlan, errors=(
        *DEVICE, SyncOff, LeaseHeld, QuotaExceeded, StorageUnavailable, NoSuchUpload,
        UploadExpired))
    complete_upload = Operation(CompleteSync, Synced, errors=(
        *DEVICE, SyncOff, NoSuchUpload, UploadIncomplete, ChecksumMismatch, UploadExpired,
        StorageUnavailable))
    pull = Operation(Pull, DownloadTicket, errors=(
        *DEVICE, SyncOff, NoSuchVersion, DownloadExpired))
    status = Operation(StatusRequest, SyncStatus, errors=(InvalidToken,))
