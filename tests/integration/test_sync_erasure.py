"""A member with devices, sync on and a lease held deletes their account: against real
NATS, PostgreSQL and SeaweedFS, every device is revoked and every sync stopped (events in
the log, once however often the erasure is delivered), sync's tables keep none of their
names, and sync's read model rebuilt from the log equals the live one."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from nats.aio.client import Client as NATS

from contracts.identity import DeleteMember, IdentityClient, InvalidToken, erasures
from contracts.sync import (
    DeviceRevokedError,
    DevicesRequest,
    RegisterDevice,
    StatusRequest,
    SyncClient,
    TakeLease,
    TurnOn,
    device_subjects,
    set_year_id,
    set_year_subjects,
)
from runtime.eventstore import EventStore
from runtime.replay import compare, rebuild
from runtime.settings import Settings
from services.registry import named
from services.sync.erasure import ErasurePolicy
from services.sync.projection import SyncProjection
from services.sync.tables import TABLES
from tests.helpers import PASSWORD, cid, join
from tests.services import running

OFFICE, HOME, SET_NAME = "张三的办公室电脑", "张三的家里电脑", "张三的账套"
SET, LEASED, IDLE = "set-erased", 2024, 2025


async def sync_rows(pool: asyncpg.Pool) -> list[str]:
    """Every row of sync's tables, as text."""
    return [r["r"] for table in TABLES
            for r in await pool.fetch(f"SELECT t::text AS r FROM sync.{table} t")]


async def types_on(events: EventStore, subjects: str) -> list[str]:
    return [e.type for e in await events.load(subjects)]


async def ended(events: EventStore, member: str, devices: list[str]) -> bool:
    """Whether every device is revoked and both set-years were turned off."""
    revoked = [(await types_on(events, device_subjects(d)))[-1] == "DeviceRevoked"
               for d in devices]
    stopped = [(await types_on(events, set_year_subjects(set_year_id(member, SET, y))))[-1]
               == "SyncTurnedOff" for y in (LEASED, IDLE)]
    return all(revoked) and all(stopped)


async def sync_log(events: EventStore) -> int:
    last = await events.last_on("evt.sync.>")
    return last.seq if last is not None else 0


async def test_an_erased_members_devices_are_revoked_and_nothing_of_their_names_stays(
        nc: NATS, pool: asyncpg.Pool, events: EventStore, all_services: Settings) -> None:
    identity, sync = IdentityClient(nc, timeout=20), SyncClient(nc, timeout=20)
    me = await join(identity, "erase.sync@example")
    devices = [(await sync.register_device(RegisterDevice(
        command_id=cid(), session=me.session, name=name))).device_id for name in (OFFICE, HOME)]
    office = {"session": me.session, "device_id": devices[0], "set_id": SET}
    for year in (LEASED, IDLE):
        await sync.turn_on(TurnOn(command_id=cid(), **office, year=year, set_name=SET_NAME))
    taken = await sync.take_lease(TakeLease(command_id=cid(), **office, year=LEASED,
                                            ttl_s=3600))
    assert taken.lease is not None
    await sync.status(StatusRequest(session=me.session))  # the read model is at the end
    assert [t for t in (OFFICE, HOME, SET_NAME) if any(t in r for r in await sync_rows(pool))]

    await identity.delete_member(DeleteMember(command_id=cid(), session=me.session,
                                              password=PASSWORD))
    for _ in range(200):
        if await ended(events, me.member_id, devices):
            break
        await asyncio.sleep(0.1)
    assert await ended(events, me.member_id, devices)
    leased = set_year_subjects(set_year_id(me.member_id, SET, LEASED))
    assert (await types_on(events, leased))[-3:] == ["LeaseTaken", "LeaseReleased",
                                                     "SyncTurnedOff"]

    async with running(named("sync").build, all_services, nc, pool, events) as other:
        # Refused: the session, and each device in an instance that erased nothing.
        with pytest.raises(InvalidToken):
            await sync.devices(DevicesRequest(session=me.session))
        for device in devices:
            with pytest.raises(DeviceRevokedError):
                await other.app.device(me.member_id, device)
        # A redelivery of the erasure adds nothing.
        before = await sync_log(events)
        (erased,) = await events.load(erasures(me.member_id))
        policy = ErasurePolicy(other.app.commands, other.app.projector)
        async with pool.acquire() as conn:
            await policy.apply(conn, "sync", erased)
        assert await sync_log(events) == before

    # The live read model, once at the log's end, holds none of the names...
    someone = await join(identity, "someone.else@example")
    await sync.status(StatusRequest(session=someone.session))
    rows = await sync_rows(pool)
    for text in (OFFICE, HOME, SET_NAME):
        assert not [r for r in rows if text in r], text
    revoked = await pool.fetch("SELECT name, revoked_at FROM sync.devices "
                               "WHERE member_id = $1", me.member_id)
    assert [(r["name"], r["revoked_at"] is not None) for r in revoked] == [("", True)] * 2
    off = await pool.fetch("SELECT sync_on, lease_id FROM sync.set_years "
                           "WHERE member_id = $1", me.member_id)
    assert [(r["sync_on"], r["lease_id"]) for r in off] == [(False, None)] * 2
    # ...and equals a rebuild from the log, where the sealed names now read "".
    await rebuild(nc, pool, SyncProjection(), "sync_erased_rebuild")
    assert await compare(pool, "sync", "sync_erased_rebuild", TABLES) == []
