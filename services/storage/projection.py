"""storage's projection: the open upload reservations (the sweeper's question)."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg
import msgspec

from contracts.storage import (
    CONTEXT,
    AnyStorageEvent,
    BackupUploaded,
    UploadAborted,
    UploadReserved,
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
            case UploadReserved() as reserved:
                await tables.add_reservation(conn, schema, reserved)
            case BackupUploaded(upload_id=uid) | UploadAborted(upload_id=uid):
                await tables.close_reservation(conn, schema, uid)
            case _:
                pass
