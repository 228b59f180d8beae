"""storage's projection: drives (quota), versions, open reservations."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg
import msgspec

from contracts.storage import (
    CONTEXT,
    AnyStorageEvent,
    BackupUploaded,
    QuotaChanged,
    UploadAborted,
    UploadReserved,
    VersionDeleted,
)
from contracts.subjects import context_subjects
from runtime.eventstore import StoredEvent
from services.storage import store

_decoder = msgspec.json.Decoder(AnyStorageEvent)


class StorageProjection:
    name = "storage"
    subjects: Sequence[str] = (context_subjects(CONTEXT, "drive"),)

    async def setup(self, conn: asyncpg.Connection, schema: str) -> None:
        await store.create_tables(conn, schema)

    async def apply(self, conn: asyncpg.Connection, schema: str, event: StoredEvent) -> None:
        match _decoder.decode(event.data):
            case QuotaChanged(owner_id=owner, quota=quota):
                await store.set_quota(conn, schema, owner, quota)
            case UploadReserved() as reserved:
                await store.add_reservation(conn, schema, reserved)
            case BackupUploaded() as uploaded:
                await store.close_reservation(conn, schema, uploaded.upload_id)
                await store.add_version(conn, schema, uploaded)
            case UploadAborted(upload_id=uid):
                await store.close_reservation(conn, schema, uid)
            case VersionDeleted(version_id=vid):
                await store.delete_version(conn, schema, vid)
            case _:
                pass
