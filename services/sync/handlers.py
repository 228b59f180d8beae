"""sync's handlers: decode → check the device → load → decide → append → reply.

A sync upload is storage's: sync checks the device, the set-year and its lease, then asks
storage (request-reply, with the member's own session) to reserve and later verify the
version, and records the verified version in the set-year (`VersionSynced`), where the
conflict rule is decided under the set-year's OCC.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

import asyncpg
import msgspec

from contracts.storage import (
    BeginUpload,
    CompleteUpload,
    DownloadRequest,
    DownloadTicket,
    NoSuchUpload,
    NoSuchVersion,
    StorageClient,
    UploadPlan,
    VersionInfo,
    VersionsRequest,
)
from contracts.sync import (
    AnySyncEvent,
    BeginSync,
    CompleteSync,
    DeviceInfo,
    DeviceList,
    DeviceRegisteredReply,
    DevicesRequest,
    DeviceVersion,
    Done,
    LeaseInfo,
    LeaseRenewed,
    LeaseReply,
    LeaseTaken,
    OnSetYear,
    Pull,
    RegisterDevice,
    RevokeDevice,
    SetYearEvent,
    SetYearStatus,
    StatusRequest,
    SyncChanged,
    SyncClient,
    Synced,
    SyncEvent,
    SyncStatus,
    TakeLease,
    TurnOn,
    VersionSynced,
    device_registration,
    device_revocation,
    device_subject,
    device_subjects,
    set_year_id,
    set_year_subject,
    set_year_subjects,
)
from runtime.commands import Command, Fold, Pipeline, Step
from runtime.eventstore import EventStore, Outgoing
from runtime.projector import Projector
from runtime.service import Call, Endpoint
from runtime.tokens import Sessions
from services.sync import domain, tables
from services.sync.domain import Acting, Device, SetYear

_decoder = msgspec.json.Decoder(AnySyncEvent)
SET_YEAR: Fold[SetYear, SyncEvent] = Fold(_decoder, domain.evolve, SetYear())
DEVICE: Fold[Device, SyncEvent] = Fold(_decoder, domain.evolve_device, Device())
_DEVICES = uuid.UUID("5c0e9a7d-3b41-4f6e-9d2a-8e1f7b6c5a43")
R = TypeVar("R")
Decide = Callable[[SetYear, Acting], list[SetYearEvent]]


def storage_command(cmd: Command) -> str:
    """The command id sync gives storage for one sync command: a retry of the sync
    command is a retry of storage's (the same reservation, the same verified version)."""
    return f"sync-{cmd.key[:48]}"


class Sync:
    """The sync service's operations."""

    def __init__(self, events: EventStore, commands: Pipeline, sessions: Sessions,
                 storage: StorageClient, pool: asyncpg.Pool, projector: Projector, *,
                 lease_ttl: timedelta, schema: str = "sync") -> None:
        self.events = events
        self.commands = commands
        self.sessions = sessions
        self.storage = storage
        self.pool = pool
        self.projector = projector
        self.lease_ttl = lease_ttl
        self.schema = schema
        # A registration never changes once in the log, so it is read once per device;
        # the revocation is read on every request.
        self._registered: dict[str, Device] = {}

    def endpoints(self) -> list[Endpoint[Any, Any]]:
        """Every operation of the service, each with its handler."""
        return [
            Endpoint(SyncClient.register_device, self.register_device),
            Endpoint(SyncClient.revoke_device, self.revoke_device),
            Endpoint(SyncClient.devices, self.devices),
            Endpoint(SyncClient.turn_on, self.turn_on),
            Endpoint(SyncClient.turn_off, self.turn_off),
            Endpoint(SyncClient.take_lease, self.take_lease),
            Endpoint(SyncClient.renew_lease, self.renew_lease),
            Endpoint(SyncClient.release_lease, self.release_lease),
            Endpoint(SyncClient.break_lease, self.break_lease),
            Endpoint(SyncClient.begin_upload, self.begin_upload),
            Endpoint(SyncClient.complete_upload, self.complete_upload),
            Endpoint(SyncClient.pull, self.pull),
            Endpoint(SyncClient.status, self.status),
        ]

    # ---- who acts ---------------------------------------------------------------------

    async def _member(self, session: str, call: Call) -> str:
        return await self.sessions.member(session, now=call.received_at)

    async def device(self, member_id: str, device_id: str) -> Device:
        """The member's device if it may act now."""
        return domain.usable(await self._device_facts(device_id), member_id)

    async def _device_facts(self, device_id: str) -> Device:
        """A device as the log says now. Its revocation is looked for on every request
        (one direct get): a revocation that has answered holds in every instance from the
        next request on, with nothing to invalidate."""
        device, revoked = await asyncio.gather(
            self._registration(device_id),
            self.events.last_event_on(device_revocation(device_id)))
        if revoked is not None:
            device = domain.evolve_device(device, _decoder.decode(revoked.data))
        return device

    async def _registration(self, device_id: str) -> Device:
        known = self._registered.get(device_id)
        if known is not None:
            return known
        # A load, not a bare direct get: it opens the name sealed as personal data.
        stored = await self.events.load(device_registration(device_id))
        if not stored:
            return Device()  # not kept: it may be registered a moment later
        device = domain.evolve_device(Device(), _decoder.decode(stored[-1].data))
        if len(self._registered) >= 100_000:
            self._registered.pop(next(iter(self._registered)))
        self._registered[device_id] = device
        return device

    async def _acting(self, req: OnSetYear, call: Call) -> Acting:
        # The session's and the device's checks in the log at once (each is a direct
        # get); nothing is done before both passed.
        member, device = await asyncio.gather(self._member(req.session, call),
                                              self._device_facts(req.device_id))
        return Acting(set_year_id=set_year_id(member, req.set_id, req.year), member_id=member,
                      set_id=req.set_id, year=req.year, device=domain.usable(device, member),
                      at=call.received_at)

    async def _run(self, operation: str, req: Any, call: Call, caller: str,
                   body: Callable[[Command], Awaitable[R]]) -> R:
        return await self.commands.run(operation, req, caller=caller,
                                       correlation_id=call.correlation_id,
                                       client_address=call.client_address, body=body)

    async def _set_year(self, act: Acting) -> SetYear:
        state, _ = await self.events.state(set_year_subjects(act.set_year_id), _decoder,
                                           domain.evolve, SetYear())
        return state

    async def _step(self, cmd: Command, act: Acting,
                    decide: Callable[[SetYear], Sequence[SetYearEvent]]
                    ) -> Step[SetYear, SyncEvent]:
        sy = act.set_year_id
        return await self.commands.step(cmd, set_year_subjects(sy), SET_YEAR, lambda state: [
            Outgoing(subject=set_year_subject(sy, e), event=e) for e in decide(state)])

    async def _on_set_year(self, operation: str, req: OnSetYear, call: Call,
                           decide: Decide) -> Step[SetYear, SyncEvent]:
        act = await self._acting(req, call)

        async def body(cmd: Command) -> Step[SetYear, SyncEvent]:
            return await self._step(cmd, act, lambda state: decide(state, act))

        return await self._run(operation, req, call, act.member_id, body)

    # ---- devices ------------------------------------------------------------------------

    async def register_device(self, req: RegisterDevice, call: Call) -> DeviceRegisteredReply:
        member = await self._member(req.session, call)

        async def body(cmd: Command) -> DeviceRegisteredReply:
            # Named by the command's key (the caller's id in it): a retry finds the device
            # it registered, and no caller can name another member's.
            device_id = str(uuid.uuid5(_DEVICES, cmd.key))
            registered = domain.decide_register(device_id=device_id, member_id=member,
                                                name=req.name, at=call.received_at)
            step = await self.commands.step(cmd, device_subjects(device_id), DEVICE, lambda _: [
                Outgoing(subject=device_subject(device_id, registered), event=registered)])
            return DeviceRegisteredReply(device_id=device_id, name=step.state.name,
                                         seq=step.seq)

        return await self._run("register_device", req, call, member, body)

    async def revoke_device(self, req: RevokeDevice, call: Call) -> Done:
        member = await self._member(req.session, call)
        if req.by_device is not None:
            await self.device(member, req.by_device)

        async def body(cmd: Command) -> Done:
            step = await self.commands.step(
                cmd, device_subjects(req.device_id), DEVICE, lambda device: [
                    Outgoing(subject=device_subject(req.device_id, e), event=e)
                    for e in domain.decide_revoke(device, member_id=member,
                                                  by_device=req.by_device,
                                                  at=call.received_at)])
            return Done(seq=step.seq)

        return await self._run("revoke_device", req, call, member, body)

    async def devices(self, req: DevicesRequest, call: Call) -> DeviceList:
        member = await self._member(req.session, call)
        await self._fresh(req.seq)
        rows = await tables.devices_of(self.pool, self.schema, member)
        return DeviceList(devices=[DeviceInfo(
            device_id=r["device_id"], name=r["name"], first_seen=r["first_seen"],
            last_seen=r["last_seen"], revoked_at=r["revoked_at"]) for r in rows])

    # ---- sync on and off ------------------------------------------------------------------

    async def turn_on(self, req: TurnOn, call: Call) -> SyncChanged:
        act = await self._acting(req, call)

        async def body(cmd: Command) -> SyncChanged:
            latest = await self._newest(req.session, req.set_id, req.year)
            step = await self._step(cmd, act, lambda state: domain.decide_turn_on(
                state, act, set_name=req.set_name, latest=latest))
            return SyncChanged(on=step.state.on, current=step.state.current, seq=step.seq)

        return await self._run("turn_on", req, call, act.member_id, body)

    async def _newest(self, session: str, set_id: str, year: int) -> VersionInfo | None:
        listing = await self.storage.versions(VersionsRequest(session=session, set_id=set_id,
                                                              year=year))
        return listing.versions[0] if listing.versions else None

    async def turn_off(self, req: OnSetYear, call: Call) -> SyncChanged:
        step = await self._on_set_year("turn_off", req, call, domain.decide_turn_off)
        return SyncChanged(on=False, current=step.state.current, seq=step.seq)

    # ---- the lease ----------------------------------------------------------------------

    def _ttl(self, req: TakeLease) -> timedelta:
        return timedelta(seconds=req.ttl_s) if req.ttl_s is not None else self.lease_ttl

    async def take_lease(self, req: TakeLease, call: Call) -> LeaseReply:
        step = await self._on_set_year("take_lease", req, call, lambda state, act: (
            domain.decide_take(state, act, lease_id=str(uuid.uuid4()), ttl=self._ttl(req))))
        return LeaseReply(lease=lease_after(step), seq=step.seq)

    async def renew_lease(self, req: TakeLease, call: Call) -> LeaseReply:
        step = await self._on_set_year("renew_lease", req, call, lambda state, act: (
            domain.decide_renew(state, act, ttl=self._ttl(req))))
        return LeaseReply(lease=lease_after(step), seq=step.seq)

    async def release_lease(self, req: OnSetYear, call: Call) -> LeaseReply:
        step = await self._on_set_year("release_lease", req, call, domain.decide_release)
        return LeaseReply(lease=None, seq=step.seq)

    async def break_lease(self, req: OnSetYear, call: Call) -> LeaseReply:
        step = await self._on_set_year("break_lease", req, call, domain.decide_break)
        return LeaseReply(lease=None, seq=step.seq)

    async def expire(self, row: asyncpg.Record, now: datetime, call: Call) -> None:
        """Record the end of one lease that ran out (the sweeper's command; a take may
        have recorded it first, and then this appends nothing)."""
        act = Acting(set_year_id=row["set_year_id"], member_id=row["member_id"],
                     set_id=row["set_id"], year=row["year"],
                     device=Device(device_id=row["lease_device"]), at=now)
        cmd = self.commands.internal(f"expire-{row['lease_id']}",
                                     correlation_id=call.correlation_id, actor="sync")
        await self._step(cmd, act, lambda state: domain.decide_expire(
            state, act, row["lease_id"]))

    async def sweep(self, now: datetime, call: Call) -> int:
        """Record every lease that ran out by ``now``; how many were found."""
        rows = await tables.ended_leases(self.pool, self.schema, now)
        for row in rows:
            await self.expire(row, now, call)
        return len(rows)

    # ---- versions ---------------------------------------------------------------------

    async def begin_upload(self, req: BeginSync, call: Call) -> UploadPlan:
        act = await self._acting(req, call)

        async def body(cmd: Command) -> UploadPlan:
            domain.may_upload(await self._set_year(act), act)
            return await self.storage.begin_upload(BeginUpload(
                command_id=storage_command(cmd), session=req.session, set_id=req.set_id,
                set_name=req.set_name, year=req.year, period=req.period, size=req.size,
                sha256=req.sha256, remark=req.remark, base_version=req.base_version),
                correlation_id=call.correlation_id)

        return await self._run("begin_upload", req, call, act.member_id, body)

    async def complete_upload(self, req: CompleteSync, call: Call) -> Synced:
        act = await self._acting(req, call)

        async def body(cmd: Command) -> Synced:
            domain.may_record(await self._set_year(act))
            version = (await self.storage.complete_upload(CompleteUpload(
                command_id=storage_command(cmd), session=req.session,
                upload_id=req.upload_id), correlation_id=call.correlation_id)).version
            if (version.set_id, version.year) != (req.set_id, req.year):
                raise NoSuchUpload("that upload is of another account set or year")
            versions = (await self.storage.versions(VersionsRequest(
                session=req.session, set_id=req.set_id, year=req.year))).versions
            step = await self._step(cmd, act, lambda state: domain.decide_synced(
                state, act, version, domain.moved_on(state, versions, act.member_id)))
            synced = step.events[-1]
            assert isinstance(synced, VersionSynced)
            return Synced(version=version, conflict=synced.conflict, current=synced.current,
                          seq=step.seq)

        return await self._run("complete_upload", req, call, act.member_id, body)

    async def pull(self, req: Pull, call: Call) -> DownloadTicket:
        """A download of the set-year's current version (or the one asked for): the
        verified bytes storage holds for it, through storage's audited download."""
        act = await self._acting(req, call)

        async def body(cmd: Command) -> DownloadTicket:
            state = await self._set_year(act)
            domain.may_record(state)
            wanted = req.version_id or state.current
            if wanted is None:
                raise NoSuchVersion("nothing was synced for that account set and year yet")
            return await self.storage.download(DownloadRequest(
                command_id=storage_command(cmd), session=req.session, set_id=req.set_id,
                year=req.year, version_id=wanted), correlation_id=call.correlation_id)

        return await self._run("pull", req, call, act.member_id, body)

    # ---- what changed where -------------------------------------------------------------

    async def _fresh(self, seq: int) -> None:
        """Wait for the read model: to the caller's seq, or to the log's end without one
        (a lease taken a moment ago on another device must show)."""
        if not seq:
            last = await self.events.last_on(">")
            seq = last.seq if last is not None else 0
        await self.projector.wait_until(seq)

    async def status(self, req: StatusRequest, call: Call) -> SyncStatus:
        member = await self._member(req.session, call)
        await self._fresh(req.seq)
        rows = await tables.set_years_of(self.pool, self.schema, member)
        per_device: dict[str, list[DeviceVersion]] = {}
        for v in await tables.device_versions_of(self.pool, self.schema, member):
            per_device.setdefault(v["set_year_id"], []).append(DeviceVersion(
                device_id=v["device_id"], device_name=v["name"], version_id=v["version_id"],
                at=v["at"]))
        return SyncStatus(set_years=[
            _status(r, per_device.get(r["set_year_id"], []), call.received_at) for r in rows])


def _status(row: asyncpg.Record, devices: list[DeviceVersion], now: datetime) -> SetYearStatus:
    lease = None
    if row["lease_until"] is not None and row["lease_until"] > now:
        lease = LeaseInfo(lease_id=row["lease_id"], device_id=row["lease_device"],
                          device_name=row["lease_device_name"], since=row["lease_since"],
                          until=row["lease_until"])
    return SetYearStatus(set_id=row["set_id"], set_name=row["set_name"], year=row["year"],
                         on=row["sync_on"], current=row["current_version"],
                         current_device=row["current_device"], lease=lease, devices=devices)


def lease_after(step: Step[SetYear, SyncEvent]) -> LeaseInfo | None:
    """The lease a take or renewal left (from its own events, so a repeat answers the
    same lease)."""
    match step.events[-1] if step.events else None:
        case LeaseTaken() as taken:
            return LeaseInfo(lease_id=taken.lease_id, device_id=taken.device_id,
                             device_name=taken.device_name, since=taken.at, until=taken.until)
        case LeaseRenewed() as renewed:
            held = step.state.lease
            if held is not None and held.lease_id == renewed.lease_id:
                return msgspec.structs.replace(held, until=renewed.until)
    return None
