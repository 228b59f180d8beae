"""Operators' operations, served by every service that keeps a read model, at
``admin.<context>.<operation>`` (a prefix only the operators' credentials reach).

``replay`` rebuilds the service's read model from sequence 1 into ``<schema>_rebuild``,
compares it with the live one table by table, and with ``swap`` makes the rebuilt rows
live. The service does the work next to its own database, so the operator needs a bus
connection only; progress arrives on an inbox of the caller's (see `replay`).
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from contracts.base import Reply, Request
from contracts.client import ServiceClient
from contracts.errors import Conflict
from contracts.operations import Operation


class Rebuild(Request, frozen=True, kw_only=True):
    """Rebuild the read model; ``progress``: a client inbox to report progress to."""

    swap: bool = False
    progress: str = ""


class Progress(msgspec.Struct, frozen=True, kw_only=True):
    """How far a rebuild is: ``position`` of ``target`` events, at ``rate`` events/s."""

    position: int
    target: int
    rate: float


class TableCheck(msgspec.Struct, frozen=True, kw_only=True):
    """One table, live against rebuilt: row counts, and whether the rows are the same."""

    table: str
    live_rows: int
    rebuilt_rows: int
    same: bool


class Rebuilt(Reply, frozen=True, kw_only=True):
    """What a rebuild found: every table compared; ``kept_in`` names where a swap kept the
    previous rows."""

    schema: str
    reached: int
    seconds: float
    tables: list[TableCheck]
    differences: list[str]
    swapped: bool = False
    kept_in: str = ""


class ReplayRunning(Conflict):
    """Another rebuild of the same read model is running (one at a time per schema)."""

    code = "replay_running"


class AdminClient(ServiceClient):
    """The operators' operations of one service: ``AdminClient(nc, context="sharing")``."""

    replay = Operation(Rebuild, Rebuilt, errors=(ReplayRunning,), admin=True)


async def replay(client: AdminClient, *, swap: bool,
                 progress: Callable[[Progress], None]) -> Rebuilt:
    """Ask the service to rebuild its read model; ``progress`` is called as it reports."""
    decode = msgspec.json.Decoder(Progress).decode

    async def report(msg: Msg) -> None:
        progress(decode(msg.data))

    nc: NATS = client.nc
    sub = await nc.subscribe(nc.new_inbox(), cb=report)
    try:
        return await client.replay(Rebuild(swap=swap, progress=sub.subject))
    finally:
        await sub.unsubscribe()
