"""Cloud sync against real NATS, PostgreSQL and SeaweedFS: devices, leases, the conflict
rule, quota, revocation everywhere, restarts, and the read model against a replay."""

from __future__ import annotations

import asyncio
import io
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from nats.aio.client import Client as NATS
from rich.console import Console

from cli.demo import Walkthrough
from cli.syncdemo import SyncWalk
from contracts.errors import LedgerError
from contracts.identity import IdentityClient
from contracts.storage import DriveRequest, StorageClient, VersionsRequest
from contracts.sync import (
    BeginSync,
    CompleteSync,
    DeviceRevokedError,
    DevicesRequest,
    LeaseHeld,
    LeaseReply,
    OnSetYear,
    Pull,
    RegisterDevice,
    RevokeDevice,
    StatusRequest,
    SyncClient,
    Synced,
    TakeLease,
    TurnOn,
    set_year_id,
    set_year_subjects,
)
from contracts.transfer import download, sha256_file, upload
from deploy.stack import Stack
from runtime.eventstore import EventStore
from runtime.replay import compare, rebuild
from runtime.service import Call
from runtime.settings import Settings
from services.registry import named
from services.sync.handlers import Sync
from services.sync.projection import SyncProjection
from services.sync.tables import TABLES
from tests.helpers import cid, join
from tests.services import running, service_settings

SET, YEAR = "set-sync", 2024


@dataclass
class Machine:
    """One machine of the desktop program: a device of the member."""

    sync: SyncClient
    session: str
    device_id: str
    name: str

    def on(self, **fields: Any) -> dict[str, Any]:
        return {"command_id": cid(), "session": self.session, "device_id": self.device_id,
                "set_id": SET, "year": YEAR, **fields}

    async def take(self, ttl_s: int | None = None, command_id: str | None = None
                   ) -> LeaseReply:
        return await self.sync.take_lease(TakeLease(**{**self.on(ttl_s=ttl_s),
                                                       "command_id": command_id or cid()}))

    async def put(self, path: Path, base: str | None, period: int = 1) -> Synced:
        """A sync upload: begin, PUT the bytes, complete."""
        size = (await asyncio.to_thread(path.stat)).st_size
        digest = await asyncio.to_thread(sha256_file, path)
        plan = await self.sync.begin_upload(BeginSync(**self.on(
            set_name="账套", period=period, size=size, sha256=digest, base_version=base)))
        await upload(plan, path)
        return await self.sync.complete_upload(CompleteSync(**self.on(
            upload_id=plan.upload_id)))


async def machine(sync: SyncClient, session: str, name: str) -> Machine:
    reply = await sync.register_device(RegisterDevice(command_id=cid(), session=session,
                                                      name=name))
    return Machine(sync, session, reply.device_id, name)


async def two_machines(nc: NATS, account: str) -> tuple[Machine, Machine, str]:
    """A member with an office and a home machine, sync on for SET/YEAR."""
    me = await join(IdentityClient(nc, timeout=10), account)
    sync = SyncClient(nc, timeout=20)
    office, home = (await machine(sync, me.session, "办公室电脑"),
                    await machine(sync, me.session, "家里电脑"))
    await sync.turn_on(TurnOn(**office.on(set_name="账套")))
    return office, home, me.member_id


def file_of(tmp: Path, name: str, size: int = 200_000) -> Path:
    path = tmp / name
    path.write_bytes(os.urandom(size))
    return path


async def types_on(events: EventStore, member: str) -> list[str]:
    return [e.type for e in await events.load(set_year_subjects(set_year_id(member, SET,
                                                                            YEAR)))]


async def test_two_devices_racing_for_a_lease_under_retries_one_wins(
        nc: NATS, events: EventStore, all_services: Settings) -> None:
    office, home, member = await two_machines(nc, "racer")
    ids = {m.device_id: [cid() for _ in range(6)] for m in (office, home)}

    async def attempt(m: Machine, command_id: str) -> LeaseReply | LedgerError:
        try:
            return await m.take(command_id=command_id)
        except LedgerError as err:
            return err

    # Every attempt twice at once under its own command id (a client retrying).
    calls = [attempt(m, c) for m in (office, home) for c in ids[m.device_id] for _ in (1, 2)]
    answers = await asyncio.gather(*calls)
    won = {a.lease.device_id for a in answers if isinstance(a, LeaseReply) and a.lease}
    assert len(won) == 1
    lost = [a for a in answers if isinstance(a, LedgerError)]
    assert lost and all(isinstance(a, LeaseHeld) for a in lost), lost
    # The two sends of one command answer alike.
    for first, second in zip(answers[::2], answers[1::2], strict=True):
        assert type(first) is type(second)
        if isinstance(first, LeaseReply):
            assert first == second
    assert (await types_on(events, member)).count("LeaseTaken") == 1


async def test_a_stale_base_is_kept_as_a_conflict_and_every_sync_is_charged(
        nc: NATS, all_services: Settings, tmp_path: Path) -> None:
    office, home, _ = await two_machines(nc, "stale")
    first = await office.put(file_of(tmp_path, "v1"), base=None)
    assert (first.conflict, first.current) == (False, first.version.version_id)
    v1 = first.version.version_id
    second = await office.put(file_of(tmp_path, "v2"), base=v1, period=2)
    v2 = second.version.version_id
    assert (second.conflict, second.current) == (False, v2)
    # home opened v1 before office synced v2: its upload is kept, and is told v2 is current
    third = await home.put(file_of(tmp_path, "v3"), base=v1, period=3)
    assert (third.conflict, third.current) == (True, v2)
    storage = StorageClient(nc, timeout=10)
    versions = (await storage.versions(VersionsRequest(session=home.session, set_id=SET,
                                                       year=YEAR))).versions
    assert {v.version_id for v in versions} == {v1, v2, third.version.version_id}
    assert (await storage.drive(DriveRequest(session=home.session))).used == 3 * 200_000
    status = (await home.sync.status(StatusRequest(session=home.session,
                                                   seq=third.seq))).set_years
    assert [(s.current, s.current_device) for s in status] == [(v2, office.device_id)]
    assert {d.device_id: d.version_id for d in status[0].devices} == {
        office.device_id: v2, home.device_id: third.version.version_id}
    # Pulling hands home exactly office's verified bytes of the current version.
    ticket = await home.sync.pull(Pull(**home.on()))
    await download(ticket.url, tmp_path / "pulled")
    assert sha256_file(tmp_path / "pulled") == sha256_file(tmp_path / "v2")


async def test_a_sync_upload_needs_the_lease_when_another_device_holds_it(
        nc: NATS, all_services: Settings, tmp_path: Path) -> None:
    office, home, _ = await two_machines(nc, "holder")
    await office.take(ttl_s=60)
    with pytest.raises(LeaseHeld) as held:
        await home.put(file_of(tmp_path, "v1"), base=None)
    assert held.value.details["holder_name"] == "办公室电脑"
    done = await office.put(file_of(tmp_path, "v1"), base=None)
    assert not done.conflict


async def test_a_revoked_device_is_refused_by_every_instance_at_once(
        nc: NATS, pool: asyncpg.Pool, events: EventStore, all_services: Settings,
        tmp_path: Path) -> None:
    office, home, _ = await two_machines(nc, "revoked")
    await office.take(ttl_s=60)
    build = named("sync").build
    async with running(build, all_services, nc, pool, events) as second, \
            running(build, all_services, nc, pool, events) as third:
        await home.sync.revoke_device(RevokeDevice(
            command_id=cid(), session=home.session, device_id=office.device_id,
            by_device=home.device_id))
        call = Call(correlation_id="t", received_at=datetime.now(UTC), headers={})
        # At once: no wait, in the instances that did not serve the revocation too.
        for app in (second.app, third.app):
            for refused in refusals(app, office, call):
                with pytest.raises(DeviceRevokedError):
                    await refused
    devices = (await home.sync.devices(DevicesRequest(session=home.session))).devices
    assert [d.revoked_at is not None for d in devices] == [True, False]


def refusals(app: Sync, m: Machine, call: Call) -> list[Any]:
    """Every device operation, as ``m`` would call it, on one instance."""
    return [app.take_lease(TakeLease(**m.on()), call),
            app.renew_lease(TakeLease(**m.on()), call),
            app.release_lease(OnSetYear(**m.on()), call),
            app.turn_on(TurnOn(**m.on(set_name="x")), call),
            app.begin_upload(BeginSync(**m.on(set_name="x", period=1, size=1,
                                              sha256="0" * 64)), call),
            app.complete_upload(CompleteSync(**m.on(upload_id="u")), call),
            app.pull(Pull(**m.on()), call)]


@pytest.fixture
async def around_sync(settings: Settings, nc: NATS, pool: asyncpg.Pool,
                      events: EventStore) -> AsyncIterator[Settings]:
    """identity and storage running; sync is started and stopped by the test."""
    configured = service_settings(settings)
    async with running(named("identity").build, configured, nc, pool, events), \
            running(named("storage").build, configured, nc, pool, events):
        yield configured


async def test_a_lease_expires_across_restarts_of_sync_and_of_nats_server(
        nc: NATS, pool: asyncpg.Pool, events: EventStore, around_sync: Settings,
        nats_stack: Stack) -> None:
    async with running(named("sync").build, around_sync, nc, pool, events):
        office, home, member = await two_machines(nc, "restarts")
        taken = await office.take(ttl_s=3)
        with pytest.raises(LeaseHeld):
            await home.take()
    # The service is gone, then NATS too: no timer of either survives.
    await asyncio.to_thread(nats_stack.restart, "nats", pause=0.3)
    async with running(named("sync").build, around_sync, nc, pool, events):
        assert taken.lease is not None
        await asyncio.sleep(max(0.0, (taken.lease.until - datetime.now(UTC)).total_seconds()))
        mine = await retrying(lambda: home.take())
    assert mine.lease is not None and mine.lease.device_id == home.device_id
    assert (await types_on(events, member))[-2:] == ["LeaseExpired", "LeaseTaken"]


async def retrying(act: Any) -> LeaseReply:
    """A call retried while the bus reconnects after its restart."""
    for _ in range(50):
        try:
            reply: LeaseReply = await act()
            return reply
        except LedgerError as err:
            if err.code not in ("unavailable", "command_in_progress"):
                raise
            await asyncio.sleep(0.2)
    raise AssertionError("the system did not come back")


async def test_the_sweeper_records_an_ended_lease_with_nobody_asking(
        nc: NATS, pool: asyncpg.Pool, events: EventStore, around_sync: Settings) -> None:
    quick = around_sync.with_overrides(sweep_interval_s=0.2)
    async with running(named("sync").build, quick, nc, pool, events):
        office, _, member = await two_machines(nc, "sweeper")
        await office.take(ttl_s=1)
        for _ in range(100):
            if "LeaseExpired" in await types_on(events, member):
                break
            await asyncio.sleep(0.1)
        assert (await types_on(events, member))[-1] == "LeaseExpired"
        status = await office.sync.status(StatusRequest(session=office.session))
        assert status.set_years[0].lease is None


async def test_the_read_model_rebuilt_from_the_log_equals_the_live_one(
        nc: NATS, pool: asyncpg.Pool, all_services: Settings, tmp_path: Path) -> None:
    office, home, _ = await two_machines(nc, "replayed")
    await office.take(ttl_s=60)
    v1 = (await office.put(file_of(tmp_path, "v1"), base=None)).version.version_id
    await office.sync.release_lease(OnSetYear(**office.on()))
    await home.take(ttl_s=1)
    done = await home.put(file_of(tmp_path, "v2"), base=v1)
    assert done.conflict is False
    revoked = await home.sync.revoke_device(RevokeDevice(
        command_id=cid(), session=home.session, device_id=office.device_id))
    await home.sync.status(StatusRequest(session=home.session, seq=revoked.seq))
    await rebuild(nc, pool, SyncProjection(), "sync_rebuild")
    assert await compare(pool, "sync", "sync_rebuild", TABLES) == []


async def test_the_demo_shows_two_devices_of_one_member(
        nc: NATS, all_services: Settings, tmp_path: Path) -> None:
    out = io.StringIO()
    walk = Walkthrough(nc, Console(file=out, width=400), "7171", tmp_path, all_services)
    await walk.run()
    await SyncWalk(walk).run()
    text = out.getvalue()
    for seen in ("in use on 办公室电脑", "[lease_held]", "kept as a conflicting version",
                 "granted: the office lease expired", "[device_revoked]"):
        assert seen in text, text
