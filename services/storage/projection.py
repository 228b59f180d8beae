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
from services.storage import tables

_decoder = msgspec.json.Decoder(AnyStorageEvent)


class StorageProjection:
    name = "storage"
    subjects: Sequence[str] = (context_subjects(CONTEXT, "drive"),)

    async def setup(self, conn: asyncpg.Connection, schema: str) -> None:
        await tables.create_tables(conn, schema)

    async def apply(self, conn: asyncpg.Connection, schema: str, event: StoredEvent) -> None:
        match _decoder.decode(event.data):
            case QuotaChanged(owner_id=owner, quota=quota):
                await tables.set_quota(conn, schema, owner, quota)
            case UploadReserved() as reserved:
                await tables.add_reservation(conn, schema, reserved)
            case BackupUploaded() as uploaded:
                await tables.close_reservation(conn, schema, uploaded.upload_id)
                await tables.add_version(conn, schema, uploaded)
            case UploadAborted(upload_id=uid):
                await tables.close_reservation(conn, schema, uid)
            case VersionDeleted(version_id=vid):
                await tables.delete_version(conn, schema, vid)
            case _:
                pass
