"""Request-reply over one inbox per connection, against a real nats-server."""

from __future__ import annotations

import asyncio
import time

import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from contracts.requests import mux_of


async def test_replies_find_their_requests_whatever_order_they_come_in(nc: NATS) -> None:
    async def answer(msg: Msg) -> None:
        await asyncio.sleep(0.05 if msg.data == b"0" else 0)  # the first answers last
        await msg.respond(b"re " + msg.data)

    await nc.subscribe("echo.slowfirst", cb=answer)
    mux = mux_of(nc)
    replies = await asyncio.gather(*(mux.request("echo.slowfirst", str(i).encode(), within=2)
                                     for i in range(20)))
    assert [r.data for r in replies] == [f"re {i}".encode() for i in range(20)]
    assert mux.waiting == {}


async def test_nobody_listening_is_no_responders_at_once(nc: NATS) -> None:
    started = time.monotonic()
    with pytest.raises(NoRespondersError):
        await mux_of(nc).request("nobody.here", b"", within=5)
    assert time.monotonic() - started < 1


async def test_a_silent_responder_times_out_and_leaves_nothing_waiting(nc: NATS) -> None:
    async def ignore(_msg: Msg) -> None:
        pass

    await nc.subscribe("echo.silent", cb=ignore)
    started = time.monotonic()
    with pytest.raises(NatsTimeout):
        await mux_of(nc).request("echo.silent", b"", within=0.3)
    assert 0.25 < time.monotonic() - started < 2
    assert mux_of(nc).waiting == {}


async def test_a_collector_takes_several_replies_until_it_is_done(nc: NATS) -> None:
    async def three(msg: Msg) -> None:
        for part in (b"a", b"b", b"end"):
            await nc.publish(msg.reply, part)

    await nc.subscribe("echo.three", cb=three)
    got: list[bytes] = []

    def take(msg: Msg) -> bool:
        got.append(msg.data)
        return msg.data == b"end"

    await mux_of(nc).exchange("echo.three", b"", take, within=2)
    assert got == [b"a", b"b", b"end"]
