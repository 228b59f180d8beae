"""The gateway reads a request body only so far and so long: a sender that trickles
(slowloris) or sends too much is refused without holding the connection."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from starlette.requests import Request

from contracts.errors import BadRequest, TooLarge
from gateway.api import read_limited


def trickling(chunks: list[bytes], *, then_stall: bool) -> Request:
    """A request whose body comes in ``chunks``, then stops arriving (or ends)."""
    pending = list(chunks)

    async def receive() -> dict[str, Any]:
        if pending:
            return {"type": "http.request", "body": pending.pop(0), "more_body": True}
        if then_stall:
            await asyncio.sleep(3600)
        return {"type": "http.request", "body": b"", "more_body": False}

    return Request({"type": "http", "method": "POST", "headers": []}, receive)


async def test_a_body_that_stops_arriving_is_refused_at_the_deadline() -> None:
    with pytest.raises(BadRequest, match=r"did not arrive within 0\.2 s"):
        await read_limited(trickling([b"{", b'"a"'], then_stall=True), 1024, within=0.2)


async def test_a_body_past_the_limit_is_refused_before_the_rest_is_read() -> None:
    with pytest.raises(TooLarge):
        await read_limited(trickling([b"x" * 600, b"x" * 600], then_stall=True), 1000)


async def test_a_whole_body_within_both_bounds_is_read() -> None:
    assert await read_limited(trickling([b"ab", b"cd"], then_stall=False), 10) == b"abcd"
