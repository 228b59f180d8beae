"""storage's domain over events: every upload is charged and sent; a verified upload reuses
a stored blob only within what its uploader may read; only unused objects may go."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from contracts.storage import MB, BackupUploaded, UploadReserved
from services.storage import domain

NOW = datetime(2026, 11, 30, tzinfo=UTC)
OWNER, SHAREE = "owner", "sharee"


def reserved(upload: str, *, by: str = OWNER, set_id: str = "s1", year: int = 2018,
             sha: str = "a" * 64, size: int = MB) -> UploadReserved:
    return UploadReserved(owner_id=OWNER, upload_id=upload, uploader_id=by, set_id=set_id,
                          set_name="n", year=year, period=1, size=size, sha256=sha,
                          key=f"uploads/{OWNER}/{upload}", charged=size,
                          expires_at=NOW + timedelta(hours=1), at=NOW)


def completed(drive: domain.Drive, r: UploadReserved) -> tuple[domain.Drive, BackupUploaded]:
    """The drive after the reservation and its verified completion."""
    drive = domain.evolve(drive, r)
    uploaded = domain.decide_complete(drive, r, at=NOW)
    return domain.evolve(drive, uploaded), uploaded


def test_content_already_stored_is_still_charged_in_full_until_verified() -> None:
    drive, _ = completed(domain.Drive(owner_id=OWNER), reserved("u1"))
    again = domain.decide_reserve(drive, reserved("u2", year=2019), default_quota=400 * MB)
    assert again is not None and again.charged == MB and again.key == f"uploads/{OWNER}/u2"
    assert domain.evolve(drive, again).used(NOW) == 2 * MB


def test_the_owner_reuses_a_blob_from_any_set_and_gets_the_charge_back() -> None:
    drive, first = completed(domain.Drive(owner_id=OWNER), reserved("u1", set_id="private"))
    drive, second = completed(drive, reserved("u2", set_id="s1", year=2019))
    assert second.key == first.key
    assert drive.used(NOW) == MB


def test_a_sharee_reuses_only_a_blob_of_the_set_year_it_writes() -> None:
    drive, private = completed(domain.Drive(owner_id=OWNER), reserved("u1", set_id="private"))
    drive, theirs = completed(drive, reserved("u2", by=SHAREE))
    assert theirs.key != private.key and drive.used(NOW) == 2 * MB  # no hint, own copy
    drive, again = completed(drive, reserved("u3", by=SHAREE))  # same set-year: readable
    assert again.key == theirs.key and drive.used(NOW) == 2 * MB


def test_an_object_may_go_only_when_no_version_uses_it() -> None:
    drive, first = completed(domain.Drive(owner_id=OWNER), reserved("u1"))
    drive, second = completed(drive, reserved("u2", year=2019))
    assert domain.referenced(drive, first.key)
    assert not domain.referenced(drive, f"uploads/{OWNER}/u2")
    assert not domain.referenced(drive, f"blobs/{OWNER}/u2/c")  # the unused copy
    deleted, orphan = domain.decide_delete(drive, first.version_id, by=OWNER, at=NOW)
    assert orphan is None
    drive = domain.evolve(drive, deleted)
    assert domain.referenced(drive, first.key)
    last, orphan = domain.decide_delete(drive, second.version_id, by=OWNER, at=NOW)
    assert orphan == first.key
    assert not domain.referenced(domain.evolve(drive, last), first.key)


@pytest.mark.parametrize("by", [OWNER, SHAREE])
def test_different_content_is_never_reused(by: str) -> None:
    drive, first = completed(domain.Drive(owner_id=OWNER), reserved("u1"))
    drive, other = completed(drive, reserved("u2", by=by, sha="b" * 64))
    assert other.key != first.key and drive.used(NOW) == 2 * MB
