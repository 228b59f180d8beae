"""The sync service: its descriptor, and how it is wired from the shared connections."""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import UTC, datetime, timedelta

from contracts.storage import StorageClient
from contracts.sync import AnySyncEvent, SyncClient
from runtime.app import ReadModel, Resources, Service, Wiring, command_pipeline
from runtime.projector import Projector
from runtime.service import Call
from runtime.tokens import Sessions, verifier_for
from services.sync import tables
from services.sync.erasure import ErasurePolicy
from services.sync.handlers import Sync
from services.sync.projection import SyncProjection

SCHEMA = "sync"
log = logging.getLogger("ledgershare.sync")


async def sweep_forever(sync: Sync, interval: float) -> None:
    """Record the leases that ran out. Nothing depends on it running: a lease is judged
    by the time it recorded, and a take records an expiry itself; it only makes the log
    and the status tell sooner. Every instance may sweep (the commands are idempotent)."""
    while True:
        await asyncio.sleep(interval)
        try:
            now = datetime.now(UTC)
            call = Call(correlation_id=f"sweep-{uuid.uuid4().hex}", received_at=now, headers={})
            await sync.sweep(now, call)
        except Exception:
            log.exception("sweeping ended leases failed; will try again")


async def build(res: Resources) -> Wiring:
    """sync's host, projector, erasure policy and lease sweeper."""
    projector = Projector(res.nc, res.pool, SyncProjection(), schema=SCHEMA,
                          stream=res.settings.stream)
    commands = await command_pipeline(res, "sync")
    sync = Sync(res.events, commands, Sessions(verifier_for(res.settings), res.events),
                StorageClient(res.nc, timeout=res.settings.request_timeout_s * 2), res.pool,
                projector, lease_ttl=timedelta(seconds=res.settings.sync_lease_s),
                schema=SCHEMA)
    erasures = Projector(res.nc, res.pool, ErasurePolicy(commands, projector), schema=SCHEMA,
                         stream=res.settings.stream)
    host = SERVICE.host(res, sync.endpoints())
    return Wiring(host=host, projectors=[projector, erasures], app=sync,
                  background=[lambda: sweep_forever(sync, res.settings.sweep_interval_s)])


SERVICE = Service(
    name="sync", version="0.1.0",
    description="cloud sync: devices, leases and versions of one member's set-years",
    client=SyncClient, events=AnySyncEvent, build=build,
    read_model=ReadModel(schema=SCHEMA, tables=tables.TABLES, projection=SyncProjection))
