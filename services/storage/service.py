"""The storage service: its descriptor, and how it is wired from the shared connections."""

from __future__ import annotations

import asyncio
import logging
import uuid
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta

from contracts.storage import AnyStorageEvent, StorageClient
from runtime.app import ReadModel, Resources, Service, Wiring, command_pipeline
from runtime.projector import Projector
from runtime.s3 import s3_client
from runtime.service import Call
from runtime.settings import Settings
from runtime.tokens import Sessions, verifier_for
from services.storage import tables
from services.storage.erasure import ErasurePolicy
from services.storage.gate import SharingGate
from services.storage.handlers import Limits, Storage
from services.storage.objects import ObjectStore
from services.storage.projection import StorageProjection

log = logging.getLogger("ledgershare.storage")


def limits(settings: Settings) -> Limits:
    return Limits(default_quota=settings.quota_bytes, part_size=settings.upload_part_bytes,
                  reservation_ttl=timedelta(seconds=settings.upload_reservation_s))


async def sweep_forever(storage: Storage, projector: Projector, interval: float) -> None:
    """Abort expired reservations (quota already stops counting them; this frees S3)."""
    while True:
        await asyncio.sleep(interval)
        try:
            now = datetime.now(UTC)
            call = Call(correlation_id=f"sweep-{uuid.uuid4().hex}", received_at=now, headers={})
            for owner in await tables.owners_with_expired(projector.pool, projector.schema, now):
                await storage.sweep(owner, now, call)
        except Exception:
            log.exception("sweeping expired uploads failed; will try again")


async def build(res: Resources) -> Wiring:
    """storage's host, projector, S3 client and sweeper."""
    stack = AsyncExitStack()
    s3 = await stack.enter_async_context(s3_client(res.settings, timeout_s=10))
    objects = ObjectStore(s3, res.settings.s3_bucket, url_ttl_s=res.settings.presign_ttl_s)
    sessions = Sessions(verifier_for(res.settings), res.events)
    storage = Storage(res.events, await command_pipeline(res, "storage"), objects, sessions,
                      limits(res.settings),
                      SharingGate(res.nc, timeout=res.settings.request_timeout_s))
    projector = Projector(res.nc, res.pool, StorageProjection(), schema="storage",
                          stream=res.settings.stream)
    erasures = Projector(res.nc, res.pool, ErasurePolicy(storage), schema="storage",
                         stream=res.settings.stream)
    host = SERVICE.host(res, storage.endpoints())
    return Wiring(
        host=host, projectors=[projector, erasures],
        background=[lambda: sweep_forever(storage, projector, res.settings.sweep_interval_s)],
        cleanup=[stack.aclose])


SERVICE = Service(
    name="storage", version="0.1.0",
    description="cloud drive: quota, versions, account-set files on S3",
    client=StorageClient, events=AnyStorageEvent, build=build,
    read_model=ReadModel(schema="storage", tables=tables.TABLES,
                         projection=StorageProjection))
