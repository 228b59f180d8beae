"""storage attacked: verified bytes never change, caller input never picks a key, dedup
never hands out bytes the caller has not proven it holds, names are data. Real servers."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import os
import uuid
from collections.abc import AsyncIterator
from email.message import Message
from email.utils import collapse_rfc2231_value
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import msgspec
import pytest
from nats.aio.client import Client as NATS
from rich.console import Console

from cli import client as cli
from cli.session import Saved
from contracts.errors import BadRequest, CommandReused
from contracts.identity import IdentityClient
from contracts.storage import (
    MB,
    AnyStorageEvent,
    BackupUploaded,
    BeginUpload,
    CompleteUpload,
    DownloadExpired,
    DownloadRequest,
    DriveRequest,
    NoSuchUpload,
    NoSuchVersion,
    StorageClient,
    UploadIncomplete,
    UploadPlan,
    audit_subjects,
    drive_subjects,
)
from contracts.transfer import download, upload
from runtime.eventstore import EventStore, StoredEvent
from runtime.s3 import s3_client
from runtime.settings import Settings
from services.identity.service import build as build_identity
from services.storage.service import build as build_storage
from tests.helpers import cid, join
from tests.integration.test_sharing import SET, Person
from tests.services import running, service_settings


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Uploader:
    """One member's storage calls, as a hostile desktop client would make them."""

    def __init__(self, storage: StorageClient, session: str, member_id: str,
                 drive: str = "") -> None:
        self.storage, self.session, self.member_id, self.drive = (storage, session,
                                                                  member_id, drive)

    @classmethod
    def of(cls, p: Person) -> Uploader:
        return cls(p.storage, p.session, p.member_id, p.drive)

    async def begin(self, data: bytes, *, owner: str | None = None, set_id: str = SET,
                    year: int = 2018, name: str = "123", remark: str = "",
                    command_id: str | None = None, declared: bytes | None = None,
                    base: str | None = None) -> UploadPlan:
        claimed = data if declared is None else declared
        return await self.storage.begin_upload(BeginUpload(
            command_id=command_id or cid(), session=self.session, owner_id=owner,
            set_id=set_id, set_name=name, year=year, period=1, size=len(claimed),
            sha256=sha(claimed), remark=remark, base_version=base, drive_token=self.drive))

    async def complete(self, plan: UploadPlan, *, owner: str | None = None) -> str:
        done = await self.storage.complete_upload(CompleteUpload(
            command_id=cid(), session=self.session, owner_id=owner,
            upload_id=plan.upload_id, drive_token=self.drive))
        return done.version.version_id

    async def put(self, data: bytes, tmp: Path, *, owner: str | None = None,
                  **begin: Any) -> tuple[UploadPlan, str]:
        """Begin, PUT, complete: the plan (its URLs) and the version."""
        plan = await self.begin(data, owner=owner, **begin)
        await upload(plan, write(tmp / f"{uuid.uuid4().hex}.bak", data))
        return plan, await self.complete(plan, owner=owner)

    async def fetch(self, tmp: Path, *, owner: str | None = None, set_id: str = SET,
                    year: int = 2018, version: str | None = None) -> bytes:
        ticket = await self.storage.download(DownloadRequest(
            command_id=cid(), session=self.session, owner_id=owner, set_id=set_id,
            year=year, version_id=version, drive_token=self.drive))
        out = tmp / f"got-{uuid.uuid4().hex}.bak"
        await download(ticket.url, out)
        return out.read_bytes()


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


async def reput(plan: UploadPlan, attacker: bytes) -> list[int]:
    """PUT other bytes of each part's size to every URL of an old plan; the statuses."""
    statuses = []
    async with aiohttp.ClientSession() as http:
        for part in plan.parts:
            chunk = attacker[part.offset:part.offset + part.size]
            # With the plan's own headers (the signed checksum): the attacker has them.
            async with http.put(part.url, data=io.BytesIO(chunk),
                                headers=part.headers) as reply:
                statuses.append(reply.status)
    return statuses


@pytest.fixture
async def owners(settings: Settings, nc: NATS, pool: asyncpg.Pool,
                 events: EventStore) -> AsyncIterator[NATS]:
    """identity and storage with 3 s presigned URLs (so expiry can be waited for)."""
    configured = service_settings(settings).with_overrides(presign_ttl_s=3)
    async with running(build_identity, configured, nc, pool, events), \
            running(build_storage, configured, nc, pool, events):
        yield nc


async def member(nc: NATS, account: str) -> Uploader:
    joined = await join(IdentityClient(nc, timeout=10), account, account)
    return Uploader(StorageClient(nc, timeout=30), joined.session, joined.member_id)


async def pair(nc: NATS, tmp: Path) -> tuple[Person, Person]:
    """An owner who shares SET read-write with a friend whose drive is unlocked."""
    owner = await Person(nc, "owner", "Owner").join()
    sharee = await Person(nc, "sharee", "Sharee").join()
    await owner.befriend(sharee)
    # uploaded as a Person, so that the grant waits for sharing to see the backup
    await owner.upload(write(tmp / "first.bak", b"owner's first version" * 100))
    await sharee.unlock_drive()
    await owner.grant(sharee)
    return owner, sharee


# ---- verified bytes never change ------------------------------------------------------------

@pytest.mark.parametrize("size", [20_000, 20 * MB], ids=["single-put", "multipart"])
async def test_a_second_put_to_the_upload_url_never_changes_a_verified_version(
        owners: NATS, tmp_path: Path, size: int) -> None:
    owner = await member(owners, "victim")
    verified, attacker = os.urandom(size), os.urandom(size)
    plan, version = await owner.put(verified, tmp_path)
    await reput(plan, attacker)  # the URL is still valid for seconds
    assert await owner.fetch(tmp_path, version=version) == verified
    await asyncio.sleep(3.2)  # now the URL has expired
    assert all(s >= 400 for s in await reput(plan, attacker))
    assert await owner.fetch(tmp_path, version=version) == verified


async def test_a_read_write_sharee_cannot_rewrite_what_it_uploaded_to_the_owner(
        all_services: Settings, nc: NATS, tmp_path: Path) -> None:
    owner, sharee = await pair(nc, tmp_path)
    verified = b"the sharee's honest period 4" * 1000
    plan, version = await Uploader.of(sharee).put(verified, tmp_path, owner=owner.member_id)
    await reput(plan, b"X" * len(verified))
    assert await Uploader.of(owner).fetch(tmp_path, version=version) == verified


async def test_a_replayed_begin_upload_command_id_never_presigns_a_stored_version(
        owners: NATS, events: EventStore, tmp_path: Path) -> None:
    owner = await member(owners, "replayed")
    verified, command = os.urandom(30_000), cid()
    plan = await owner.begin(verified, command_id=command)
    await upload(plan, write(tmp_path / "v.bak", verified))
    version = await owner.complete(plan)
    key = stored_key(await events.load(drive_subjects(owner.member_id)), version)
    with pytest.raises(CommandReused):  # the attacker's replay, with other content
        await owner.begin(os.urandom(30_000), command_id=command)
    with pytest.raises(NoSuchUpload):  # the same request again: that upload has ended
        await owner.begin(verified, command_id=command)
    assert key.startswith(f"uploads/{owner.member_id}/")
    assert await owner.fetch(tmp_path, version=version) == verified


async def test_a_repeated_begin_upload_is_one_reservation(owners: NATS,
                                                         tmp_path: Path) -> None:
    owner = await member(owners, "repeater")
    data, command = os.urandom(30_000), cid()
    first = await owner.begin(data, command_id=command)
    again = await owner.begin(data, command_id=command)
    assert again.upload_id == first.upload_id and again.used == first.used == 30_000
    await upload(again, write(tmp_path / "d.bak", data))
    assert await owner.fetch(tmp_path, version=await owner.complete(first)) == data


async def test_a_repeated_download_is_one_audited_download_and_no_longer_a_link(
        owners: NATS, events: EventStore, tmp_path: Path) -> None:
    owner = await member(owners, "downloader")
    data = os.urandom(20_000)
    await owner.put(data, tmp_path)
    ask = DownloadRequest(command_id=cid(), session=owner.session, set_id=SET, year=2018)
    first = await owner.storage.download(ask)
    again = await owner.storage.download(ask)
    assert again.expires_at == first.expires_at and again.version == first.version
    audit = await events.load(audit_subjects(owner.member_id))
    assert [e.type for e in audit] == ["DownloadIssued"]
    await asyncio.sleep(3.2)  # past the first link's expiry
    with pytest.raises(DownloadExpired):
        await owner.storage.download(ask)


def stored_key(events: list[StoredEvent], version: str) -> str:
    """The object key the log gives a version."""
    for stored in events:
        event = msgspec.json.decode(stored.data, type=AnyStorageEvent)
        if isinstance(event, BackupUploaded) and event.version_id == version:
            return event.key
    raise AssertionError(f"no BackupUploaded for {version}")


# ---- dedup never hands out bytes the caller has not proven it holds -----------------------

async def test_a_sharee_cannot_attach_the_owners_blob_by_declaring_its_hash(
        all_services: Settings, nc: NATS, tmp_path: Path) -> None:
    owner, sharee = await pair(nc, tmp_path)
    secret = b"the owner's books for another set, never shared" * 500
    await Uploader.of(owner).put(secret, tmp_path, set_id="private-set")
    thief = Uploader.of(sharee)
    plan = await thief.begin(b"", owner=owner.member_id, year=2019, declared=secret)
    assert not plan.already_stored and plan.parts  # no hint about what the owner holds
    with pytest.raises(UploadIncomplete):  # nothing PUT: nothing to attach
        await thief.complete(plan, owner=owner.member_id)
    with pytest.raises(NoSuchVersion):
        await thief.fetch(tmp_path, owner=owner.member_id, year=2019)


async def test_a_sharee_uploading_the_same_bytes_gets_its_own_copy_not_a_hint(
        all_services: Settings, nc: NATS, tmp_path: Path) -> None:
    owner, sharee = await pair(nc, tmp_path)
    secret = os.urandom(MB)
    await Uploader.of(owner).put(secret, tmp_path, set_id="private-set")
    mine = Uploader.of(owner)
    before = (await mine.storage.drive(DriveRequest(session=mine.session))).used
    # the sharee holds the bytes; quota still must not say the owner has them elsewhere
    await Uploader.of(sharee).put(secret, tmp_path, owner=owner.member_id, year=2019)
    after = (await mine.storage.drive(DriveRequest(session=mine.session))).used
    assert after == before + MB


# ---- names are data ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", ['q"; filename="evil.exe', '账套 "甲" 2018', "a;b=c\\d'e"])
async def test_content_disposition_is_safe_whatever_the_set_name(
        owners: NATS, tmp_path: Path, name: str) -> None:
    owner = await member(owners, f"cd{uuid.uuid4().hex[:8]}")
    await owner.put(b"x" * 100, tmp_path, name=name)
    ticket = await owner.storage.download(DownloadRequest(
        command_id=cid(), session=owner.session, set_id=SET, year=2018))
    async with aiohttp.ClientSession() as http, http.get(ticket.url) as reply:
        raw = reply.headers["Content-Disposition"]
    assert raw.isascii() and "\r" not in raw and "\n" not in raw
    parsed = Message()
    parsed["Content-Disposition"] = raw
    assert parsed.get_content_disposition() == "attachment"
    params = parsed.get_params(header="Content-Disposition") or []
    [fallback, exact] = [v for k, v in params if k == "filename"]
    assert isinstance(fallback, str) and all(c.isalnum() or c in "._-" for c in fallback)
    assert isinstance(exact, tuple) and collapse_rfc2231_value(exact) == f"{name}-2018.bak"


@pytest.mark.parametrize("field,value", [
    ("set_name", "a\nb"), ("set_name", "evil\u202egnp.exe"), ("set_name", "x\u2066y"),
    ("set_name", "nul\x00"), ("set_name", "zero\u200bwidth"), ("set_name", "   "),
    ("remark", "line\rbreak"), ("remark", "rlo\u202e"), ("remark", "sep\u2028"),
])
async def test_control_and_bidi_characters_in_names_are_refused(
        owners: NATS, field: str, value: str) -> None:
    owner = await member(owners, f"bidi{uuid.uuid4().hex[:8]}")
    with pytest.raises(BadRequest, match=rf"at `\$\.{field}`"):  # the field is named
        await owner.storage.call_raw("begin_upload", begin_body(owner, **{field: value}))


async def test_base_version_is_bounded(owners: NATS) -> None:
    owner = await member(owners, "basebound")
    for base in ["v" * 65, "../x", "a b", "x" * 100_000]:
        with pytest.raises(BadRequest, match="base_version"):
            await owner.storage.call_raw("begin_upload", begin_body(owner, base_version=base))


def begin_body(owner: Uploader, **fields: str) -> bytes:
    """A begin_upload request as raw JSON, with some fields as the attacker wants them."""
    return msgspec.json.encode({
        "command_id": cid(), "session": owner.session, "set_id": SET, "year": 2018,
        "period": 1, "size": 10, "sha256": sha(b"x" * 10), "set_name": "n", **fields})


async def test_the_cli_saves_a_download_only_into_the_current_folder(
        owners: NATS, settings: Settings, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    owner = await member(owners, "pathy")
    await owner.put(b"books" * 100, tmp_path, name="../../x")
    here = tmp_path / "a" / "b" / "c"
    here.mkdir(parents=True)
    monkeypatch.chdir(here)
    c = cli.Client(cli.over_nats(owners, timeout=10),
                   settings.with_overrides(home=str(tmp_path / "home")), Console(quiet=True),
                   as_json=True)
    c.saved = Saved(member_id=owner.member_id, account="pathy", session=owner.session)
    path = await cli.fetch(c, owner_id=None, set_id=SET, year=2018, version=None, out=None)
    assert path.resolve().parent == here
    assert path.read_bytes() == b"books" * 100
    assert not (tmp_path / "a" / "x-2018.bak").exists()


# ---- what the S3 server itself enforces (the design above does not rely on it) ---------------

async def test_what_seaweedfs_enforces_on_presigned_puts(settings: Settings) -> None:
    """Measured finding, also written in services/storage/objects.py: a signed length
    refuses another length only; a signed SHA-256 checksum refuses other bytes and a PUT
    without it; a part PUT after its multipart upload completed is refused."""
    good, same_length, short = b"g" * 1000, b"b" * 1000, b"s" * 500
    digest = base64.b64encode(hashlib.sha256(good).digest()).decode()
    signed = {"x-amz-checksum-sha256": digest}
    async with s3_client(settings) as s3, aiohttp.ClientSession() as http:
        async def presign(key: str, **params: object) -> str:
            url: str = await s3.generate_presigned_url(
                "put_object", Params={"Bucket": settings.s3_bucket, "Key": key, **params},
                ExpiresIn=60)
            return url

        async def put(url: str, data: bytes, headers: dict[str, str] | None = None) -> int:
            async with http.put(url, data=data, headers=headers or {}) as reply:
                return reply.status

        by_length = await presign("probe/length", ContentLength=1000)
        assert await put(by_length, short) == 403
        assert await put(by_length, same_length) == 200  # same length, other bytes: taken
        by_sum = await presign("probe/sum", ChecksumSHA256=digest)
        assert await put(by_sum, good) == 403  # the signed header must be sent
        assert await put(by_sum, same_length, signed) == 400  # BadDigest
        assert await put(by_sum, good, signed) == 200
        plain = await presign("probe/plain")
        assert await put(plain, good) == 200
        assert await put(plain, same_length) == 200  # what staging plus the copy is for
        assert await part_after_completion(s3, http, settings.s3_bucket) == 404


async def part_after_completion(s3: Any, http: aiohttp.ClientSession, bucket: str) -> int:
    """The status of a part PUT to a multipart upload that has been completed."""
    started = await s3.create_multipart_upload(Bucket=bucket, Key="probe/multi")
    url = await s3.generate_presigned_url("upload_part", Params={
        "Bucket": bucket, "Key": "probe/multi", "UploadId": started["UploadId"],
        "PartNumber": 1}, ExpiresIn=60)
    async with http.put(url, data=b"p" * 1000) as first:
        etag = first.headers["ETag"]
    await s3.complete_multipart_upload(
        Bucket=bucket, Key="probe/multi", UploadId=started["UploadId"],
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]})
    async with http.put(url, data=b"q" * 1000) as again:
        return again.status
