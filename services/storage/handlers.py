"""storage's handlers: decode → load → decide → append → reply (and S3 around it)."""

from __future__ import annotations

import math
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Protocol

import msgspec

from contracts.base import Reply
from contracts.identity import InvalidToken
from contracts.storage import (
    AnyStorageEvent,
    BackupUploaded,
    BeginUpload,
    ChecksumMismatch,
    CompleteUpload,
    Deleted,
    DeleteVersion,
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
    StorageEvent,
    Uploaded,
    UploadIncomplete,
    UploadPlan,
    UploadReserved,
    VersionList,
    VersionsRequest,
    audit_scope,
    audit_subject,
    drive_scope,
    drive_subject,
)
from runtime.eventstore import EventStore, Outgoing, with_retry
from runtime.service import Call, Endpoint
from runtime.tokens import Sessions
from services.storage import domain
from services.storage.domain import Drive
from services.storage.objects import ObjectStore

NAMESPACE = uuid.UUID("9d3c1b8e-3f2a-4c5d-8e7f-1a2b3c4d5e6f")
_decoder = msgspec.json.Decoder(AnyStorageEvent)


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
    token: int = 0

    @classmethod
    def of(cls, req: BeginUpload | VersionsRequest | DownloadRequest, access: str) -> Ask:
        return cls(set_id=req.set_id, year=req.year, access=access,
                   drive_token=req.drive_token, token=req.token)


class Gate(Protocol):
    """Who decides whether a non-owner may use a set-year (the sharing service)."""

    async def allows(self, member_id: str, owner_id: str, ask: Ask) -> bool: ...


class OwnersOnly:
    """The gate when no sharing service is wired: nobody but the owner."""

    async def allows(self, member_id: str, owner_id: str, ask: Ask) -> bool:
        return False


class Storage:
    """The storage service's operations."""

    def __init__(self, events: EventStore, objects: ObjectStore, sessions: Sessions,
                 limits: Limits, gate: Gate | None = None) -> None:
        self.events = events
        self.objects = objects
        self.sessions = sessions
        self.verifier = sessions.verifier
        self.limits = limits
        self.gate = gate or OwnersOnly()

    def endpoints(self) -> list[Endpoint]:
        ops: list[tuple[str, type, Callable[..., Awaitable[Reply]]]] = [
            ("begin_upload", BeginUpload, self.begin_upload),
            ("complete_upload", CompleteUpload, self.complete_upload),
            ("drive", DriveRequest, self.drive), ("versions", VersionsRequest, self.versions),
            ("download", DownloadRequest, self.download),
            ("delete_version", DeleteVersion, self.delete_version),
            ("set_quota", SetQuota, self.set_quota),
        ]
        return [Endpoint(name, kind, handler) for name, kind, handler in ops]

    # ---- loading and access -----------------------------------------------------------

    async def _drive(self, owner_id: str) -> tuple[Drive, int]:
        drive, seq = await self.events.state(drive_scope(owner_id), _decoder, domain.evolve,
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
            return owner
        drive = self.verifier.verify(ask.drive_token, kind="drive", now=call.received_at)
        if drive.sub != caller:
            raise InvalidToken("that drive token belongs to another member")
        if not await self.gate.allows(caller, owner, ask):
            raise NoAccess("no such account set, or it is not shared with you")
        return owner

    async def _append(self, owner_id: str, event: StorageEvent, *, expected: int | None,
                      msg_id: str, call: Call, actor: str) -> int:
        out = Outgoing(subject=drive_subject(owner_id, event), event=event)
        return await self.events.append(drive_scope(owner_id), [out], expected=expected,
                                        msg_id=msg_id, meta=call.meta(msg_id, actor))

    # ---- upload -------------------------------------------------------------------------

    async def begin_upload(self, req: BeginUpload, call: Call) -> UploadPlan:
        caller = await self._member(req.session, call)
        owner = await self._access(caller, req.owner_id, Ask.of(req, "write"), call)
        await self.objects.check()
        upload_id = str(uuid.uuid5(NAMESPACE, f"{owner}:{req.command_id}"))
        multipart: list[str | None] = [None]

        async def attempt() -> tuple[UploadReserved, int, Drive]:
            drive, seq = await self._drive(owner)
            if upload_id in drive.reservations:
                return drive.reservations[upload_id], seq, drive
            wanted = self._wanted(req, owner, caller, upload_id, call.received_at)
            reserved = domain.decide_reserve(drive, wanted,
                                             default_quota=self.limits.default_quota)
            assert reserved is not None
            reserved = await self._with_multipart(reserved, multipart)
            seq = await self._append(owner, reserved, expected=seq, msg_id=req.command_id,
                                     call=call, actor=caller)
            return reserved, seq, domain.evolve(drive, reserved)

        try:
            reserved, token, drive = await with_retry(attempt)
        except BaseException:
            if multipart[0] is not None:
                await self.objects.abort_multipart(f"objects/{owner}/{upload_id}", multipart[0])
            raise
        return await self._plan(reserved, drive, token, call.received_at)

    def _wanted(self, req: BeginUpload, owner: str, caller: str, upload_id: str,
                now: datetime) -> UploadReserved:
        return UploadReserved(
            owner_id=owner, upload_id=upload_id, uploader_id=caller, set_id=req.set_id,
            set_name=req.set_name.strip(), year=req.year, period=req.period, size=req.size,
            sha256=req.sha256, remark=req.remark.strip(), base_version=req.base_version,
            key=f"objects/{owner}/{upload_id}", charged=req.size,
            part_size=self.limits.part_size if req.size > self.limits.part_size else 0,
            expires_at=now + self.limits.reservation_ttl, at=now)

    async def _with_multipart(self, reserved: UploadReserved,
                              multipart: list[str | None]) -> UploadReserved:
        if reserved.charged == 0 or not reserved.part_size:
            return msgspec.structs.replace(reserved, part_size=0, multipart_id=None)
        if multipart[0] is None:
            multipart[0] = await self.objects.start_multipart(reserved.key)
        return msgspec.structs.replace(reserved, multipart_id=multipart[0])

    async def _plan(self, reserved: UploadReserved, drive: Drive, token: int,
                    now: datetime) -> UploadPlan:
        stored = domain.already_stored(drive, reserved)
        parts = [] if stored else await self._parts(reserved)
        quota = drive.quota_or(self.limits.default_quota)
        used = drive.used(now)
        return UploadPlan(upload_id=reserved.upload_id, already_stored=stored, parts=parts,
                          expires_at=reserved.expires_at, quota=quota, used=used,
                          available=max(0, quota - used), token=token)

    async def _parts(self, r: UploadReserved) -> list[Part]:
        if r.multipart_id is None:
            return [Part(number=1, url=await self.objects.put_url(r.key), offset=0,
                         size=r.size)]
        count = math.ceil(r.size / r.part_size)
        return [Part(number=n, url=await self.objects.part_url(r.key, r.multipart_id, n),
                     offset=(n - 1) * r.part_size,
                     size=min(r.part_size, r.size - (n - 1) * r.part_size))
                for n in range(1, count + 1)]

    async def complete_upload(self, req: CompleteUpload, call: Call) -> Uploaded:
        caller = await self._member(req.session, call)
        owner = req.owner_id or caller
        drive, seq = await self._drive(owner)
        finished = drive.versions.get(req.upload_id)
        if finished is not None and finished.info.uploader_id == caller:
            # A retry of a completion that landed (its reply was lost): the same answer.
            return Uploaded(version=finished.info, token=seq)
        reservation = self._uploaders(drive, req.upload_id, caller, call.received_at)
        await self._access(caller, owner, Ask(set_id=reservation.set_id, year=reservation.year,
                                              access="write", drive_token=req.drive_token,
                                              token=req.token), call)
        if not domain.already_stored(drive, reservation):
            await self._verify(owner, reservation, call)

        async def attempt() -> tuple[BackupUploaded, int]:
            current, seq = await self._drive(owner)
            open_ = domain.open_reservation(current, reservation.upload_id,
                                            now=call.received_at)
            uploaded = domain.decide_complete(current, open_, at=call.received_at)
            token = await self._append(owner, uploaded, expected=seq, msg_id=req.command_id,
                                       call=call, actor=caller)
            return uploaded, token

        uploaded, token = await with_retry(attempt)
        if uploaded.key != reservation.key:
            # Two uploads of the same content raced: the version uses the first stored
            # copy, so this upload's own object is not needed.
            await self.objects.delete(reservation.key)
        return Uploaded(version=domain.info_of(uploaded), token=token)

    def _uploaders(self, drive: Drive, upload_id: str, caller: str,
                   now: datetime) -> UploadReserved:
        """The open reservation, if the caller began it (nobody completes another's)."""
        found = domain.open_reservation(drive, upload_id, now=now)
        if found.uploader_id != caller:
            raise NoSuchUpload("no such upload in progress (completed, aborted or never "
                               "begun)")
        return found

    async def _verify(self, owner: str, r: UploadReserved, call: Call) -> None:
        """Refuse (and release) an upload whose object is missing, short or altered."""
        if r.multipart_id is not None:
            expected = math.ceil(r.size / r.part_size)
            have = await self.objects.finish_multipart(r.key, r.multipart_id, expected)
            if have != expected:
                raise UploadIncomplete(f"{have} of {expected} parts were uploaded; upload the "
                                       "rest, then complete again")
        size = await self.objects.size_of(r.key)
        if size is None:
            raise UploadIncomplete("nothing was uploaded yet; PUT the file, then complete")
        if size != r.size:
            await self._refuse(owner, r, call, f"size {size} instead of {r.size}")
            raise UploadIncomplete(f"the uploaded file has {size} bytes, not {r.size}; "
                                   "the upload is cancelled")
        if await self.objects.sha256_of(r.key) != r.sha256:
            await self._refuse(owner, r, call, "sha256 mismatch")
            raise ChecksumMismatch("the uploaded file's SHA-256 differs from the declared one;"
                                   " the upload is cancelled")

    async def _refuse(self, owner: str, r: UploadReserved, call: Call, reason: str) -> None:
        await self._abort(owner, r.upload_id, reason, call)
        await self.objects.delete(r.key)

    async def _abort(self, owner: str, upload_id: str, reason: str, call: Call) -> int:
        async def attempt() -> int:
            drive, seq = await self._drive(owner)
            aborted = domain.decide_abort(drive, upload_id, reason=reason, at=call.received_at)
            if aborted is None:
                return seq
            return await self._append(owner, aborted, expected=seq,
                                      msg_id=f"abort-{upload_id}", call=call, actor="storage")

        return await with_retry(attempt)

    async def sweep(self, owner: str, now: datetime, call: Call) -> int:
        """Abort the owner's expired reservations and their S3 leftovers; returns how many."""
        drive, _ = await self._drive(owner)
        stale = domain.expired(drive, now=now)
        for r in stale:
            await self._abort(owner, r.upload_id, "expired", call)
            if r.multipart_id is not None:
                await self.objects.abort_multipart(r.key, r.multipart_id)
            elif r.charged:
                await self.objects.delete(r.key)
        return len(stale)

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
        drive, _ = await self._drive(owner)
        version = domain.pick_version(drive, req.set_id, req.year, req.version_id)
        info = version.info
        url = await self.objects.get_url(version.key, f"{info.set_name}-{info.year}.bak")
        issued = DownloadIssued(owner_id=owner, version_id=info.version_id, set_id=info.set_id,
                                year=info.year, by=caller, at=call.received_at)
        token = await self.events.append(
            audit_scope(owner), [Outgoing(subject=audit_subject(owner, issued), event=issued)],
            expected=None, msg_id=req.command_id, meta=call.meta(req.command_id, caller))
        expires = call.received_at + timedelta(seconds=self.objects.url_ttl_s)
        return DownloadTicket(url=url, expires_at=expires, version=info, token=token)

    # ---- owner and operator -------------------------------------------------------------

    async def delete_version(self, req: DeleteVersion, call: Call) -> Deleted:
        owner = await self._member(req.session, call)

        async def attempt() -> tuple[int, int, str | None]:
            drive, seq = await self._drive(owner)
            deleted, orphan = domain.decide_delete(drive, req.version_id, by=owner,
                                                   at=call.received_at)
            freed = domain.freed_by(drive, req.version_id)
            token = await self._append(owner, deleted, expected=seq, msg_id=req.command_id,
                                       call=call, actor=owner)
            return token, freed, orphan

        token, freed, orphan = await with_retry(attempt)
        if orphan is not None:
            await self.objects.delete(orphan)
        return Deleted(freed=freed, token=token)

    async def set_quota(self, req: SetQuota, call: Call) -> QuotaSet:
        async def attempt() -> QuotaSet:
            drive, seq = await self._drive(req.owner_id)
            changed = QuotaChanged(owner_id=req.owner_id, quota=req.quota, at=call.received_at)
            token = await self._append(req.owner_id, changed, expected=seq,
                                       msg_id=req.command_id, call=call, actor="operator")
            return QuotaSet(quota=req.quota, used=drive.used(call.received_at), token=token)

        return await with_retry(attempt)

