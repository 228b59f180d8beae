"""storage's handlers: decode → load → decide → append → reply (and S3 around it)."""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from functools import partial
from typing import Any, Protocol, TypeVar

import msgspec

from contracts.errors import LedgerError
from contracts.identity import InvalidToken
from contracts.storage import (
    AnyStorageEvent,
    BackupUploaded,
    BeginUpload,
    ChecksumMismatch,
    CompleteUpload,
    Deleted,
    DeleteVersion,
    DownloadExpired,
    DownloadIssued,
    DownloadRequest,
    DownloadTicket,
    DriveListing,
    DriveRequest,
    NoAccess,
    NoSuchUpload,
    Part,
    QuotaChanged,
    QuotaSet,
    SetQuota,
    SetYear,
    StorageClient,
    StorageEvent,
    StorageUnavailable,
    UploadAborted,
    Uploaded,
    UploadIncomplete,
    UploadPlan,
    UploadReserved,
    VersionDeleted,
    VersionList,
    VersionsRequest,
    audit_subject,
    audit_subjects,
    drive_subject,
    drive_subjects,
)
from runtime.commands import Command, Decision, Fold, Pipeline, Step
from runtime.eventstore import EventStore, Outgoing
from runtime.service import Call, Endpoint
from runtime.tokens import Sessions
from services.storage import domain
from services.storage.domain import Drive
from services.storage.objects import ObjectStore, staging_key

_decoder = msgspec.json.Decoder(AnyStorageEvent)
R = TypeVar("R")
log = logging.getLogger("ledgershare.storage")


class Limits(msgspec.Struct, frozen=True, kw_only=True):
    """Quota and upload shape from settings."""

    default_quota: int
    part_size: int
    reservation_ttl: timedelta


class Ask(msgspec.Struct, frozen=True, kw_only=True):
    """What a non-owner asks to do with one set-year."""

    set_id: str
    year: int
    access: str
    drive_token: str = ""
    seq: int = 0

    @classmethod
    def of(cls, req: BeginUpload | VersionsRequest | DownloadRequest, access: str) -> Ask:
        return cls(set_id=req.set_id, year=req.year, access=access,
                   drive_token=req.drive_token, seq=req.seq)


class Gate(Protocol):
    """Who decides whether a member may use a set-year (the sharing service): a non-owner
    through a share or an agency, an owner unless an agency handed the set over."""

    async def allows(self, member_id: str, owner_id: str, ask: Ask) -> bool: ...

    async def owner_allows(self, owner_id: str, ask: Ask) -> bool: ...


class OwnersOnly:
    """The gate when no sharing service is wired: nobody but the owner."""

    async def allows(self, member_id: str, owner_id: str, ask: Ask) -> bool:
        return False

    async def owner_allows(self, owner_id: str, ask: Ask) -> bool:
        return True


DRIVE_FOLD: Fold[Drive, StorageEvent] = Fold(_decoder, domain.evolve, Drive())
AUDIT_FOLD: Fold[None, StorageEvent] = Fold(_decoder, lambda state, _event: state, None)


def _refusal(aborted: UploadAborted) -> LedgerError:
    """What an upload refused at completion answers (again, to a repeat)."""
    if aborted.reason.startswith("sha256"):
        return ChecksumMismatch("the uploaded file's SHA-256 differs from the declared one; "
                                "the upload is cancelled")
    return UploadIncomplete(f"the uploaded file has {aborted.reason}; the upload is cancelled")


class Storage:
    """The storage service's operations."""

    def __init__(self, events: EventStore, commands: Pipeline, objects: ObjectStore,
                 sessions: Sessions, limits: Limits, gate: Gate | None = None) -> None:
        self.events = events
        self.commands = commands
        self.objects = objects
        self.sessions = sessions
        self.verifier = sessions.verifier
        self.limits = limits
        self.gate = gate or OwnersOnly()

    def endpoints(self) -> list[Endpoint[Any, Any]]:
        """Every operation of the service, each with its handler."""
        return [
                Endpoint(StorageClient.begin_upload, self.begin_upload),
                Endpoint(StorageClient.complete_upload, self.complete_upload),
                Endpoint(StorageClient.drive, self.drive),
                Endpoint(StorageClient.versions, self.versions),
                Endpoint(StorageClient.download, self.download),
                Endpoint(StorageClient.delete_version, self.delete_version),
                Endpoint(StorageClient.set_quota, self.set_quota),
        ]

    # ---- loading and access -----------------------------------------------------------

    async def _drive(self, owner_id: str) -> tuple[Drive, int]:
        drive, seq = await self.events.state(drive_subjects(owner_id), _decoder, domain.evolve,
                                             domain.Drive())
        if not drive.owner_id:
            drive = msgspec.structs.replace(drive, owner_id=owner_id)
        return drive, seq

    async def _member(self, session: str, call: Call) -> str:
        return await self.sessions.member(session, now=call.received_at)

    async def _access(self, caller: str, owner_id: str | None, ask: Ask, call: Call) -> str:
        """The drive to use: the caller's own, or an owner's whom sharing says allows it.

        A sharee also needs the drive token (the cloud-drive password). The refusal is the
        same whether the set does not exist or is not shared.
        """
        owner = owner_id or caller
        if owner == caller:
            await self._owner(owner, ask)
            return owner
        drive = await self.sessions.drive(ask.drive_token, now=call.received_at)
        if drive.sub != caller:
            raise InvalidToken("that drive token belongs to another member")
        if not await self.gate.allows(caller, owner, ask):
            raise NoAccess("no such account set, or it is not shared with you")
        return owner

    async def _owner(self, owner: str, ask: Ask) -> None:
        if not await self.gate.owner_allows(owner, ask):
            raise NoAccess("that account set was handed over to another accountant of your "
                           "agency; it is theirs to work on now")

    async def _on_drive(self, cmd: Command, owner: str, decide: Callable[[Drive], Decision]
                        ) -> Step[Drive, StorageEvent]:
        return await self.commands.step(cmd, drive_subjects(owner), DRIVE_FOLD, decide,
                                        load=lambda: self._drive(owner))

    async def _run(self, operation: str, req: Any, call: Call, caller: str,
                   body: Callable[[Command], Awaitable[R]]) -> R:
        return await self.commands.run(operation, req, caller=caller,
                                       correlation_id=call.correlation_id,
                                       client_address=call.client_address, body=body)

    # ---- upload -------------------------------------------------------------------------

    async def begin_upload(self, req: BeginUpload, call: Call) -> UploadPlan:
        caller = await self._member(req.session, call)
        owner = await self._access(caller, req.owner_id, Ask.of(req, "write"), call)
        await self.objects.check()
        started: list[UploadReserved] = []  # a multipart upload this run started

        async def decide(drive: Drive) -> list[Outgoing]:
            # Random, never derived from the caller's command id: a replayed id answers
            # the reservation it made, and never leads to another upload's key.
            upload_id = started[0].upload_id if started else str(uuid.uuid4())
            wanted = self._wanted(req, owner, caller, upload_id, call.received_at)
            reserved = await self._with_multipart(domain.decide_reserve(
                drive, wanted, default_quota=self.limits.default_quota), started)
            return [Outgoing(subject=drive_subject(owner, reserved), event=reserved)]

        async def body(cmd: Command) -> UploadPlan:
            try:
                step = await self._on_drive(cmd, owner, decide)
            except BaseException:
                for r in started:
                    await self.objects.abort_multipart(r.key, r.multipart_id or "")
                raise
            return await self._plan(step, call.received_at)

        return await self._run("begin_upload", req, call, caller, body)

    def _wanted(self, req: BeginUpload, owner: str, caller: str, upload_id: str,
                now: datetime) -> UploadReserved:
        return UploadReserved(
            owner_id=owner, upload_id=upload_id, uploader_id=caller, set_id=req.set_id,
            set_name=req.set_name.strip(), year=req.year, period=req.period, size=req.size,
            sha256=req.sha256, remark=req.remark.strip(), base_version=req.base_version,
            key=staging_key(owner, upload_id), charged=req.size,
            part_size=self.limits.part_size if req.size > self.limits.part_size else 0,
            expires_at=now + self.limits.reservation_ttl, at=now)

    async def _with_multipart(self, reserved: UploadReserved,
                              started: list[UploadReserved]) -> UploadReserved:
        if not reserved.part_size:
            return msgspec.structs.replace(reserved, multipart_id=None)
        if not started:
            started.append(msgspec.structs.replace(
                reserved, multipart_id=await self.objects.start_multipart(reserved.key)))
        return msgspec.structs.replace(reserved, multipart_id=started[0].multipart_id)

    async def _plan(self, step: Step[Drive, StorageEvent], now: datetime) -> UploadPlan:
        reserved = step.events[0]
        assert isinstance(reserved, UploadReserved)
        # A repeat presigns again only while the upload is open: never after it ended.
        domain.open_reservation(step.state, reserved.upload_id, now=now)
        quota = step.state.quota_or(self.limits.default_quota)
        used = step.state.used(now)
        return UploadPlan(upload_id=reserved.upload_id, parts=await self._parts(reserved),
                          expires_at=reserved.expires_at, quota=quota, used=used,
                          available=max(0, quota - used), seq=step.seq)

    async def _parts(self, r: UploadReserved) -> list[Part]:
        if r.multipart_id is None:
            url, headers = await self.objects.put_url(r.key, r.size, r.sha256)
            return [Part(number=1, url=url, offset=0, size=r.size, headers=headers)]
        count = math.ceil(r.size / r.part_size)
        return [Part(number=n, url=await self.objects.part_url(r.key, r.multipart_id, n),
                     offset=(n - 1) * r.part_size,
                     size=min(r.part_size, r.size - (n - 1) * r.part_size))
                for n in range(1, count + 1)]

    async def complete_upload(self, req: CompleteUpload, call: Call) -> Uploaded:
        caller = await self._member(req.session, call)
        owner = req.owner_id or caller
        checked: list[UploadReserved] = []  # verified once per run, whatever the retries

        async def decide(drive: Drive) -> list[Outgoing]:
            if _completed_by(drive, req.upload_id, caller):
                return []  # completed under another command id (a client's own retry)
            reservation = self._uploaders(drive, req.upload_id, caller, call.received_at)
            await self._access(caller, owner, Ask(
                set_id=reservation.set_id, year=reservation.year, access="write",
                drive_token=req.drive_token, seq=req.seq), call)
            if not checked:
                refused = await self._verify(reservation, call.received_at)
                if refused is not None:
                    return [Outgoing(subject=drive_subject(owner, refused), event=refused)]
                checked.append(reservation)
            done = domain.decide_complete(drive, reservation, at=call.received_at)
            return [Outgoing(subject=drive_subject(owner, done), event=done)]

        async def body(cmd: Command) -> Uploaded:
            return await self._completed(owner, await self._on_drive(cmd, owner, decide),
                                         req.upload_id)

        return await self._run("complete_upload", req, call, caller, body)

    async def _completed(self, owner: str, step: Step[Drive, StorageEvent],
                         upload_id: str) -> Uploaded:
        """The answer to a completion: the version, or the refusal (its object gone)."""
        match step.events:
            case [UploadAborted() as aborted]:
                await self._discard(owner, staging_key(owner, upload_id))
                raise _refusal(aborted)
            case [BackupUploaded() as uploaded] if uploaded.key != staging_key(owner,
                                                                               upload_id):
                # Its bytes equal a stored blob the version uses instead.
                await self._discard(owner, staging_key(owner, upload_id))
        return Uploaded(version=step.state.versions[upload_id].info, seq=step.seq)

    def _uploaders(self, drive: Drive, upload_id: str, caller: str,
                   now: datetime) -> UploadReserved:
        """The open reservation, if the caller began it (nobody completes another's)."""
        found = domain.open_reservation(drive, upload_id, now=now)
        if found.uploader_id != caller:
            raise NoSuchUpload("no such upload in progress (completed, aborted or never "
                               "begun)")
        return found

    async def _verify(self, r: UploadReserved, now: datetime) -> UploadAborted | None:
        """None when the object holds exactly the declared bytes; the abort when it holds
        others. Nothing uploaded yet (or parts missing) is an error that changes nothing.
        A multipart upload is completed first: its part URLs then stop writing."""
        if r.multipart_id is not None:
            expected = math.ceil(r.size / r.part_size)
            have = await self.objects.finish_multipart(r.key, r.multipart_id, expected)
            if have != expected:
                raise UploadIncomplete(f"{have} of {expected} parts were uploaded; upload the "
                                       "rest, then complete again")
        size = await self.objects.size_of(r.key)
        if size is None:
            raise UploadIncomplete("nothing was uploaded yet; PUT the file, then complete")
        reason = (f"{size} bytes, not {r.size}" if size != r.size else
                  "sha256 mismatch" if await self.objects.sha256_of(r.key) != r.sha256 else None)
        return None if reason is None else UploadAborted(
            owner_id=r.owner_id, upload_id=r.upload_id, reason=reason, at=now)

    async def _discard(self, owner: str, key: str) -> None:
        """Delete an object unless a version uses it (read from the log, now)."""
        drive, _ = await self._drive(owner)
        if not domain.referenced(drive, key):
            await self.objects.delete(key)

    async def sweep(self, owner: str, now: datetime, call: Call) -> int:
        """Abort the owner's expired reservations and their S3 leftovers; returns how many."""
        drive, _ = await self._drive(owner)
        stale = domain.expired(drive, now=now)
        for r in stale:
            cmd = self.commands.internal(f"expire-{r.upload_id}",
                                         correlation_id=call.correlation_id, actor="storage")
            await self._on_drive(cmd, owner, partial(self._expire, owner, r.upload_id, now))
            if r.multipart_id is not None:
                await self.objects.abort_multipart(r.key, r.multipart_id)
            await self._discard(owner, r.key)
        return len(stale)

    def _expire(self, owner: str, upload_id: str, now: datetime, drive: Drive
                ) -> list[Outgoing]:
        aborted = domain.decide_abort(drive, upload_id, reason="expired", at=now)
        return [] if aborted is None else [
            Outgoing(subject=drive_subject(owner, aborted), event=aborted)]

    async def empty(self, owner: str, at: datetime, correlation_id: str) -> None:
        """An erased member's drive emptied: each version deleted and each open upload
        aborted in the log, then their objects removed (S3 failing raises: the erasure
        policy tries again). A repeat finds them gone and does nothing more."""
        drive, _ = await self._drive(owner)
        for vid in sorted(drive.versions):
            cmd = self.commands.internal(f"erase-{vid}", correlation_id=correlation_id,
                                         actor=owner)
            await self._on_drive(cmd, owner, partial(self._erase_version, vid, at))
        for r in drive.reservations.values():
            cmd = self.commands.internal(f"erase-{r.upload_id}", correlation_id=correlation_id,
                                         actor=owner)
            await self._on_drive(cmd, owner, partial(self._erase_upload, r.upload_id, at))
            if r.multipart_id is not None:
                await self.objects.abort_multipart(r.key, r.multipart_id)
        for key in {*(v.key for v in drive.versions.values()),
                    *(r.key for r in drive.reservations.values())}:
            await self._discard(owner, key)

    @staticmethod
    def _erase_version(version_id: str, at: datetime, drive: Drive) -> list[Outgoing]:
        if version_id not in drive.versions:
            return []
        deleted, _ = domain.decide_delete(drive, version_id, by=drive.owner_id, at=at)
        return [Outgoing(subject=drive_subject(drive.owner_id, deleted), event=deleted)]

    @staticmethod
    def _erase_upload(upload_id: str, at: datetime, drive: Drive) -> list[Outgoing]:
        aborted = domain.decide_abort(drive, upload_id, reason="erased", at=at)
        return [] if aborted is None else [
            Outgoing(subject=drive_subject(drive.owner_id, aborted), event=aborted)]

    # ---- reading ------------------------------------------------------------------------

    async def drive(self, req: DriveRequest, call: Call) -> DriveListing:
        owner = await self._member(req.session, call)
        drive, _ = await self._drive(owner)
        quota = drive.quota_or(self.limits.default_quota)
        used = drive.used(call.received_at)
        slots = sorted(drive.latest.items(), key=lambda kv: (kv[0][0], kv[0][1]))
        return DriveListing(quota=quota, used=used, available=max(0, quota - used),
                            set_years=[self._set_year(drive, s, y, v) for (s, y), v in slots])

    def _set_year(self, drive: Drive, set_id: str, year: int, latest: str) -> SetYear:
        versions = drive.versions_of(set_id, year)
        info = drive.versions[latest].info
        return SetYear(set_id=set_id, set_name=info.set_name, year=year,
                       versions=len(versions), latest=info, size=sum(v.size for v in versions))

    async def versions(self, req: VersionsRequest, call: Call) -> VersionList:
        owner = await self._access(await self._member(req.session, call), req.owner_id,
                                   Ask.of(req, "read"), call)
        drive, _ = await self._drive(owner)
        return VersionList(versions=drive.versions_of(req.set_id, req.year))

    async def download(self, req: DownloadRequest, call: Call) -> DownloadTicket:
        caller = await self._member(req.session, call)
        owner = await self._access(caller, req.owner_id, Ask.of(req, "read"), call)

        async def decide(_: None) -> list[Outgoing]:
            drive, _seq = await self._drive(owner)
            info = domain.pick_version(drive, req.set_id, req.year, req.version_id).info
            issued = DownloadIssued(owner_id=owner, version_id=info.version_id,
                                    set_id=info.set_id, year=info.year, by=caller,
                                    at=call.received_at)
            return [Outgoing(subject=audit_subject(owner, issued), event=issued)]

        async def body(cmd: Command) -> DownloadTicket:
            step = await self.commands.step(cmd, audit_subjects(owner), AUDIT_FOLD, decide,
                                            load=lambda: self._audit_last(owner))
            issued = step.events[0]
            assert isinstance(issued, DownloadIssued)
            return await self._ticket(owner, issued, step.seq, call.received_at)

        return await self._run("download", req, call, caller, body)

    async def _audit_last(self, owner: str) -> tuple[None, int]:
        # The audit trail is never folded: an append needs only its last sequence.
        return None, await self.events.expected_last(audit_subjects(owner))

    async def _ticket(self, owner: str, issued: DownloadIssued, seq: int,
                      now: datetime) -> DownloadTicket:
        """The link of an audited download, valid until the download's own expiry (a
        repeat gets no longer a link than the first answer)."""
        expires = issued.at + timedelta(seconds=self.objects.url_ttl_s)
        left = math.floor((expires - now).total_seconds())
        if left <= 0:
            raise DownloadExpired("that download link has expired; ask for the download "
                                  "again with a new command id")
        drive, _ = await self._drive(owner)
        version = domain.pick_version(drive, issued.set_id, issued.year, issued.version_id)
        url = await self.objects.get_url(
            version.key, f"{version.info.set_name}-{version.info.year}.bak", ttl_s=left)
        return DownloadTicket(url=url, expires_at=expires, version=version.info, seq=seq)

    # ---- owner and operator -------------------------------------------------------------

    async def delete_version(self, req: DeleteVersion, call: Call) -> Deleted:
        """Delete a version (the log decides), then its bytes if no version uses them.
        The bytes going is not part of the answer: with S3 unreachable the version is
        deleted all the same and its object is removed by a repeat of the command (or
        stays, unreferenced, until then: logged)."""
        owner = await self._member(req.session, call)

        async def decide(drive: Drive) -> list[Outgoing]:
            deleted, _ = domain.decide_delete(drive, req.version_id, by=owner,
                                              at=call.received_at)
            info = drive.versions[req.version_id].info
            await self._owner(owner, Ask(set_id=info.set_id, year=info.year, access="write",
                                         drive_token="", seq=0))
            return [Outgoing(subject=drive_subject(owner, deleted), event=deleted)]

        async def body(cmd: Command) -> Deleted:
            step = await self._on_drive(cmd, owner, decide)
            deleted = step.events[0]
            assert isinstance(deleted, VersionDeleted)
            if deleted.key:
                await self._discard_later(owner, deleted.key)
            return Deleted(freed=deleted.freed, seq=step.seq)

        return await self._run("delete_version", req, call, owner, body)

    async def _discard_later(self, owner: str, key: str) -> None:
        try:
            await self._discard(owner, key)
        except StorageUnavailable as err:
            log.warning("a deleted version's object %s stays until the delete is repeated: %s",
                        key, err.message)

    async def set_quota(self, req: SetQuota, call: Call) -> QuotaSet:
        def decide(drive: Drive) -> list[Outgoing]:
            changed = QuotaChanged(owner_id=req.owner_id, quota=req.quota, at=call.received_at)
            return [Outgoing(subject=drive_subject(req.owner_id, changed), event=changed)]

        async def body(cmd: Command) -> QuotaSet:
            step = await self._on_drive(cmd, req.owner_id, decide)
            return QuotaSet(quota=req.quota, used=step.state.used(call.received_at),
                            seq=step.seq)

        return await self._run("set_quota", req, call, "operator", body)


def _completed_by(drive: Drive, upload_id: str, caller: str) -> bool:
    version = drive.versions.get(upload_id)
    return version is not None and version.info.uploader_id == caller
