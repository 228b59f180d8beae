"""The docs do not rot: the event catalogue is current and the example subscriber works."""

from __future__ import annotations

import asyncio
import importlib.util
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType

from nats.aio.client import Client as NATS

from cli.catalogue import render, render_operations
from contracts.storage import BackupUploaded, drive_subject, drive_subjects
from runtime.eventstore import EventStore, Outgoing

ROOT = Path(__file__).resolve().parents[2]


def test_the_event_catalogue_is_generated_from_the_contracts() -> None:
    assert (ROOT / "docs" / "events.md").read_text() == render(), \
        "run: ledgershare catalogue > docs/events.md"


def test_the_operations_catalogue_is_generated_from_the_declarations() -> None:
    assert (ROOT / "docs" / "operations.md").read_text() == render_operations(), \
        "run: ledgershare catalogue --operations > docs/operations.md"


def _example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("notify_owner",
                                                  ROOT / "docs/examples/notify_owner.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def uploaded(owner: str, uploader: str, n: int) -> BackupUploaded:
    return BackupUploaded(owner_id=owner, version_id=f"v{n}", upload_id=f"v{n}",
                          uploader_id=uploader, set_id="s", set_name="123", year=2018,
                          period=n, size=1, sha256="0" * 64, remark=f"2018年{n}期", key="k",
                          at=datetime.now(UTC))


async def test_the_example_subscriber_notifies_owners_of_sharee_uploads(
        nc: NATS, events: EventStore) -> None:
    for n, (owner, uploader) in enumerate([("a", "a"), ("a", "b"), ("c", "c"), ("c", "a")]):
        event = uploaded(owner, uploader, n)
        await events.append(drive_subjects(owner), [Outgoing(subject=drive_subject(owner, event),
                                                         event=event)],
                           expected=None, msg_id=f"m{n}")
    seen: list[tuple[str, str]] = []
    stop = asyncio.Event()

    async def notify(upload: BackupUploaded) -> None:
        seen.append((upload.owner_id, upload.uploader_id))
        if len(seen) == 2:
            stop.set()

    await asyncio.wait_for(_example().follow(nc, notify, stop=stop), timeout=10)
    assert seen == [("a", "b"), ("c", "a")]
