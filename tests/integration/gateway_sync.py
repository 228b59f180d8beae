"""The gateway matrix's cases for cloud sync (`sync/*`): the world they stand on (a member
of their own with three devices and set-years in every state) and one case per operation
and declared error. `test_gateway_matrix.py` runs them with the others."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import msgspec

from contracts.storage import MB, UploadPlan
from contracts.sync import (
    BeginSync,
    CompleteSync,
    RegisterDevice,
    RevokeDevice,
    SyncClient,
    TakeLease,
    TurnOn,
)
from contracts.transfer import sha256_file, upload
from tests.helpers import cid
from tests.integration.gateway_world import OK, Case

if TYPE_CHECKING:
    from tests.integration.gateway_world import World
    from tests.integration.test_sharing import Person

SET = "synced"
ON, HELD, OFF = 2018, 2030, 2031  # sync on with a version; another device's lease; off
DEVICE_OPS = ("sync/turn_on", "sync/turn_off", "sync/take_lease", "sync/renew_lease",
              "sync/release_lease", "sync/break_lease", "sync/begin_upload",
              "sync/complete_upload", "sync/pull")


def facts(path: Path) -> tuple[int, str]:
    """Size and SHA-256 of a (small) file."""
    return path.stat().st_size, sha256_file(path)


@dataclass
class SyncWorld:
    """A member syncing SET on three machines (one revoked), over NATS."""

    member: Person
    client: SyncClient
    office: str
    home: str
    revoked: str
    years: int = 2040  # the next unused year, for cases that need a set-year of their own

    def fresh_year(self) -> int:
        self.years += 1
        return self.years

    def on(self, device: str, year: int = ON, **fields: Any) -> dict[str, Any]:
        return {"command_id": cid(), "session": self.member.session, "device_id": device,
                "set_id": SET, "year": year, **fields}

    async def device(self, name: str) -> str:
        reply = await self.client.register_device(RegisterDevice(
            command_id=cid(), session=self.member.session, name=name))
        return reply.device_id

    async def turn_on(self, year: int, device: str | None = None) -> None:
        await self.client.turn_on(TurnOn(**self.on(device or self.office, year,
                                                   set_name="123")))

    async def put(self, path: Path, year: int = ON) -> str:
        """A sync upload over NATS; the version."""
        size, digest = facts(path)
        plan = await self.client.begin_upload(BeginSync(**self.on(
            self.office, year, set_name="123", period=1, size=size, sha256=digest)))
        await upload(plan, path)
        done = await self.client.complete_upload(CompleteSync(**self.on(
            self.office, year, upload_id=plan.upload_id)))
        return done.version.version_id


async def sync_world(w: World) -> SyncWorld:
    member = await w.join("Syncer")
    s = SyncWorld(member, SyncClient(w.nc, timeout=30), "", "", "")
    s.office, s.home, s.revoked = (await s.device("office"), await s.device("home"),
                                   await s.device("stolen"))
    await s.client.revoke_device(RevokeDevice(command_id=cid(), session=member.session,
                                              device_id=s.revoked))
    await s.turn_on(ON)
    await s.put(w.file())
    await s.turn_on(HELD)
    await s.client.take_lease(TakeLease(**s.on(s.office, HELD, ttl_s=3600)))
    return s


# What a device operation's request holds besides the device and the set-year.
EXTRA: dict[str, dict[str, Any]] = {
    "sync/turn_on": {"set_name": "123"},
    "sync/begin_upload": {"set_name": "123", "period": 1, "size": 1000, "sha256": "0" * 64},
    "sync/complete_upload": {"upload_id": "no-such-upload"},
}


def body(op: str, s: SyncWorld, device: str, year: int = ON) -> dict[str, Any]:
    """A well-formed request of a device operation, by ``device`` on ``year``."""
    fields = s.on(device, year, **EXTRA.get(op, {}))
    fields.pop("session")
    return fields


def by(op: str, fields: Any) -> Any:
    """A case's act: ``op`` by the sync member with the request ``fields(w)`` makes."""
    async def act(w: World) -> httpx.Response:
        return await w.post(op, fields(w), by=w.sync.member)
    return act


def device_case(op: str, code: str, device: Any, year: int = ON, label: str = "") -> Case:
    status = {"no_such_device": 404, "device_revoked": 403, "sync_off": 409,
              "lease_held": 409, "lease_not_held": 409, "no_lease": 404}[code]
    return Case(op, status, code, by(op, lambda w: body(op, w.sync, device(w.sync), year)),
                label)


# ---- the cases that succeed -------------------------------------------------------------

async def revoke_a_device(w: World) -> httpx.Response:
    fresh = await w.sync.device("spare")
    return await w.post("sync/revoke_device", {"command_id": cid(), "device_id": fresh},
                        by=w.sync.member)


async def on_a_fresh_year(w: World, op: str, *prepare: str) -> httpx.Response:
    s = w.sync
    year = s.fresh_year()
    await s.turn_on(year)
    for step in prepare:
        await getattr(s.client, step)(TakeLease(**s.on(s.office, year)))
    return await w.post(op, body(op, s, s.office, year), by=s.member)


async def turn_on_fresh(w: World) -> httpx.Response:
    return await w.post("sync/turn_on", body("sync/turn_on", w.sync, w.sync.office,
                                             w.sync.fresh_year()), by=w.sync.member)


async def break_anothers(w: World) -> httpx.Response:
    s = w.sync
    year = s.fresh_year()
    await s.turn_on(year)
    await s.client.take_lease(TakeLease(**s.on(s.office, year)))
    return await w.post("sync/break_lease", body("sync/break_lease", s, s.home, year),
                        by=s.member)


async def begin(w: World, path: Path, **fields: Any) -> httpx.Response:
    s = w.sync
    size, digest = facts(path)
    return await w.post("sync/begin_upload", {
        **body("sync/begin_upload", s, s.office), "size": size, "sha256": digest, **fields},
        by=s.member)


async def complete(w: World, upload_id: str) -> httpx.Response:
    s = w.sync
    return await w.post("sync/complete_upload", {
        **body("sync/complete_upload", s, s.office), "upload_id": upload_id}, by=s.member)


async def sync_over_http(w: World) -> httpx.Response:
    path = w.file()
    begun = await begin(w, path)
    await upload(msgspec.json.decode(begun.content, type=UploadPlan), path)
    return await complete(w, begun.json()["upload_id"])


async def begin_again_after_completion(w: World) -> httpx.Response:
    path = w.file()
    fields = {"command_id": cid()}
    begun = await begin(w, path, **fields)
    await upload(msgspec.json.decode(begun.content, type=UploadPlan), path)
    assert (await complete(w, begun.json()["upload_id"])).status_code == 200
    return await begin(w, path, **fields)


async def complete_unsent(w: World) -> httpx.Response:
    return await complete(w, (await begin(w, w.file())).json()["upload_id"])


async def complete_other_bytes(w: World) -> httpx.Response:
    """A multipart upload (parts are 5 MB in the matrix) of other bytes than declared."""
    path = w.file(b"\x02" * (11 * MB // 2))
    begun = await begin(w, path, sha256="0" * 64)
    await upload(msgspec.json.decode(begun.content, type=UploadPlan), path)
    return await complete(w, begun.json()["upload_id"])


SESSION_ONLY = [
    Case("sync/register_device", 200, OK, lambda w: w.post(
        "sync/register_device", {"command_id": cid(), "name": "laptop"}, by=w.sync.member)),
    Case("sync/devices", 200, OK, lambda w: w.post("sync/devices", by=w.sync.member)),
    Case("sync/status", 200, OK, lambda w: w.post("sync/status", by=w.sync.member)),
]
SYNC = [
    *SESSION_ONLY,
    Case("sync/revoke_device", 200, OK, revoke_a_device),
    Case("sync/revoke_device", 404, "no_such_device", by("sync/revoke_device", lambda w: {
        "command_id": cid(), "device_id": str(uuid.uuid4())})),
    Case("sync/revoke_device", 403, "device_revoked", by("sync/revoke_device", lambda w: {
        "command_id": cid(), "device_id": w.sync.home, "by_device": w.sync.revoked}),
        "from a revoked device"),
    Case("sync/turn_on", 200, OK, turn_on_fresh),
    Case("sync/turn_off", 200, OK, lambda w: on_a_fresh_year(w, "sync/turn_off")),
    Case("sync/take_lease", 200, OK, lambda w: on_a_fresh_year(w, "sync/take_lease")),
    Case("sync/renew_lease", 200, OK, lambda w: on_a_fresh_year(
        w, "sync/renew_lease", "take_lease")),
    Case("sync/release_lease", 200, OK, lambda w: on_a_fresh_year(
        w, "sync/release_lease", "take_lease")),
    Case("sync/break_lease", 200, OK, break_anothers),
    Case("sync/begin_upload", 200, OK, lambda w: begin(w, w.file())),
    Case("sync/begin_upload", 409, "quota_exceeded", lambda w: begin(
        w, w.file(), size=401 * MB)),
    Case("sync/begin_upload", 404, "no_such_upload", begin_again_after_completion,
         "the same command again after its upload completed"),
    Case("sync/complete_upload", 200, OK, sync_over_http),
    Case("sync/complete_upload", 404, "no_such_upload", lambda w: complete(w, "no-such")),
    Case("sync/complete_upload", 400, "upload_incomplete", complete_unsent),
    Case("sync/complete_upload", 400, "checksum_mismatch", complete_other_bytes),
    Case("sync/pull", 200, OK, by("sync/pull", lambda w: body("sync/pull", w.sync,
                                                               w.sync.home))),
    Case("sync/pull", 404, "no_such_version", by("sync/pull", lambda w: {
        **body("sync/pull", w.sync, w.sync.home), "version_id": "no-such-version"})),
    *(device_case(op, "no_such_device", lambda s: str(uuid.uuid4())) for op in DEVICE_OPS),
    *(device_case(op, "device_revoked", lambda s: s.revoked) for op in DEVICE_OPS),
    *(device_case(op, "sync_off", lambda s: s.office, OFF)
      for op in DEVICE_OPS if op != "sync/turn_on"),
    *(device_case(op, "lease_held", lambda s: s.home, HELD)
      for op in ("sync/turn_off", "sync/take_lease", "sync/begin_upload")),
    *(device_case(op, "lease_not_held", lambda s: s.home)
      for op in ("sync/renew_lease", "sync/release_lease")),
    device_case("sync/break_lease", "no_lease", lambda s: s.home),
]
def own_request(op: str) -> Any:
    return lambda w: body(op, w.sync, w.sync.office)


# A well-formed request of every sync operation, about the sync member's own things: only
# the session may be wrong (the session matrix).
AS_OWNER: dict[str, Any] = {
    "sync/register_device": lambda w: {"command_id": cid(), "name": "laptop"},
    "sync/revoke_device": lambda w: {"command_id": cid(), "device_id": w.sync.home},
    "sync/devices": lambda w: {},
    "sync/status": lambda w: {},
    **{op: own_request(op) for op in DEVICE_OPS},
}


# ---- worlds of their own: S3 down, reservations and links expired -------------------------

async def prepared(w: World) -> None:
    """The sync member and world, made over NATS while storage answers."""
    w.sync = await sync_world(w)


async def begin_open(w: World) -> str:
    """A sync upload begun (nothing PUT): its upload id."""
    begun = await begin(w, w.file())
    assert begun.status_code == 200, begun.text
    return str(begun.json()["upload_id"])


S3_DOWN = [
    Case("sync/begin_upload", 503, "storage_unavailable", lambda w: begin(w, w.file())),
    Case("sync/complete_upload", 503, "storage_unavailable", lambda w: complete(
        w, w.repeated["sync"]["upload_id"])),
]
EXPIRED = [
    Case("sync/begin_upload", 409, "upload_expired", lambda w: begin(
        w, Path(w.repeated["sync"]["path"]), command_id=w.repeated["sync"]["command_id"]),
         "the same command again after its reservation expired"),
    Case("sync/complete_upload", 409, "upload_expired", lambda w: complete(
        w, w.repeated["sync"]["upload_id"])),
    Case("sync/pull", 409, "download_expired", lambda w: w.post(
        "sync/pull", w.repeated["pull"], by=w.sync.member),
         "the same pull command after its link expired"),
]
