"""A pull consumer read straight off its delivery inbox.

nats-py's `fetch(n)` holds a batch until it is full or its timeout passes, so a lone event
waits out the timeout; it also caps replay at 40-60k msg/s. This keeps one pull request
outstanding and hands over whatever has arrived the moment anything arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

EXPIRES_S = 1.0


class ConsumerGone(Exception):
    """The consumer was deleted (another instance took the lead and restarted it) or does
    not exist (a new server): whatever this puller would read now is not its cursor's."""


_DELETED = "Consumer Deleted"


class Puller:
    """Reads batches of a durable pull consumer with low latency."""

    def __init__(self, nc: NATS, stream: str, consumer: str, batch: int) -> None:
        self.nc = nc
        self.subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self.batch = batch
        self.inbox = nc.new_inbox()
        self.queue: asyncio.Queue[Msg] = asyncio.Queue()
        self.outstanding = 0
        self.requested_at = 0.0
        self.sub: Subscription | None = None

    async def start(self) -> None:
        async def deliver(msg: Msg) -> None:
            self.queue.put_nowait(msg)

        self.sub = await self.nc.subscribe(self.inbox, cb=deliver)

    async def stop(self) -> None:
        if self.sub is not None:
            with contextlib.suppress(Exception):
                await self.sub.unsubscribe()

    async def next_batch(self, wait: float) -> list[Msg]:
        """The events that have arrived (at least one), or [] after ``wait`` seconds."""
        await self._request()
        try:
            first = await asyncio.wait_for(self.queue.get(), wait)
        except TimeoutError:
            return []
        self.requested_at = time.monotonic()  # the request is alive
        msgs = self._take(first)
        while not self.queue.empty() and len(msgs) < self.batch:
            msgs += self._take(self.queue.get_nowait())
        return msgs

    def _take(self, msg: Msg) -> list[Msg]:
        headers = msg.headers or {}
        status = headers.get("Status")
        if status is None and msg.reply:
            self.outstanding -= 1
            return [msg]
        if status == "503" or (status == "409" and headers.get("Description") == _DELETED):
            raise ConsumerGone(f"{self.subject}: {status} {headers.get('Description', '')}")
        if status is not None and status != "100":
            # 408 expired / 409 gone: that request is over, with what it had left unsent.
            left = headers.get("Nats-Pending-Messages")
            self.outstanding = max(0, self.outstanding - int(left)) if left else 0
        return []

    async def _request(self) -> None:
        # Up to two batches asked for: the next one streams in while the caller applies
        # this one. A new request when at most a batch is left, or when the last went
        # unanswered past its expiry (lost in a reconnect).
        lost = time.monotonic() - self.requested_at > EXPIRES_S + 0.5
        if self.outstanding > self.batch and not lost:
            return
        if lost:
            self.outstanding = 0
        self.outstanding += self.batch
        self.requested_at = time.monotonic()
        req = {"batch": self.batch, "expires": int(EXPIRES_S * 1e9)}
        await self.nc.publish(self.subject, json.dumps(req).encode(), reply=self.inbox)
