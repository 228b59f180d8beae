"""sync's domain: a member's devices, and one synced set-year (its lease and current
version). Pure: times, ids and what storage holds arrive as arguments.

A lease is valid until the ``until`` its last taking or renewal recorded, judged with the
command's own time: no timer has to survive for a lease to end. Its end is recorded
lazily (`LeaseExpired`), by the next take or by a sweeper, either of which may run in any
instance after any restart.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import TypedDict

import msgspec

from contracts.storage import VersionInfo
from contracts.sync import (
    DeviceRegistered,
    DeviceRevoked,
    DeviceRevokedError,
    LeaseBroken,
    LeaseExpired,
    LeaseHeld,
    LeaseInfo,
    LeaseNotHeld,
    LeaseReleased,
    LeaseRenewed,
    LeaseTaken,
    NoLease,
    NoSuchDevice,
    SetYearEvent,
    SyncEvent,
    SyncOff,
    SyncTurnedOff,
    SyncTurnedOn,
    VersionSynced,
)

r = msgspec.structs.replace


# ---- devices --------------------------------------------------------------------------

class Device(msgspec.Struct, frozen=True, kw_only=True):
    """One machine of a member, as its events say."""

    device_id: str = ""
    member_id: str = ""
    name: str = ""
    revoked: bool = False


def evolve_device(device: Device, event: SyncEvent) -> Device:
    match event:
        case DeviceRegistered(device_id=did, member_id=mid, name=name):
            return Device(device_id=did, member_id=mid, name=name)
        case DeviceRevoked():
            return r(device, revoked=True)
    return device


def usable(device: Device, member_id: str) -> Device:
    """The device, if it is the member's and not revoked."""
    if device.member_id != member_id:
        raise NoSuchDevice("no such device of yours; register this machine first")
    if device.revoked:
        raise DeviceRevokedError("this device was revoked; register the machine again")
    return device


def decide_register(*, device_id: str, member_id: str, name: str,
                    at: datetime) -> DeviceRegistered:
    return DeviceRegistered(device_id=device_id, member_id=member_id, name=name.strip(),
                            at=at)


def decide_revoke(device: Device, *, member_id: str, by_device: str | None,
                  at: datetime) -> list[DeviceRevoked]:
    """Revoke one of the member's devices (a revoked one stays revoked: nothing more)."""
    if device.member_id != member_id:
        raise NoSuchDevice("no such device of yours")
    if device.revoked:
        return []
    return [DeviceRevoked(device_id=device.device_id, member_id=member_id,
                          by_device=by_device, at=at)]


# ---- a synced set-year ----------------------------------------------------------------

class SetYear(msgspec.Struct, frozen=True, kw_only=True):
    """One member's (set, year): sync on or off, the lease, the current version, and each
    device's last synced version."""

    on: bool = False
    set_name: str = ""
    lease: LeaseInfo | None = None
    current: str | None = None
    current_at: datetime | None = None
    current_device: str | None = None
    synced: dict[str, str] = {}


def evolve(state: SetYear, event: SyncEvent) -> SetYear:
    """The set-year after one more event."""
    match event:
        case SyncTurnedOn(set_name=name, current=current, current_at=at):
            return r(state, on=True, set_name=name, current=current, current_at=at)
        case SyncTurnedOff():
            return r(state, on=False, lease=None)
        case LeaseTaken(lease_id=lid, device_id=did, device_name=name, until=until, at=at):
            return r(state, lease=LeaseInfo(lease_id=lid, device_id=did, device_name=name,
                                            since=at, until=until))
        case LeaseRenewed(until=until) if state.lease is not None:
            return r(state, lease=r(state.lease, until=until))
        case LeaseReleased() | LeaseExpired() | LeaseBroken():
            return r(state, lease=None)
        case VersionSynced():
            return _synced(state, event)
    return state


def _synced(state: SetYear, e: VersionSynced) -> SetYear:
    moved = not e.conflict
    return r(state, current=e.current, current_at=e.current_at,
             current_device=e.device_id if moved else state.current_device,
             synced={**state.synced, e.device_id: e.version_id})


def fold(events: Iterable[SyncEvent]) -> SetYear:
    state = SetYear()
    for event in events:
        state = evolve(state, event)
    return state


class Head(TypedDict):
    set_year_id: str
    member_id: str
    set_id: str
    year: int
    device_id: str
    at: datetime


class Acting(msgspec.Struct, frozen=True, kw_only=True):
    """Who acts on which set-year, and when: what every set-year event carries."""

    set_year_id: str
    member_id: str
    set_id: str
    year: int
    device: Device
    at: datetime

    def head(self, device_id: str | None = None) -> Head:
        """The fields every set-year event carries (``device_id``: whose lease it is, when
        not the acting device's)."""
        return {"set_year_id": self.set_year_id, "member_id": self.member_id,
                "set_id": self.set_id, "year": self.year,
                "device_id": device_id or self.device.device_id, "at": self.at}


def live(state: SetYear, now: datetime) -> LeaseInfo | None:
    """The lease, if it is still valid at ``now``."""
    return state.lease if state.lease is not None and state.lease.until > now else None


def _on(state: SetYear) -> None:
    if not state.on:
        raise SyncOff("sync is not on for that account set and year; turn it on first")


def _expired(state: SetYear, act: Acting) -> list[SetYearEvent]:
    """The lease's end, if it ended before now and nobody recorded it yet."""
    lease = state.lease
    if lease is None or lease.until > act.at:
        return []
    return [LeaseExpired(**act.head(lease.device_id), lease_id=lease.lease_id,
                         until=lease.until)]


def held_by_other(state: SetYear, act: Acting) -> None:
    """Refuse while another device holds a live lease."""
    lease = live(state, act.at)
    if lease is not None and lease.device_id != act.device.device_id:
        raise LeaseHeld(
            f"in use on {lease.device_name} since {lease.since:%Y-%m-%d %H:%M} (UTC), "
            f"until {lease.until:%H:%M:%S} unless renewed; open it read-only meanwhile",
            details={"holder": lease.device_id, "holder_name": lease.device_name,
                     "since": lease.since.isoformat(), "until": lease.until.isoformat()})


def may_upload(state: SetYear, act: Acting) -> None:
    """A device uploads only to a synced set-year that no other device holds."""
    _on(state)
    held_by_other(state, act)


def may_record(state: SetYear) -> None:
    """Versions are recorded and pulled only while sync is on."""
    _on(state)


def decide_turn_on(state: SetYear, act: Acting, *, set_name: str,
                   latest: VersionInfo | None) -> list[SetYearEvent]:
    """Start syncing from the drive's newest version of the set-year (nothing if on)."""
    if state.on:
        return []
    return [SyncTurnedOn(**act.head(), set_name=set_name,
                         current=latest.version_id if latest else None,
                         current_at=latest.uploaded_at if latest else None)]


def decide_turn_off(state: SetYear, act: Acting) -> list[SetYearEvent]:
    """Stop syncing; the acting device's own lease ends with it, another's live one
    refuses (break it first)."""
    _on(state)
    held_by_other(state, act)
    ended = _expired(state, act)
    if not ended and state.lease is not None:
        ended = [LeaseReleased(**act.head(), lease_id=state.lease.lease_id)]
    return [*ended, SyncTurnedOff(**act.head())]


def decide_take(state: SetYear, act: Acting, *, lease_id: str,
                ttl: timedelta) -> list[SetYearEvent]:
    """Take the lease (an expired one is recorded as such first); the holder taking it
    again renews it."""
    _on(state)
    held_by_other(state, act)
    until = act.at + ttl
    mine = live(state, act.at)
    if mine is not None:
        return [LeaseRenewed(**act.head(), lease_id=mine.lease_id, until=until)]
    return [*_expired(state, act), LeaseTaken(
        **act.head(), lease_id=lease_id, device_name=act.device.name,
        until=until)]


def _mine(state: SetYear, act: Acting) -> LeaseInfo:
    lease = live(state, act.at)
    if lease is None or lease.device_id != act.device.device_id:
        raise LeaseNotHeld("this device does not hold the lease (it expired, was broken, "
                           "released or taken); take it again")
    return lease


def decide_renew(state: SetYear, act: Acting, *, ttl: timedelta) -> list[SetYearEvent]:
    """Extend the holder's live lease to now + ttl."""
    _on(state)
    lease = _mine(state, act)
    return [LeaseRenewed(**act.head(), lease_id=lease.lease_id, until=act.at + ttl)]


def decide_release(state: SetYear, act: Acting) -> list[SetYearEvent]:
    """The holder gives its lease back."""
    _on(state)
    lease = _mine(state, act)
    return [LeaseReleased(**act.head(), lease_id=lease.lease_id)]


def decide_break(state: SetYear, act: Acting) -> list[SetYearEvent]:
    """The member ends the live lease of a device from another one; audited as broken."""
    _on(state)
    lease = live(state, act.at)
    if lease is None:
        raise NoLease("nobody holds the lease of that account set and year")
    return [LeaseBroken(**act.head(lease.device_id), lease_id=lease.lease_id,
                        by_device=act.device.device_id)]


def decide_expire(state: SetYear, act: Acting, lease_id: str) -> list[SetYearEvent]:
    """The sweeper's decision: record the end of lease ``lease_id`` if it has ended."""
    if state.lease is None or state.lease.lease_id != lease_id:
        return []
    return _expired(state, act)


def decide_erase(state: SetYear, act: Acting) -> list[SetYearEvent]:
    """The member was erased: their lease ends (recorded as expired if it already ran
    out, else released) and sync stops; nothing once both are done. ``act`` names no
    device: none acted."""
    ended = _expired(state, act)
    if not ended and state.lease is not None:
        ended = [LeaseReleased(**act.head(), lease_id=state.lease.lease_id)]
    return [*ended, *([SyncTurnedOff(**act.head())] if state.on else [])]


def moved_on(state: SetYear, versions: Sequence[VersionInfo], member_id: str
             ) -> VersionInfo | None:
    """The newest version someone else (a sharee) uploaded back after the current one,
    not itself a conflict: it is what the set-year moved on to outside sync."""
    since = state.current_at
    outside = [v for v in versions
               if v.uploader_id != member_id and v.conflict_with is None
               and (since is None or v.uploaded_at > since)]
    return max(outside, key=lambda v: v.uploaded_at, default=None)


def decide_synced(state: SetYear, act: Acting, version: VersionInfo,
                  outside: VersionInfo | None) -> list[SetYearEvent]:
    """Record a device's upload. It becomes current when it names the current version as
    its base (or there is none yet); otherwise it is kept as a conflict beside it."""
    current, current_at = state.current, state.current_at
    if outside is not None:
        current, current_at = outside.version_id, outside.uploaded_at
    conflict = current is not None and version.base_version != current
    if not conflict:
        current, current_at = version.version_id, version.uploaded_at
    assert current is not None and current_at is not None
    return [VersionSynced(**act.head(), version_id=version.version_id,
                          base_version=version.base_version, conflict=conflict,
                          current=current, current_at=current_at)]
