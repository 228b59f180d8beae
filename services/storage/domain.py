"""storage's domain: one member's drive (quota, reservations, versions, stored blobs). Pure.

Quota counts each stored blob once (however many versions use it) plus the charge of
every reservation not yet expired; an expired reservation stops counting at its expiry
time, before any sweeper runs. Every upload is charged its size and sends its bytes; only
after they were verified may the version reuse a stored blob of the same content, and
then the charge goes back.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import msgspec

from contracts.storage import (
    BackupUploaded,
    NoSuchUpload,
    NoSuchVersion,
    QuotaChanged,
    QuotaExceeded,
    StorageEvent,
    UploadAborted,
    UploadExpired,
    UploadReserved,
    VersionDeleted,
    VersionInfo,
    megabytes,
)


class Blob(msgspec.Struct, frozen=True, kw_only=True):
    """One stored object: its key, content, size and the versions that use it."""

    key: str
    sha256: str
    size: int
    refs: frozenset[str] = frozenset()


class Version(msgspec.Struct, frozen=True, kw_only=True):
    info: VersionInfo
    key: str


class Drive(msgspec.Struct, frozen=True, kw_only=True):
    """One member's drive as folded from its events (blobs by object key)."""

    owner_id: str = ""
    quota: int | None = None
    blobs: dict[str, Blob] = {}
    reservations: dict[str, UploadReserved] = {}
    versions: dict[str, Version] = {}
    latest: dict[tuple[str, int], str] = {}

    def quota_or(self, default: int) -> int:
        return default if self.quota is None else self.quota

    def used(self, now: datetime) -> int:
        stored = sum(b.size for b in self.blobs.values() if b.refs)
        held = sum(r.charged for r in self.reservations.values() if r.expires_at > now)
        return stored + held

    def versions_of(self, set_id: str, year: int) -> list[VersionInfo]:
        """Versions of one set-year, newest first."""
        found = [v.info for v in self.versions.values()
                 if (v.info.set_id, v.info.year) == (set_id, year)]
        return sorted(found, key=lambda v: v.uploaded_at, reverse=True)


# ---- evolve ---------------------------------------------------------------------------

def evolve(drive: Drive, event: StorageEvent) -> Drive:
    """The drive after one more event."""
    r = msgspec.structs.replace
    match event:
        case QuotaChanged(owner_id=owner, quota=quota):
            return r(drive, owner_id=owner, quota=quota)
        case UploadReserved(upload_id=uid):
            return r(drive, owner_id=event.owner_id,
                     reservations={**drive.reservations, uid: event})
        case BackupUploaded():
            return _uploaded(drive, event)
        case UploadAborted(upload_id=uid):
            return r(drive, reservations=_without(drive.reservations, uid))
        case VersionDeleted(version_id=vid):
            return _deleted(drive, vid)
    return drive


def _without(mapping: dict[str, UploadReserved], key: str) -> dict[str, UploadReserved]:
    return {k: v for k, v in mapping.items() if k != key}


def _uploaded(drive: Drive, e: BackupUploaded) -> Drive:
    old = drive.blobs.get(e.key)
    blob = Blob(key=e.key, sha256=e.sha256, size=e.size,
                refs=(old.refs if old else frozenset()) | {e.version_id})
    version = Version(info=info_of(e), key=e.key)
    return msgspec.structs.replace(
        drive, owner_id=e.owner_id, reservations=_without(drive.reservations, e.upload_id),
        blobs={**drive.blobs, e.key: blob},
        versions={**drive.versions, e.version_id: version},
        latest={**drive.latest, (e.set_id, e.year): e.version_id})


def _deleted(drive: Drive, version_id: str) -> Drive:
    gone = drive.versions[version_id]
    versions = {k: v for k, v in drive.versions.items() if k != version_id}
    blobs = dict(drive.blobs)
    blob = blobs[gone.key]
    refs = blob.refs - {version_id}
    if refs:
        blobs[gone.key] = msgspec.structs.replace(blob, refs=refs)
    else:
        del blobs[gone.key]
    latest = dict(drive.latest)
    slot = (gone.info.set_id, gone.info.year)
    rest = sorted((v.info for v in versions.values() if (v.info.set_id, v.info.year) == slot),
                  key=lambda v: v.uploaded_at)
    if rest:
        latest[slot] = rest[-1].version_id
    else:
        latest.pop(slot, None)
    return msgspec.structs.replace(drive, versions=versions, blobs=blobs, latest=latest)


def fold(events: Iterable[StorageEvent]) -> Drive:
    drive = Drive()
    for event in events:
        drive = evolve(drive, event)
    return drive


def info_of(e: BackupUploaded) -> VersionInfo:
    return VersionInfo(version_id=e.version_id, set_id=e.set_id, set_name=e.set_name,
                       year=e.year, period=e.period, remark=e.remark,
                       uploader_id=e.uploader_id, uploaded_at=e.at, size=e.size,
                       sha256=e.sha256, base_version=e.base_version,
                       conflict_with=e.conflict_with)


# ---- decide ---------------------------------------------------------------------------

def decide_reserve(drive: Drive, wanted: UploadReserved, *, default_quota: int
                   ) -> UploadReserved:
    """Reserve room for an upload (a repeat of the command finds its reservation in the
    log and does not come here).

    The full size is charged even if the drive holds the same content: the bytes come
    again (they occupy staging until verified), and a free reservation would tell the
    caller what the drive holds.
    """
    quota = drive.quota_or(default_quota)
    available = max(0, quota - drive.used(wanted.at))
    if wanted.size > available:
        raise QuotaExceeded(
            f"needs {megabytes(wanted.size)}, {megabytes(available)} available of "
            f"{megabytes(quota)}",
            details={"needed": str(wanted.size), "available": str(available),
                     "quota": str(quota)})
    return msgspec.structs.replace(wanted, charged=wanted.size)


def open_reservation(drive: Drive, upload_id: str, *, now: datetime) -> UploadReserved:
    """The reservation to complete, if it exists and has not expired."""
    found = drive.reservations.get(upload_id)
    if found is None:
        raise NoSuchUpload("no such upload in progress (completed, aborted or never begun)")
    if found.expires_at <= now:
        raise UploadExpired("the upload's reservation has expired; begin again")
    return found


def reusable(drive: Drive, r: UploadReserved) -> Blob | None:
    """A stored blob with the upload's (verified) content that the uploader may already
    read: any in the drive for its owner; for a sharee only one that a version of the same
    set-year uses, since reusing another would tell them what else the owner keeps."""
    for blob in drive.blobs.values():
        if blob.sha256 == r.sha256 and blob.refs and _readable(drive, blob, r):
            return blob
    return None


def _readable(drive: Drive, blob: Blob, r: UploadReserved) -> bool:
    if r.uploader_id == r.owner_id:
        return True
    slots = {(drive.versions[v].info.set_id, drive.versions[v].info.year) for v in blob.refs}
    return (r.set_id, r.year) in slots


def referenced(drive: Drive, key: str) -> bool:
    """True while a version uses the object (it must not be deleted)."""
    blob = drive.blobs.get(key)
    return blob is not None and bool(blob.refs)


def decide_complete(drive: Drive, reservation: UploadReserved, *, at: datetime
                    ) -> BackupUploaded:
    """The version a verified upload becomes (its bytes verified at the reservation's
    key), reusing a stored blob of the same content where allowed; a conflict if its base
    is not the latest."""
    latest = drive.latest.get((reservation.set_id, reservation.year))
    conflict = latest if latest is not None and latest != reservation.base_version else None
    blob = reusable(drive, reservation)
    key = blob.key if blob is not None else reservation.key
    return BackupUploaded(
        owner_id=reservation.owner_id, version_id=reservation.upload_id,
        upload_id=reservation.upload_id, uploader_id=reservation.uploader_id,
        set_id=reservation.set_id, set_name=reservation.set_name, year=reservation.year,
        period=reservation.period, size=reservation.size, sha256=reservation.sha256,
        remark=reservation.remark, base_version=reservation.base_version,
        conflict_with=conflict, key=key, at=at)


def decide_abort(drive: Drive, upload_id: str, *, reason: str, at: datetime
                 ) -> UploadAborted | None:
    """End a reservation; None if it is already gone."""
    found = drive.reservations.get(upload_id)
    if found is None:
        return None
    return UploadAborted(owner_id=found.owner_id, upload_id=upload_id, reason=reason, at=at)


def expired(drive: Drive, *, now: datetime) -> list[UploadReserved]:
    """Reservations past their expiry, still open."""
    return [r for r in drive.reservations.values() if r.expires_at <= now]


def decide_delete(drive: Drive, version_id: str, *, by: str, at: datetime
                  ) -> tuple[VersionDeleted, str | None]:
    """Delete a version; also the object key to remove if no other version uses it."""
    version = drive.versions.get(version_id)
    if version is None:
        raise NoSuchVersion("no such version in your drive")
    orphan = version.key if drive.blobs[version.key].refs == {version_id} else None
    return VersionDeleted(owner_id=drive.owner_id, version_id=version_id, by=by, at=at,
                          freed=freed_by(drive, version_id), key=version.key), orphan


def freed_by(drive: Drive, version_id: str) -> int:
    """Bytes a deletion gives back (0 while another version shares the content)."""
    version = drive.versions[version_id]
    blob = drive.blobs[version.key]
    return blob.size if blob.refs == {version_id} else 0


def pick_version(drive: Drive, set_id: str, year: int, version_id: str | None) -> Version:
    """The asked version of a set-year, or its latest."""
    wanted = version_id or drive.latest.get((set_id, year))
    version = drive.versions.get(wanted or "")
    if version is None or (version.info.set_id, version.info.year) != (set_id, year):
        raise NoSuchVersion("no such version of that account set and year")
    return version
