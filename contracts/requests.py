"""Request-reply over one wildcard inbox per connection, lighter than nats-py's `request`.

nats-py's `request` draws two random bytes from the OS (a system call, slow on these
machines) and starts a task for its timeout on every call; a busy service makes several
requests per command. Here a counter names each request under one subscription, a timer
handle bounds it, and a reply goes straight to its future (or, for batched direct gets,
to a collector that takes several messages).
"""

from __future__ import annotations

import asyncio
import itertools
import weakref
from collections.abc import Callable

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

Taker = Callable[[Msg], bool]  # takes one reply; True when the request is complete

_muxes: weakref.WeakKeyDictionary[NATS, Mux] = weakref.WeakKeyDictionary()


def mux_of(nc: NATS) -> Mux:
    """The connection's multiplexer (made on first use)."""
    mux = _muxes.get(nc)
    if mux is None:
        mux = _muxes[nc] = Mux(nc)
    return mux


class Mux:
    """Routes replies arriving on ``<inbox>.<n>`` to whoever asked with token n."""

    def __init__(self, nc: NATS) -> None:
        self.nc = nc
        self.prefix = nc.new_inbox() + "."
        self.counter = itertools.count(1)
        self.waiting: dict[str, Taker] = {}
        self.sub: Subscription | None = None
        self.subscribing = asyncio.Lock()

    async def request(self, subject: str, payload: bytes, *, within: float,
                      headers: dict[str, str] | None = None) -> Msg:
        """One reply; raises nats' NoRespondersError or TimeoutError like `request`."""
        replies: list[Msg] = []

        def take(msg: Msg) -> bool:
            replies.append(msg)
            return True

        await self.exchange(subject, payload, take, within=within, headers=headers)
        return replies[0]

    async def exchange(self, subject: str, payload: bytes, take: Taker, *, within: float,
                       headers: dict[str, str] | None = None) -> None:
        """Publish with a reply inbox and feed replies to ``take`` until it says done."""
        await self._subscribed()
        token = str(next(self.counter))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiting[token] = lambda msg: _feed(done, take, msg)
        timer = asyncio.get_running_loop().call_later(within, _expire, done)
        try:
            await self.nc.publish(subject, payload, reply=self.prefix + token, headers=headers)
            await done
        finally:
            timer.cancel()
            self.waiting.pop(token, None)

    async def _subscribed(self) -> None:
        if self.sub is None:
            async with self.subscribing:
                if self.sub is None:
                    self.sub = await self.nc.subscribe(self.prefix + "*", cb=self._route)

    async def _route(self, msg: Msg) -> None:
        taker = self.waiting.get(msg.subject[len(self.prefix):])
        if taker is not None:
            taker(msg)


def _feed(done: asyncio.Future[None], take: Taker, msg: Msg) -> bool:
    if done.done():
        return True
    if msg.headers and msg.headers.get("Status") == "503":
        done.set_exception(NoRespondersError())
        return True
    try:
        complete = take(msg)
    except Exception as err:  # the taker's verdict on a bad reply
        done.set_exception(err)
        return True
    if complete:
        done.set_result(None)
    return complete


def _expire(done: asyncio.Future[None]) -> None:
    if not done.done():
        done.set_exception(NatsTimeout())
