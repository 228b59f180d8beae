"""sync's projection: devices, synced set-years (lease, current version) and each
device's last synced version, from sync's own events, and identity's erasures: an erased
member's names leave the tables, so a rebuild after the key is gone ends the same."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg
import msgspec

from contracts.identity import ERASURES, AnyIdentityEvent, IdentityEvent, MemberErased
from contracts.subjects import context_subjects
from contracts.sync import (
    CONTEXT,
    AnySyncEvent,
    DeviceRegistered,
    DeviceRevoked,
    LeaseBroken,
    LeaseExpired,
    LeaseReleased,
    LeaseRenewed,
    LeaseTaken,
    SetYearEvent,
    SyncEvent,
    SyncTurnedOff,
    SyncTurnedOn,
    VersionSynced,
)
from runtime.eventstore import StoredEvent
from services.sync import tables

_decoder = msgspec.json.Decoder(AnySyncEvent)
_identity = msgspec.json.Decoder(AnyIdentityEvent)


class SyncProjection:
    name = "sync"
    subjects: Sequence[str] = (context_subjects(CONTEXT), ERASURES)

    async def setup(self, conn: asyncpg.Connection, schema: str) -> None:
        await tables.create_tables(conn, schema)

    async def apply(self, conn: asyncpg.Connection, schema: str, event: StoredEvent) -> None:
        if event.subject.startswith(f"evt.{CONTEXT}."):
            await _sync(conn, schema, _decoder.decode(event.data))
        else:
            await _identity_event(conn, schema, _identity.decode(event.data))


async def _sync(conn: asyncpg.Connection, schema: str, event: SyncEvent) -> None:
    await _apply(conn, schema, event)
    actor = acting_device(event)
    if actor is not None:
        assert isinstance(event, SetYearEvent)
        await tables.seen(conn, schema, actor, event.at)


async def _identity_event(conn: asyncpg.Connection, schema: str,
                          event: IdentityEvent) -> None:
    if isinstance(event, MemberErased):
        # The names go now; what they read after a rebuild ("") is what the live
        # tables hold. The devices and set-years stay, for the erasure policy to end.
        await tables.forget(conn, schema, event.member_id)


def acting_device(event: SyncEvent) -> str | None:
    """The device that did something (its last seen moves); None for what no device did:
    a registration (first seen already), a revocation, a lease that ran out."""
    match event:
        case LeaseBroken(by_device=by):
            return by
        case LeaseExpired() | DeviceRegistered() | DeviceRevoked():
            return None
        case SetYearEvent(device_id=did):
            return did or None  # "": no device acted (the member's erasure)
    return None


async def _apply(conn: asyncpg.Connection, schema: str, event: SyncEvent) -> None:
    match event:
        case DeviceRegistered():
            await tables.add_device(conn, schema, event)
        case DeviceRevoked(device_id=did, at=at):
            await tables.revoke_device(conn, schema, did, at)
        case SyncTurnedOn():
            await tables.turned_on(conn, schema, event)
        case SyncTurnedOff(set_year_id=sy):
            await tables.turned_off(conn, schema, sy)
        case LeaseTaken():
            await tables.lease_taken(conn, schema, event)
        case LeaseRenewed(set_year_id=sy, until=until):
            await tables.lease_renewed(conn, schema, sy, until)
        case LeaseReleased(set_year_id=sy) | LeaseExpired(set_year_id=sy) | LeaseBroken(
                set_year_id=sy):
            await tables.lease_ended(conn, schema, sy)
        case VersionSynced():
            await tables.synced(conn, schema, event)
        case _:
            pass
