"""The cloud-sync part of `ledgershare demo`: two machines of one member.

The office machine syncs a version up under its lease while the home machine sees who
holds it and opens the set read-only; the home machine's upload from the older version is
kept as a conflict; then the office machine stops renewing a short lease (3 s, asked for
by the demo) and the home machine gets the lease once it has run out.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from contracts.storage import StorageClient, megabytes
from contracts.sync import (
    BeginSync,
    CompleteSync,
    OnSetYear,
    Pull,
    RegisterDevice,
    RevokeDevice,
    StatusRequest,
    SyncClient,
    Synced,
    TakeLease,
    TurnOn,
)
from contracts.transfer import download, upload

if TYPE_CHECKING:
    from cli.demo import Member, Walkthrough

YEAR = 2018
SHORT_LEASE_S = 3  # the demo's lease: long enough to be seen, short enough to wait out


class Machine:
    """One machine of the desktop program, registered as a device of the member."""

    def __init__(self, name: str, device_id: str) -> None:
        self.name, self.device_id = name, device_id
        self.version = ""  # the version its local copy is at


class SyncWalk:
    """Member A's office and home machines through cloud sync."""

    def __init__(self, w: Walkthrough) -> None:
        self.w = w
        storage: StorageClient = w.storage
        self.sync = SyncClient(storage.nc, timeout=30)
        self.me: Member = w.a

    def on(self, m: Machine, **fields: Any) -> dict[str, Any]:
        from cli.demo import SET_ID, new_id

        return {"command_id": new_id(), "session": self.me.session,
                "device_id": m.device_id, "set_id": SET_ID, "year": YEAR, **fields}

    async def run(self) -> None:
        office, home = await self.machine("办公室电脑"), await self.machine("家里电脑")
        await self.turn_on(office)
        await self.take(office, ttl_s=60)
        await self.w.refused(f"{home.name} asks for the lease",
                             self.sync.take_lease(TakeLease(**self.on(home))))
        await self.pull(home)
        await self.put(office, period=5)
        await self.sync.release_lease(OnSetYear(**self.on(office)))
        self.w.step(f"{office.name} syncs and closes the set: releases the lease", "released")
        await self.take(home, ttl_s=60)
        await self.put(home, period=6)
        await self.sync.release_lease(OnSetYear(**self.on(home)))
        await self.expiry(office, home)
        await self.status()
        await self.revoke(office, home)

    async def machine(self, name: str) -> Machine:
        from cli.demo import new_id

        reply = await self.sync.register_device(RegisterDevice(
            command_id=new_id(), session=self.me.session, name=name))
        self.w.step(f"{self.me.account}'s machine registers as device {name}",
                    f"device {reply.device_id[:8]}…")
        return Machine(name, reply.device_id)

    async def turn_on(self, m: Machine) -> None:
        reply = await self.sync.turn_on(TurnOn(**self.on(m, set_name="123")))
        m.version = reply.current or ""
        self.w.step(f"{m.name} turns cloud sync on for set 123, {YEAR}",
                    f"on; current version {(reply.current or '-')[:8]}…")

    async def take(self, m: Machine, *, ttl_s: int) -> None:
        reply = await self.sync.take_lease(TakeLease(**self.on(m, ttl_s=ttl_s)))
        lease = reply.lease
        assert lease is not None
        self.w.step(f"{m.name} opens the set to work on it: takes the lease ({ttl_s} s, "
                    "renewed while it works)",
                    f"in use on {lease.device_name} since {lease.since:%H:%M:%S} (UTC)")

    async def pull(self, m: Machine) -> None:
        ticket = await self.sync.pull(Pull(**self.on(m)))
        await download(ticket.url, self.w.folder / "home.bak", size=ticket.version.size)
        m.version = ticket.version.version_id
        self.w.step(f"{m.name} opens it read-only meanwhile: pulls the current version",
                    f"version {m.version[:8]}…, {megabytes(ticket.version.size)}, the "
                    "verified bytes")

    async def put(self, m: Machine, *, period: int) -> Synced:
        from cli.demo import account_set_file, facts

        path = account_set_file(self.w.folder / f"sync-{period}.bak", year=YEAR,
                                period=period)
        size, digest = await asyncio.to_thread(facts, path)
        plan = await self.sync.begin_upload(BeginSync(**self.on(
            m, set_name="123", period=period, size=size, sha256=digest,
            remark=f"{YEAR}年{period}期", base_version=m.version or None)))
        await upload(plan, Path(path))
        done = await self.sync.complete_upload(CompleteSync(**self.on(
            m, upload_id=plan.upload_id)))
        verdict = (f"kept as a conflicting version beside the current "
                   f"{done.current[:8]}…, nothing overwritten" if done.conflict
                   else "now the current version")
        self.w.step(f"{m.name} syncs up {YEAR}年{period}期 based on version "
                    f"{(m.version or '-')[:8]}…",
                    f"version {done.version.version_id[:8]}…: {verdict}; drive charged "
                    f"{megabytes(size)}")
        m.version = done.current if not done.conflict else m.version
        return done

    async def expiry(self, office: Machine, home: Machine) -> None:
        await self.take(office, ttl_s=SHORT_LEASE_S)
        self.w.step(f"{office.name} goes offline and stops renewing its lease",
                    f"the lease runs out {SHORT_LEASE_S} s after it was taken")
        await self.w.refused(f"{home.name} asks for the lease at once",
                             self.sync.take_lease(TakeLease(**self.on(home))))
        await asyncio.sleep(SHORT_LEASE_S + 0.5)
        reply = await self.sync.take_lease(TakeLease(**self.on(home, ttl_s=60)))
        assert reply.lease is not None
        self.w.step(f"{home.name} asks again at {datetime.now(UTC):%H:%M:%S} (UTC)",
                    f"granted: the office lease expired (recorded as LeaseExpired), in use "
                    f"on {reply.lease.device_name} now")

    async def status(self) -> None:
        listed = await self.sync.status(StatusRequest(session=self.me.session))
        rows = "; ".join(
            f"{s.set_name}/{s.year}: current {(s.current or '-')[:8]}…, lease "
            f"{s.lease.device_name if s.lease else 'free'}, last synced " + ", ".join(
                f"{d.device_name} {d.version_id[:8]}…" for d in s.devices)
            for s in listed.set_years)
        self.w.step(f"{self.me.account} looks at what changed where (sync status)", rows)

    async def revoke(self, office: Machine, home: Machine) -> None:
        from cli.demo import new_id

        await self.sync.revoke_device(RevokeDevice(
            command_id=new_id(), session=self.me.session, device_id=office.device_id,
            by_device=home.device_id))
        self.w.step(f"{self.me.account} revokes {office.name} from {home.name}", "revoked")
        await self.w.refused(f"{office.name} asks for the lease",
                             self.sync.take_lease(TakeLease(**self.on(office))))
