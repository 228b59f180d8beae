"""storage: each member's cloud drive, its quota, and the account-set files on S3.

Subjects:
  evt.storage.drive.<owner_id>.<Event>      quota, reservations, versions (the OCC subject filter)
  evt.storage.audit.<owner_id>.DownloadIssued   audit trail (no OCC)
Requests: storage.<operation>. Files travel over presigned S3 URLs, never over NATS.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec

from contracts.base import CommandReply, Event, Reply, Request
from contracts.client import ServiceClient
from contracts.errors import BadRequest, Conflict, Forbidden, NotFound, Unavailable
from contracts.identity import CommandId, InvalidToken
from contracts.operations import Operation
from contracts.subjects import aggregate_subjects, event_subject
from contracts.text import plain_text

CONTEXT = "storage"
MB = 1024 * 1024

SetId = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
# Names and remarks are shown to other members: no control, bidi or invisible characters.
SetName = Annotated[str, plain_text(min_length=1, max_length=100, blank=False)]
# Version and upload ids are uuids the server made; anything else is refused at decoding.
VersionId = Annotated[str, msgspec.Meta(min_length=1, max_length=64,
                                        pattern=r"^[A-Za-z0-9_-]+$")]
Year = Annotated[int, msgspec.Meta(ge=1900, le=2200)]
Period = Annotated[int, msgspec.Meta(ge=1, le=12)]
Size = Annotated[int, msgspec.Meta(ge=1, le=50 * 1024 * MB)]
Sha256 = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{64}$")]
Remark = Annotated[str, plain_text(max_length=200)]
MemberId = Annotated[str, msgspec.Meta(min_length=1, max_length=64,
                                       pattern=r"^[A-Za-z0-9_-]+$")]
Seq = Annotated[int, msgspec.Meta(ge=0)]  # a log position (consistency), never a credential


# ---- events ---------------------------------------------------------------------------

class StorageEvent(Event, frozen=True, kw_only=True):
    """Base of storage's events."""


class QuotaChanged(StorageEvent, frozen=True, kw_only=True):
    """An operator changed a member's drive quota (bytes)."""

    owner_id: str
    quota: int
    at: datetime
    by: str = "operator"


class UploadReserved(StorageEvent, frozen=True, kw_only=True):
    """Room reserved on the owner's drive for one upload; ``key`` is where its URLs write.

    Events from before immutable blobs may have ``charged`` 0 and the key of a stored blob.
    """

    personal = (("set_name", "owner_id"), ("remark", "uploader_id"))

    owner_id: str
    upload_id: str
    uploader_id: str
    set_id: str
    set_name: str
    year: int
    period: int
    size: int
    sha256: str
    remark: str = ""
    base_version: str | None = None
    key: str
    multipart_id: str | None = None
    part_size: int = 0
    charged: int
    expires_at: datetime
    at: datetime


class BackupUploaded(StorageEvent, frozen=True, kw_only=True):
    """A verified upload became a version of (owner, set, year).

    ``key`` holds exactly the verified bytes: the upload's own copy, or a stored blob of
    the same content it reuses; no URL was ever issued to write it.
    """

    personal = (("set_name", "owner_id"), ("remark", "uploader_id"))

    owner_id: str
    version_id: str
    upload_id: str
    uploader_id: str
    set_id: str
    set_name: str
    year: int
    period: int
    size: int
    sha256: str
    remark: str = ""
    base_version: str | None = None
    conflict_with: str | None = None
    key: str
    at: datetime


class UploadAborted(StorageEvent, frozen=True, kw_only=True):
    """A reservation ended without a version (expired, refused at completion, cancelled)."""

    owner_id: str
    upload_id: str
    reason: str
    at: datetime


class VersionDeleted(StorageEvent, frozen=True, kw_only=True):
    """The owner deleted a version; its bytes are freed once no version uses them
    (``freed``: the bytes this deletion gave back)."""

    owner_id: str
    version_id: str
    by: str
    at: datetime
    freed: int = 0
    key: str = ""  # the object the version used (older events: unknown)


class DownloadIssued(StorageEvent, frozen=True, kw_only=True):
    """A presigned download URL was handed out (audit trail)."""

    owner_id: str
    version_id: str
    set_id: str
    year: int
    by: str
    at: datetime


AnyStorageEvent = (QuotaChanged | UploadReserved | BackupUploaded | UploadAborted
                   | VersionDeleted | DownloadIssued)


def drive_subjects(owner_id: str) -> str:
    return aggregate_subjects(CONTEXT, "drive", owner_id)


def drive_subject(owner_id: str, event: StorageEvent) -> str:
    return event_subject(CONTEXT, "drive", owner_id, type(event).__name__)


def audit_subjects(owner_id: str) -> str:
    return aggregate_subjects(CONTEXT, "audit", owner_id)


def audit_subject(owner_id: str, event: StorageEvent) -> str:
    return event_subject(CONTEXT, "audit", owner_id, type(event).__name__)


def megabytes(n: int) -> str:
    """Bytes as the guide shows them: '2.52 MB'."""
    return f"{n / MB:.2f} MB" if n % MB else f"{n // MB} MB"


# ---- errors ---------------------------------------------------------------------------

class QuotaExceeded(Conflict):
    """The upload does not fit in the drive's quota (400 MB unless set otherwise)."""

    code = "quota_exceeded"


class NoAccess(Forbidden):
    """Not the owner and not shared: the same answer whether the set exists or not."""

    code = "no_access"


class NoSuchVersion(NotFound):
    """No such version in that drive (or not visible to the caller)."""

    code = "no_such_version"


class NoSuchUpload(NotFound):
    """No open upload with that id for the caller."""

    code = "no_such_upload"


class UploadIncomplete(BadRequest):
    """The uploaded file is missing, or not of the declared size; the upload is cancelled."""

    code = "upload_incomplete"


class ChecksumMismatch(BadRequest):
    """The uploaded file's SHA-256 differs from the declared one; the upload is cancelled."""

    code = "checksum_mismatch"


class UploadExpired(Conflict):
    """The upload's reservation expired before it was completed."""

    code = "upload_expired"


class DownloadExpired(Conflict):
    """A repeated download command whose link has expired: a new download is a new
    command (and a new audit entry)."""

    code = "download_expired"


class StorageUnavailable(Unavailable):
    """The file store (S3) did not answer; nothing was changed; try again."""

    code = "storage_unavailable"


# ---- requests and replies ------------------------------------------------------------

class BeginUpload(Request, frozen=True, kw_only=True):
    command_id: CommandId
    session: str
    owner_id: MemberId | None = None
    set_id: SetId
    set_name: SetName
    year: Year
    period: Period
    size: Size
    sha256: Sha256
    remark: Remark = ""
    base_version: VersionId | None = None
    drive_token: str = ""
    seq: Seq = 0


class Part(msgspec.Struct, frozen=True, kw_only=True):
    """One PUT: its URL, which bytes of the file, and headers the PUT must send (the
    signed checksum that makes the URL write only the declared bytes)."""

    number: int
    url: str
    offset: int
    size: int
    headers: dict[str, str] = {}


class UploadPlan(CommandReply, frozen=True, kw_only=True):
    """Where to PUT the bytes: one URL, or one per part.

    ``already_stored`` is always False (kept for clients that read it): every upload sends
    its bytes, because skipping would tell a caller which contents the drive holds, and
    attach them for someone who only knew a hash.
    """

    upload_id: str
    already_stored: bool = False
    parts: list[Part]
    expires_at: datetime
    quota: int
    used: int
    available: int


class CompleteUpload(Request, frozen=True, kw_only=True):
    command_id: CommandId
    session: str
    owner_id: MemberId | None = None
    drive_token: str = ""
    seq: Seq = 0
    upload_id: VersionId


class VersionInfo(msgspec.Struct, frozen=True, kw_only=True):
    version_id: str
    set_id: str
    set_name: str
    year: int
    period: int
    remark: str
    uploader_id: str
    uploaded_at: datetime
    size: int
    sha256: str
    base_version: str | None = None
    conflict_with: str | None = None


class Uploaded(CommandReply, frozen=True, kw_only=True):
    version: VersionInfo


class DriveRequest(Request, frozen=True, kw_only=True):
    session: str
    seq: Seq = 0


class SetYear(msgspec.Struct, frozen=True, kw_only=True):
    set_id: str
    set_name: str
    year: int
    versions: int
    latest: VersionInfo
    size: int


class DriveListing(Reply, frozen=True, kw_only=True):
    quota: int
    used: int
    available: int
    set_years: list[SetYear]


class VersionsRequest(Request, frozen=True, kw_only=True):
    session: str
    owner_id: MemberId | None = None
    set_id: SetId
    year: Year
    drive_token: str = ""
    seq: Seq = 0


class VersionList(Reply, frozen=True, kw_only=True):
    versions: list[VersionInfo]


class DownloadRequest(Request, frozen=True, kw_only=True):
    command_id: CommandId
    session: str
    owner_id: MemberId | None = None
    set_id: SetId
    year: Year
    version_id: VersionId | None = None
    drive_token: str = ""
    seq: Seq = 0


class DownloadTicket(CommandReply, frozen=True, kw_only=True):
    url: str
    expires_at: datetime
    version: VersionInfo


class DeleteVersion(Request, frozen=True, kw_only=True):
    command_id: CommandId
    session: str
    version_id: VersionId


class Deleted(CommandReply, frozen=True, kw_only=True):
    freed: int


class SetQuota(Request, frozen=True, kw_only=True):
    """Operator command (NATS permissions keep it from gateways)."""

    command_id: CommandId
    owner_id: MemberId
    quota: Annotated[int, msgspec.Meta(ge=0, le=1 << 50)]


class QuotaSet(CommandReply, frozen=True, kw_only=True):
    quota: int
    used: int


UPLOAD = (InvalidToken, NoAccess, StorageUnavailable)


class StorageClient(ServiceClient):
    """The storage service's operations."""

    context = CONTEXT
    # An unknown base_version is kept and shows as conflict_with; the room is charged
    # when an upload begins, so completing it never checks the quota again.
    begin_upload = Operation(BeginUpload, UploadPlan, errors=(
        *UPLOAD, QuotaExceeded, NoSuchUpload, UploadExpired))
    complete_upload = Operation(CompleteUpload, Uploaded, errors=(
        *UPLOAD, NoSuchUpload, UploadIncomplete, ChecksumMismatch, UploadExpired))
    drive = Operation(DriveRequest, DriveListing, errors=(InvalidToken,))
    versions = Operation(VersionsRequest, VersionList, errors=(InvalidToken, NoAccess))
    # A link is presigned locally: S3 being down shows only when the link is used.
    download = Operation(DownloadRequest, DownloadTicket, errors=(
        InvalidToken, NoAccess, NoSuchVersion, DownloadExpired))
    delete_version = Operation(DeleteVersion, Deleted, errors=(InvalidToken, NoSuchVersion,
                                                               NoAccess))
    set_quota = Operation(SetQuota, QuotaSet, errors=(InvalidToken,),
                          audience=frozenset({"operators"}))
