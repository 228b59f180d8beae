"""storage's domain over events: every upload is charged and sent; a verified upload reuses
a stored blob only within what its uploader may read; only unused objects may go; room is
reserved within the quota, a reservation ends by completion, abort or expiry, and the
newest remaining version of a set-year is its latest."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from contracts.storage import (
    MB,
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
)
from services.storage import domain

NOW = datetime(2026, 11, 30, tzinfo=UTC)
HOUR = timedelta(hours=1)
OWNER, SHAREE = "owner", "sharee"


def reserved(upload: str, *, by: str = OWNER, set_id: str = "s1", year: int = 2018,
             sha: str = "a" * 64, size: int = MB, base: str | None = None,
             at: datetime = NOW) -> UploadReserved:
    return UploadReserved(owner_id=OWNER, upload_id=upload, uploader_id=by, set_id=set_id,
                          set_name="n", year=year, period=1, size=size, sha256=sha,
                          base_version=base, key=f"uploads/{OWNER}/{upload}", charged=size,
                          expires_at=at + HOUR, at=at)


def completed(drive: domain.Drive, r: UploadReserved) -> tuple[domain.Drive, BackupUploaded]:
    """The drive after the reservation and its verified completion (when it was made)."""
    drive = domain.evolve(drive, r)
    uploaded = domain.decide_complete(drive, r, at=r.at)
    return domain.evolve(drive, uploaded), uploaded


def uploaded(version: str, *, set_id: str = "s1", year: int = 2018, sha: str = "a" * 64,
             size: int = MB, at: datetime = NOW) -> BackupUploaded:
    """A completed upload, its bytes at its own key."""
    return BackupUploaded(owner_id=OWNER, version_id=version, upload_id=version,
                          uploader_id=OWNER, set_id=set_id, set_name="n", year=year,
                          period=1, size=size, sha256=sha, key=f"uploads/{OWNER}/{version}",
                          at=at)


def quota(n: int) -> QuotaChanged:
    return QuotaChanged(owner_id=OWNER, quota=n, at=NOW - HOUR)


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


# ---- reserve --------------------------------------------------------------------------

def reserve(history: list[StorageEvent], wanted: UploadReserved,
            default_quota: int = 100 * MB) -> UploadReserved:
    return domain.decide_reserve(domain.fold(history), wanted, default_quota=default_quota)


def test_given_room_for_exactly_the_size_when_reserving_then_charged_in_full() -> None:
    wanted = msgspec.structs.replace(reserved("u2", size=2 * MB), charged=0)
    assert reserve([quota(3 * MB), uploaded("v1")], wanted) == reserved("u2", size=2 * MB)


def test_given_too_little_room_when_reserving_then_quota_exceeded_with_the_numbers() -> None:
    history: list[StorageEvent] = [quota(3 * MB), uploaded("v1"), reserved("u1")]
    with pytest.raises(QuotaExceeded) as caught:
        reserve(history, reserved("u2", size=2 * MB))
    assert caught.value.code == "quota_exceeded"
    assert caught.value.details == {"needed": str(2 * MB), "available": str(MB),
                                    "quota": str(3 * MB)}


def test_given_no_quota_set_when_reserving_then_the_default_quota_holds() -> None:
    assert reserve([], reserved("u1", size=MB), default_quota=MB).charged == MB
    with pytest.raises(QuotaExceeded):
        reserve([], reserved("u1", size=MB + 1), default_quota=MB)
    assert reserve([quota(2 * MB)], reserved("u1", size=2 * MB), default_quota=MB).charged


def test_given_an_expired_reservation_then_its_room_is_free_from_its_expiry() -> None:
    history: list[StorageEvent] = [quota(MB), reserved("u1", at=NOW - HOUR)]  # ends at NOW
    with pytest.raises(QuotaExceeded):
        reserve(history, reserved("u2", at=NOW - timedelta(seconds=1)))
    assert reserve(history, reserved("u2", at=NOW)).charged == MB


def test_given_a_quota_lowered_below_use_when_reserving_then_none_available() -> None:
    with pytest.raises(QuotaExceeded) as caught:
        reserve([uploaded("v1", size=2 * MB), quota(MB)], reserved("u2", size=1))
    assert caught.value.details["available"] == "0"


@given(st.integers(0, 8), st.lists(st.integers(1, 4), max_size=12))
def test_reservations_never_take_more_than_the_quota(limit: int,
                                                     sizes: list[int]) -> None:
    drive = domain.fold([quota(limit * MB)])
    for n, size in enumerate(sizes):
        fits = drive.used(NOW) + size * MB <= limit * MB
        try:
            drive = domain.evolve(drive, domain.decide_reserve(
                drive, reserved(f"u{n}", size=size * MB), default_quota=0))
        except QuotaExceeded as err:
            assert not fits and int(err.details["available"]) >= 0
            continue
        assert fits and drive.used(NOW) <= limit * MB


# ---- open reservation, abort, expiry --------------------------------------------------

def test_given_an_open_reservation_when_completing_before_expiry_then_it_is_found() -> None:
    r = reserved("u1")
    assert domain.open_reservation(domain.fold([r]), "u1", now=r.expires_at - HOUR / 2) == r


@pytest.mark.parametrize("history", [
    [], [reserved("u2")], [reserved("u1"), uploaded("u1")],
    [reserved("u1"), UploadAborted(owner_id=OWNER, upload_id="u1", reason="cancel", at=NOW)],
], ids=["never begun", "another upload", "completed", "aborted"])
def test_given_no_open_reservation_when_completing_then_no_such_upload(
        history: list[StorageEvent]) -> None:
    with pytest.raises(NoSuchUpload) as caught:
        domain.open_reservation(domain.fold(history), "u1", now=NOW)
    assert caught.value.code == "no_such_upload"


@pytest.mark.parametrize("late", [timedelta(0), HOUR], ids=["at expiry", "after"])
def test_given_an_expired_reservation_when_completing_then_upload_expired(
        late: timedelta) -> None:
    r = reserved("u1")
    with pytest.raises(UploadExpired) as caught:
        domain.open_reservation(domain.fold([r]), "u1", now=r.expires_at + late)
    assert caught.value.code == "upload_expired"


def test_given_a_reservation_when_aborting_then_aborted_and_its_room_free() -> None:
    drive = domain.fold([reserved("u1", size=3 * MB)])
    event = domain.decide_abort(drive, "u1", reason="cancelled", at=NOW)
    assert event == UploadAborted(owner_id=OWNER, upload_id="u1", reason="cancelled", at=NOW)
    assert event is not None
    assert drive.used(NOW) == 3 * MB and domain.evolve(drive, event).used(NOW) == 0


@pytest.mark.parametrize("history", [
    [], [reserved("u1"), uploaded("u1")],
    [reserved("u1"), UploadAborted(owner_id=OWNER, upload_id="u1", reason="expired", at=NOW)],
], ids=["never begun", "completed", "aborted"])
def test_given_no_open_reservation_when_aborting_then_nothing(
        history: list[StorageEvent]) -> None:
    assert domain.decide_abort(domain.fold(history), "u1", reason="expired", at=NOW) is None


def test_expired_lists_the_open_reservations_whose_time_is_up() -> None:
    drive = domain.fold([reserved("gone", at=NOW - 2 * HOUR), reserved("ends", at=NOW - HOUR),
                         reserved("open", at=NOW), reserved("done", at=NOW - 2 * HOUR),
                         uploaded("done")])
    assert sorted(r.upload_id for r in domain.expired(drive, now=NOW)) == ["ends", "gone"]


# ---- complete -------------------------------------------------------------------------

def test_given_an_empty_set_year_when_completing_then_its_first_version() -> None:
    r = reserved("u1", size=2 * MB, sha="c" * 64)
    done = domain.decide_complete(domain.fold([uploaded("v0", year=2019), r]), r, at=NOW)
    assert done == BackupUploaded(
        owner_id=OWNER, version_id="u1", upload_id="u1", uploader_id=OWNER, set_id="s1",
        set_name="n", year=2018, period=1, size=2 * MB, sha256="c" * 64,
        key=f"uploads/{OWNER}/u1", at=NOW)


@pytest.mark.parametrize("base, conflict", [("v2", None), ("v1", "v2"), (None, "v2")],
                         ids=["on the latest", "on an older one", "on none"])
def test_given_versions_when_completing_then_a_conflict_unless_based_on_the_latest(
        base: str | None, conflict: str | None) -> None:
    r = reserved("u3", sha="c" * 64, base=base, at=NOW + 2 * HOUR)
    drive = domain.fold([uploaded("v1"), uploaded("v2", at=NOW + HOUR), r])
    done = domain.decide_complete(drive, r, at=r.at)
    assert (done.base_version, done.conflict_with) == (base, conflict)


# ---- delete ---------------------------------------------------------------------------

@pytest.mark.parametrize("history", [
    [], [uploaded("v2")],
    [uploaded("v1"), VersionDeleted(owner_id=OWNER, version_id="v1", by=OWNER, at=NOW)],
], ids=["empty drive", "another version", "deleted before"])
def test_given_no_such_version_when_deleting_then_no_such_version(
        history: list[StorageEvent]) -> None:
    with pytest.raises(NoSuchVersion) as caught:
        domain.decide_delete(domain.fold(history), "v1", by=OWNER, at=NOW)
    assert caught.value.code == "no_such_version"


def test_given_a_version_alone_on_its_bytes_when_deleting_then_they_are_freed() -> None:
    drive = domain.fold([uploaded("v1", size=3 * MB)])
    event, orphan = domain.decide_delete(drive, "v1", by=OWNER, at=NOW + HOUR)
    assert event == VersionDeleted(owner_id=OWNER, version_id="v1", by=OWNER, at=NOW + HOUR,
                                   freed=3 * MB, key=f"uploads/{OWNER}/v1")
    assert orphan == f"uploads/{OWNER}/v1"
    assert domain.evolve(drive, event).used(NOW) == 0


def test_given_bytes_two_versions_use_when_deleting_one_then_nothing_freed() -> None:
    drive, _ = completed(domain.fold([uploaded("v1", size=3 * MB)]),
                         reserved("v2", size=3 * MB, year=2019))
    event, orphan = domain.decide_delete(drive, "v1", by=OWNER, at=NOW)
    assert (event.freed, orphan) == (0, None)
    assert domain.evolve(drive, event).used(NOW) == 3 * MB


def test_given_the_latest_deleted_then_the_one_before_is_latest_again() -> None:
    drive = domain.fold([uploaded("v1"), uploaded("v2", sha="b" * 64, at=NOW + HOUR),
                         uploaded("v3", sha="c" * 64, at=NOW + 2 * HOUR)])
    event, _ = domain.decide_delete(drive, "v3", by=OWNER, at=NOW + 3 * HOUR)
    assert domain.pick_version(domain.evolve(drive, event), "s1", 2018, None).info.version_id \
        == "v2"


# ---- pick and list --------------------------------------------------------------------

def test_pick_gives_the_asked_version_or_else_the_latest() -> None:
    drive = domain.fold([uploaded("v1"), uploaded("v2", sha="b" * 64, at=NOW + HOUR),
                         uploaded("v3", year=2019, at=NOW + 2 * HOUR)])
    assert domain.pick_version(drive, "s1", 2018, None).info.version_id == "v2"
    assert domain.pick_version(drive, "s1", 2018, "v1").info.version_id == "v1"


@pytest.mark.parametrize("set_id, year, version", [
    ("s1", 2019, None), ("s2", 2018, None), ("s1", 2019, "v1"), ("s1", 2018, "v9"),
], ids=["empty year", "other set", "version of another year", "unknown version"])
def test_pick_refuses_what_the_set_year_does_not_hold(set_id: str, year: int,
                                                      version: str | None) -> None:
    with pytest.raises(NoSuchVersion) as caught:
        domain.pick_version(domain.fold([uploaded("v1")]), set_id, year, version)
    assert caught.value.code == "no_such_version"


def test_versions_of_a_set_year_are_listed_newest_first() -> None:
    drive = domain.fold([uploaded("v1", at=NOW + HOUR), uploaded("v2", at=NOW + 3 * HOUR),
                         uploaded("v3", at=NOW + 2 * HOUR), uploaded("x", year=2019)])
    assert [v.version_id for v in drive.versions_of("s1", 2018)] == ["v2", "v3", "v1"]


# ---- the fold over uploads and deletions ----------------------------------------------

SIZES = {"a" * 64: MB, "b" * 64: 2 * MB, "c" * 64: 4 * MB}
Step = tuple[bool, str, int, int]  # upload?, content, year, which version to delete


@given(st.lists(st.tuples(st.booleans(), st.sampled_from(sorted(SIZES)),
                          st.sampled_from([2018, 2019]), st.integers(0, 20)), max_size=25))
def test_use_is_each_kept_content_once_and_the_latest_is_the_newest_kept(
        steps: list[Step]) -> None:
    drive, kept = domain.fold([quota(100 * MB)]), dict[str, tuple[str, int]]()
    for n, (upload, sha, year, pick) in enumerate(steps):
        at = NOW + n * timedelta(minutes=1)
        if upload or not kept:
            drive, _ = completed(drive, reserved(f"v{n}", sha=sha, year=year,
                                                 size=SIZES[sha], at=at))
            kept[f"v{n}"] = (sha, year)
        else:
            drive = _delete(drive, sorted(kept)[pick % len(kept)], at)
            del kept[sorted(kept)[pick % len(kept)]]
        assert drive.used(at) == sum(SIZES[sha] for sha in {s for s, _ in kept.values()})
        for year in (2018, 2019):
            newest = max((int(v[1:]) for v, (_, y) in kept.items() if y == year), default=None)
            assert drive.latest.get(("s1", year)) == (None if newest is None else f"v{newest}")


def _delete(drive: domain.Drive, version: str, at: datetime) -> domain.Drive:
    """The drive after deleting ``version``, checking that it freed what its use dropped."""
    event, _ = domain.decide_delete(drive, version, by=OWNER, at=at)
    after = domain.evolve(drive, event)
    assert drive.used(at) - after.used(at) == event.freed
    return after
