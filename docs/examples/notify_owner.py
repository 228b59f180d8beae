"""Example subscriber: tell an owner when a friend uploads a new version into their drive.

Run it beside a running system: ``python docs/examples/notify_owner.py``. It keeps a
durable consumer, so a restart goes on where it stopped and no upload is missed; it
acknowledges an event only after handling it. A message in the log that no append wrote
(see ``runtime.eventstore.foreign_reason``) is passed over, never taken for an upload.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import msgspec
import nats
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from contracts.storage import BackupUploaded
from runtime.eventstore import foreign_reason
from runtime.settings import load_settings

SUBJECT = "evt.storage.drive.*.BackupUploaded"
Notify = Callable[[BackupUploaded], Awaitable[None]]


async def print_notice(upload: BackupUploaded) -> None:
    print(f"to {upload.owner_id}: {upload.uploader_id} uploaded {upload.set_name} "
          f"{upload.year} ({upload.remark})")


async def follow(nc: nats.NATS, notify: Notify, *, durable: str = "notify_owner",
                 stop: asyncio.Event | None = None) -> None:
    """Call ``notify`` for every upload made by someone other than the drive's owner."""
    js = nc.jetstream()
    sub = await js.pull_subscribe(SUBJECT, durable=durable, config=ConsumerConfig(
        ack_policy=AckPolicy.EXPLICIT, deliver_policy=DeliverPolicy.ALL))
    decoder = msgspec.json.Decoder(BackupUploaded)
    while stop is None or not stop.is_set():
        try:
            msgs: list[Msg] = await sub.fetch(32, timeout=0.5)
        except nats.errors.TimeoutError:
            continue
        for msg in msgs:
            if foreign_reason(msg.headers or {}, msg.subject) is None:
                upload = decoder.decode(msg.data)
                if upload.uploader_id != upload.owner_id:
                    await notify(upload)
            await msg.ack()


async def main() -> None:
    nc = await nats.connect(load_settings().nats_servers)
    try:
        await follow(nc, print_notice)
    finally:
        await nc.close()


if __name__ == "__main__":
    asyncio.run(main())
