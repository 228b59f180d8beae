"""First start of a production NATS: the operator creates the streams, once, before any
service starts (services and gateways may use them but create none).

    LEDGERSHARE_NATS_URL=tls://operator:<pw>@nats:4222 \\
    LEDGERSHARE_NATS_INBOX_PREFIX=_INBOX_operator LEDGERSHARE_STREAM_REPLICAS=3 \\
    python -m deploy.bootstrap

It makes the event log (``EVENTS``), the command journal (``COMMANDS``), the gateways'
rate-limit bucket (``LIMITS``) and the members' data keys (``PERSONAL``) with the design's
settings and the replicas asked for.
Run again, it changes nothing: an existing stream is checked, and one whose settings
would break the log's guarantees is reported, never altered.
"""

from __future__ import annotations

import asyncio
import sys

import nats
from nats.aio.client import Client as NATS

from gateway.limits import limiter_for
from runtime.eventstore import EventStore, EventStoreError
from runtime.journal import Journal
from runtime.personal import Keyring
from runtime.settings import Settings, load_settings


async def create_streams(nc: NATS, settings: Settings) -> None:
    """Create (or check) the log, the journal and the rate limits' bucket."""
    replicas = settings.stream_replicas
    await EventStore(nc, settings.stream).ensure_stream(
        replicas=replicas, duplicate_window_s=settings.duplicate_window_s)
    await Journal(nc).ensure(replicas=replicas)
    await limiter_for(nc, settings).ensure()
    await Keyring(nc, replicas=replicas).ensure()


async def bootstrap(settings: Settings) -> None:
    """Connect as the settings say and create the streams."""
    nc = await nats.connect(settings.nats_servers, inbox_prefix=settings.nats_inbox_prefix,
                            name="ledgershare-bootstrap", allow_reconnect=False)
    try:
        await create_streams(nc, settings)
    finally:
        await nc.close()


def main() -> int:
    """Create the streams; 1 (with the reason) when an existing one is misconfigured."""
    settings = load_settings()
    try:
        asyncio.run(bootstrap(settings))
    except EventStoreError as err:
        print(err, file=sys.stderr)
        return 1
    print(f"streams ready: {settings.stream}, COMMANDS, the LIMITS and PERSONAL buckets, "
          f"{settings.stream_replicas} replica(s) each")
    return 0


if __name__ == "__main__":
    sys.exit(main())
