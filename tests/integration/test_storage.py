"""storage over NATS against real NATS, PostgreSQL and SeaweedFS."""

from __future__ import annotations

import asyncio
import hashlib
import os
import tracemalloc
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import asyncpg
import msgspec
import pytest
from msgspec.structs import replace
from nats.aio.client import Client as NATS

from contracts.identity import IdentityClient, InvalidToken
from contracts.storage import (
    MB,
    BeginUpload,
    ChecksumMismatch,
    CompleteUpload,
    DeleteVersion,
    DownloadIssued,
    DownloadRequest,
    DriveRequest,
    NoSuchUpload,
    QuotaExceeded,
    SetQuota,
    StorageClient,
    StorageUnavailable,
    UploadIncomplete,
    UploadPlan,
    VersionsRequest,
    audit_subjects,
)
from contracts.transfer import download, sha256_file, upload
from deploy.credentials import ensure_secrets
from deploy.stack import Stack
from runtime.app import Wiring
from runtime.eventstore import EventStore
from runtime.s3 import s3_client
from runtime.service import Call
from runtime.settings import Settings
from services.identity.service import build as build_identity
from services.storage.objects import ObjectStore
from services.storage.service import build as build_storage
from tests.helpers import cid, join
from tests.services import running, service_settings
from tests.support import free_stack_ports


class Member:
    def __init__(self, nc: NATS, session: str, member_id: str) -> None:
        self.storage = StorageClient(nc, timeout=30)
        self.session = session
        self.member_id = member_id

    async def begin(self, path: Path, *, set_id: str = "set-123", year: int = 2018,
                    period: int = 1, base: str | None = None, sha: str | None = None,
                    size: int | None = None, owner: str | None = None) -> UploadPlan:
        stat = await asyncio.to_thread(path.stat)
        digest = sha if sha is not None else await asyncio.to_thread(sha256_file, path)
        return await self.storage.begin_upload(BeginUpload(
            command_id=cid(), session=self.session, owner_id=owner, set_id=set_id,
            set_name="123", year=year, period=period, size=size or stat.st_size,
            sha256=digest, remark=f"{year}年{period}期", base_version=base))

    async def put(self, path: Path, **kw: object) -> str:
        plan = await self.begin(path, **kw)  # type: ignore[arg-type]
        await upload(plan, path)
        done = await self.storage.complete_upload(CompleteUpload(
            command_id=cid(), session=self.session, upload_id=plan.upload_id))
        return done.version.version_id

    async def used(self) -> int:
        return (await self.storage.drive(DriveRequest(session=self.session))).used


@pytest.fixture
async def env(settings: Settings, nc: NATS, pool: asyncpg.Pool,
              events: EventStore) -> AsyncIterator[tuple[NATS, Wiring]]:
    configured = service_settings(settings)
    async with running(build_identity, configured, nc, pool, events), \
            running(build_storage, configured, nc, pool, events) as storage:
        yield nc, storage


async def member(nc: NATS, account: str) -> Member:
    joined = await join(IdentityClient(nc, timeout=10), account, account)
    return Member(nc, joined.session, joined.member_id)


def file_of(tmp_path: Path, size: int, name: str = "a.bak", seed: bytes = b"") -> Path:
    path = tmp_path / name
    block = hashlib.sha256(seed + name.encode()).digest() * (1024 * 1024 // 32)
    with path.open("wb") as f:
        left = size
        while left:
            f.write(block[:min(left, len(block))])
            left -= min(left, len(block))
    return path


async def round_trip(owner: Member, path: Path, tmp_path: Path) -> Path:
    version = await owner.put(path)
    ticket = await owner.storage.download(DownloadRequest(
        command_id=cid(), session=owner.session, set_id="set-123", year=2018))
    assert ticket.version.version_id == version
    out = tmp_path / "downloaded.bak"
    assert await download(ticket.url, out, size=ticket.version.size) == ticket.version.size
    return out


async def test_a_50mb_backup_comes_back_in_byte_ranges_exactly(
        env: tuple[NATS, Wiring], tmp_path: Path) -> None:
    owner = await member(env[0], "ranges")
    source = tmp_path / "big.bak"
    with source.open("wb") as f:
        for _ in range(50):
            f.write(os.urandom(MB))
    out = await round_trip(owner, source, tmp_path)
    assert sha256_file(out) == sha256_file(source)


async def test_a_1kb_backup_round_trips_exactly_and_the_download_is_audited(
        env: tuple[NATS, Wiring], events: EventStore, tmp_path: Path) -> None:
    owner = await member(env[0], "owner")
    source = tmp_path / "small.bak"
    source.write_bytes(os.urandom(1024))
    out = await round_trip(owner, source, tmp_path)
    assert out.read_bytes() == source.read_bytes()
    [audit] = await events.load(audit_subjects(owner.member_id))
    issued = msgspec.json.decode(audit.data, type=DownloadIssued)
    assert (issued.by, issued.set_id, issued.year) == (owner.member_id, "set-123", 2018)
    listing = await owner.storage.drive(DriveRequest(session=owner.session))
    assert listing.used == 1024 and listing.quota == 400 * MB
    [version] = [s.latest for s in listing.set_years]
    again = await owner.storage.complete_upload(CompleteUpload(  # a retried completion
        command_id=cid(), session=owner.session, upload_id=version.version_id))
    assert again.version == version
    assert [(s.set_id, s.year, s.latest.remark) for s in listing.set_years] == [
        ("set-123", 2018, "2018年1期")]


async def test_a_200mb_backup_round_trips_multipart_with_bounded_client_memory(
        env: tuple[NATS, Wiring], tmp_path: Path) -> None:
    owner = await member(env[0], "bigowner")
    source = file_of(tmp_path, 200 * MB)
    plan = await owner.begin(source)
    assert len(plan.parts) == 13  # 16 MiB parts
    tracemalloc.start()
    await upload(plan, source)
    upload_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    await owner.storage.complete_upload(CompleteUpload(command_id=cid(), session=owner.session,
                                                       upload_id=plan.upload_id))
    ticket = await owner.storage.download(DownloadRequest(
        command_id=cid(), session=owner.session, set_id="set-123", year=2018))
    tracemalloc.start()
    await download(ticket.url, tmp_path / "back.bak")
    download_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert sha256_file(tmp_path / "back.bak") == sha256_file(source)
    assert upload_peak < 32 * MB and download_peak < 32 * MB, (upload_peak, download_peak)


async def test_concurrent_uploads_never_pass_the_quota(env: tuple[NATS, Wiring],
                                                       tmp_path: Path) -> None:
    nc, _ = env
    owner = await member(nc, "crowded")
    await owner.storage.set_quota(SetQuota(command_id=cid(), owner_id=owner.member_id,
                                           quota=10 * MB))
    files = [file_of(tmp_path, 3 * MB // 2, f"f{i}.bak") for i in range(20)]
    results = await asyncio.gather(*(owner.begin(f, set_id=f"s{i}") for i, f in
                                     enumerate(files)), return_exceptions=True)
    accepted = [r for r in results if isinstance(r, UploadPlan)]
    refused = [r for r in results if isinstance(r, QuotaExceeded)]
    assert len(accepted) + len(refused) == 20
    assert len(accepted) == 6  # 6 x 1.5 MB fit in 10 MB, a 7th does not
    assert await owner.used() == 6 * (3 * MB // 2) <= 10 * MB
    assert "available of 10 MB" in refused[0].message


async def test_s3_refuses_other_bytes_than_declared_on_a_single_put(
        env: tuple[NATS, Wiring], settings: Settings, tmp_path: Path) -> None:
    owner = await member(env[0], "careless")
    good = file_of(tmp_path, 2 * MB)
    plan = await owner.begin(good, sha="0" * 64)
    with pytest.raises(StorageUnavailable, match="400"):  # BadDigest: the signed checksum
        await upload(plan, good)
    short = file_of(tmp_path, MB, "short.bak")
    plan = await owner.begin(short, size=2 * MB, sha=sha256_file(good))
    with pytest.raises(StorageUnavailable, match="403"):  # the signed length
        await upload(replace(plan, parts=[replace(p, size=MB) for p in plan.parts]), short)
    with pytest.raises(UploadIncomplete, match="nothing was uploaded"):
        await owner.storage.complete_upload(CompleteUpload(
            command_id=cid(), session=owner.session, upload_id=plan.upload_id))
    assert await keys(settings, f"uploads/{owner.member_id}/") == []


async def test_a_wrong_checksum_in_a_multipart_upload_is_refused_and_released(
        env: tuple[NATS, Wiring], settings: Settings, tmp_path: Path) -> None:
    owner = await member(env[0], "careless-multi")
    big = file_of(tmp_path, 20 * MB)
    plan = await owner.begin(big, sha="0" * 64)
    assert len(plan.parts) == 2
    await upload(plan, big)
    refused = CompleteUpload(command_id=cid(), session=owner.session,
                             upload_id=plan.upload_id)
    with pytest.raises(ChecksumMismatch):
        await owner.storage.complete_upload(refused)
    with pytest.raises(ChecksumMismatch):  # a repeat answers the same, deciding nothing
        await owner.storage.complete_upload(refused)
    listing = await owner.storage.drive(DriveRequest(session=owner.session))
    assert listing.used == 0 and listing.set_years == []
    assert await keys(settings, f"uploads/{owner.member_id}/") == []
    with pytest.raises(NoSuchUpload):
        await owner.storage.complete_upload(CompleteUpload(
            command_id=cid(), session=owner.session, upload_id=plan.upload_id))


async def test_an_incomplete_multipart_upload_can_be_finished_later(
        env: tuple[NATS, Wiring], tmp_path: Path) -> None:
    owner = await member(env[0], "patient")
    source = file_of(tmp_path, 40 * MB)
    plan = await owner.begin(source)
    await upload(replace(plan, parts=plan.parts[:1]), source)
    with pytest.raises(UploadIncomplete, match="1 of 3 parts"):
        await owner.storage.complete_upload(CompleteUpload(
            command_id=cid(), session=owner.session, upload_id=plan.upload_id))
    await upload(replace(plan, parts=plan.parts[1:]), source)
    done = await owner.storage.complete_upload(CompleteUpload(
        command_id=cid(), session=owner.session, upload_id=plan.upload_id))
    assert done.version.size == 40 * MB


async def test_two_uploads_on_the_same_base_are_both_kept_the_second_a_conflict(
        env: tuple[NATS, Wiring], tmp_path: Path) -> None:
    owner = await member(env[0], "racer")
    base = await owner.put(file_of(tmp_path, 1000, "v1.bak"))
    first = await owner.put(file_of(tmp_path, 1000, "v2.bak"), base=base, period=2)
    second = await owner.put(file_of(tmp_path, 1000, "v3.bak"), base=base, period=3)
    versions = (await owner.storage.versions(VersionsRequest(
        session=owner.session, set_id="set-123", year=2018))).versions
    by_id = {v.version_id: v for v in versions}
    assert len(versions) == 3
    assert by_id[first].conflict_with is None
    assert by_id[second].conflict_with == first


async def test_the_same_content_twice_is_charged_once_and_deletes_free_it(
        env: tuple[NATS, Wiring], settings: Settings, tmp_path: Path) -> None:
    owner = await member(env[0], "twice")
    path = file_of(tmp_path, 3 * MB)
    v1 = await owner.put(path)
    plan = await owner.begin(path, year=2019)
    # the bytes come again (charged while staged) before the stored blob is reused
    assert not plan.already_stored and len(plan.parts) == 1
    assert await owner.used() == 6 * MB
    await upload(plan, path)
    v2 = (await owner.storage.complete_upload(CompleteUpload(
        command_id=cid(), session=owner.session, upload_id=plan.upload_id))).version.version_id
    assert await owner.used() == 3 * MB
    blobs = await keys(settings, f"uploads/{owner.member_id}/")
    assert len(blobs) == 1  # the second upload's own object went: it uses the first's
    freed = await owner.storage.delete_version(DeleteVersion(command_id=cid(),
                                                             session=owner.session,
                                                             version_id=v1))
    assert freed.freed == 0 and await owner.used() == 3 * MB
    ticket = await owner.storage.download(DownloadRequest(
        command_id=cid(), session=owner.session, set_id="set-123", year=2019))
    assert await download(ticket.url, tmp_path / "still.bak") == 3 * MB
    assert await keys(settings, f"uploads/{owner.member_id}/") == blobs
    freed = await owner.storage.delete_version(DeleteVersion(command_id=cid(),
                                                             session=owner.session,
                                                             version_id=v2))
    assert freed.freed == 3 * MB and await owner.used() == 0
    assert await keys(settings, f"uploads/{owner.member_id}/") == []


async def keys(settings: Settings, prefix: str) -> list[str]:
    """The bucket's keys under a prefix, read straight from S3."""
    async with s3_client(settings) as s3:
        return await ObjectStore(s3, settings.s3_bucket, url_ttl_s=60).keys_under(prefix)


async def test_no_url_is_ever_presigned_to_write_outside_an_uploads_own_key(
        settings: Settings) -> None:
    async with s3_client(settings) as s3:
        objects = ObjectStore(s3, settings.s3_bucket, url_ttl_s=60)
        for key in ["blobs/o/u/1", "objects/o/u", "uploadsx/o/u"]:
            with pytest.raises(ValueError, match="only uploads/"):
                await objects.put_url(key, 1, "0" * 64)
            with pytest.raises(ValueError, match="only uploads/"):
                await objects.part_url(key, "m", 1)


async def test_nobody_else_gets_a_url_for_a_members_set(env: tuple[NATS, Wiring],
                                                        tmp_path: Path) -> None:
    nc, _ = env
    owner, other = await member(nc, "owner"), await member(nc, "snoop")
    path = file_of(tmp_path, 1000)
    await owner.put(path)
    messages = set()
    for set_id in ["set-123", "no-such-set"]:
        # without the cloud-drive password's token, a non-owner gets no further
        with pytest.raises(InvalidToken) as err:
            await other.storage.download(DownloadRequest(
                command_id=cid(), session=other.session, owner_id=owner.member_id,
                set_id=set_id, year=2018))
        messages.add(err.value.message)
        with pytest.raises(InvalidToken):
            await other.begin(path, owner=owner.member_id, set_id=set_id)
        with pytest.raises(InvalidToken):
            await other.storage.versions(VersionsRequest(
                session=other.session, owner_id=owner.member_id, set_id=set_id, year=2018))
    assert len(messages) == 1


async def test_an_expired_reservation_frees_its_quota_and_its_parts(
        settings: Settings, nc: NATS, pool: asyncpg.Pool, events: EventStore,
        tmp_path: Path) -> None:
    configured = service_settings(settings).with_overrides(upload_reservation_s=0.5)
    async with running(build_identity, configured, nc, pool, events), \
            running(build_storage, configured, nc, pool, events) as wiring:
        owner = await member(nc, "slow")
        path = file_of(tmp_path, 40 * MB)
        plan = await owner.begin(path)
        assert await owner.used() == 40 * MB
        await asyncio.sleep(0.6)
        assert await owner.used() == 0  # no sweeper needed for the quota
        storage = wiring.host.endpoints[0].handler.__self__  # type: ignore[attr-defined]
        now = datetime.now(UTC)
        assert await storage.sweep(owner.member_id, now, Call("t", now, {})) == 1
        with pytest.raises(StorageUnavailable):  # the multipart upload is gone from S3
            await upload(plan, path)
        with pytest.raises(NoSuchUpload):
            await owner.storage.complete_upload(CompleteUpload(
                command_id=cid(), session=owner.session, upload_id=plan.upload_id))


async def test_s3_down_gives_storage_unavailable_and_charges_nothing(
        settings: Settings, nc: NATS, pool: asyncpg.Pool, events: EventStore,
        tmp_path: Path) -> None:
    ports = free_stack_ports()
    ensure_secrets(tmp_path / "s3")  # its random keys, known before it first starts
    s3 = Stack.local(settings.with_overrides(home=str(tmp_path / "s3")), ports, only=("s3",))
    configured = service_settings(settings).with_overrides(
        s3_endpoint=s3.settings.s3_endpoint, s3_access_key=s3.settings.s3_access_key,
        s3_secret_key=s3.settings.s3_secret_key)
    async with running(build_identity, configured, nc, pool, events), \
            running(build_storage, configured, nc, pool, events):
        owner = await member(nc, "unlucky")
        path = file_of(tmp_path, 1000)
        with pytest.raises(StorageUnavailable):
            await owner.begin(path)
        assert await owner.used() == 0
        await asyncio.to_thread(s3.up, detach=False, progress=lambda _m: None)
        try:
            plan = await owner.begin(path)
            await upload(plan, path)
            await asyncio.to_thread(s3.down, progress=lambda _m: None)
            with pytest.raises(StorageUnavailable):
                await owner.storage.complete_upload(CompleteUpload(
                    command_id=cid(), session=owner.session, upload_id=plan.upload_id))
            await asyncio.to_thread(s3.up, detach=False, progress=lambda _m: None)
            done = await owner.storage.complete_upload(CompleteUpload(
                command_id=cid(), session=owner.session, upload_id=plan.upload_id))
            assert done.version.size == 1000
        finally:
            await asyncio.to_thread(s3.down, progress=lambda _m: None)


def test_quota_errors_give_the_numbers() -> None:
    from contracts.storage import UploadReserved
    from services.storage import domain

    now = datetime.now(UTC)
    used = UploadReserved(owner_id="o", upload_id="u0", uploader_id="o", set_id="s",
                          set_name="n", year=2018, period=1, size=int(398.9 * MB),
                          sha256="a" * 64, key="k", charged=int(398.9 * MB),
                          expires_at=now + timedelta(hours=1), at=now)
    drive = domain.evolve(domain.Drive(owner_id="o"), used)
    wanted = replace(used, upload_id="u1", size=int(2.52 * MB), sha256="b" * 64)
    with pytest.raises(QuotaExceeded, match=r"needs 2\.52 MB, 1\.10 MB available of 400 MB"):
        domain.decide_reserve(drive, wanted, default_quota=400 * MB)


async def test_presigned_urls_expire_and_are_bound_to_their_key(
        settings: Settings, nc: NATS, pool: asyncpg.Pool, events: EventStore,
        tmp_path: Path) -> None:
    # X-Amz-Date has whole seconds: a URL signed for n s lives between n - 1 and n s, so
    # 1 s left the uploads below no time at all now and then.
    configured = service_settings(settings).with_overrides(presign_ttl_s=3)
    async with running(build_identity, configured, nc, pool, events), \
            running(build_storage, configured, nc, pool, events):
        owner = await member(nc, "expiring")
        await owner.put(file_of(tmp_path, 1000, "one.bak"))
        await owner.put(file_of(tmp_path, 1000, "two.bak"), year=2019)
        ticket = await owner.storage.download(DownloadRequest(
            command_id=cid(), session=owner.session, set_id="set-123", year=2018))
        other = await owner.storage.download(DownloadRequest(
            command_id=cid(), session=owner.session, set_id="set-123", year=2019))
        async with aiohttp.ClientSession() as http:
            async with http.get(ticket.url) as ok:
                assert ok.status == 200
            # the signature covers the key: another object under the same signature fails
            other_key = other.url.split("?")[0]
            async with http.get(f"{other_key}?{ticket.url.split('?')[1]}") as moved:
                assert moved.status == 403
            await asyncio.sleep(3.2)
            async with http.get(ticket.url) as late:
                assert late.status == 403
