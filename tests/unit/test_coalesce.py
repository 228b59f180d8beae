"""A question shared by concurrent askers: each is answered by a question sent after it
asked, the askers of one turn share it, and one asker given up on harms no other."""

from __future__ import annotations

import asyncio

import pytest

from runtime.coalesce import Coalesced


class Server:
    """Answers the number of questions it was asked, once let go."""

    def __init__(self) -> None:
        self.asked = 0
        self.go = asyncio.Event()

    async def ask(self) -> int:
        self.asked += 1
        sent = self.asked
        await self.go.wait()
        return sent


async def test_askers_of_one_turn_share_one_question() -> None:
    server = Server()
    shared = Coalesced(server.ask)
    asking = [asyncio.create_task(shared()) for _ in range(50)]
    await asyncio.sleep(0)
    server.go.set()
    assert await asyncio.gather(*asking) == [1] * 50
    assert server.asked == 1


async def test_an_asker_is_not_answered_by_a_question_sent_before_it_asked() -> None:
    server = Server()
    shared = Coalesced(server.ask)
    early = asyncio.create_task(shared())
    await asyncio.sleep(0)  # the first question is out
    late = asyncio.create_task(shared())
    await asyncio.sleep(0)
    server.go.set()
    assert (await early, await late) == (1, 2)


async def test_a_cancelled_asker_does_not_cancel_the_others() -> None:
    server = Server()
    shared = Coalesced(server.ask)
    gone, staying = asyncio.create_task(shared()), asyncio.create_task(shared())
    await asyncio.sleep(0)
    gone.cancel()
    server.go.set()
    assert await staying == 1
    with pytest.raises(asyncio.CancelledError):
        await gone


async def test_a_failure_reaches_every_asker_of_its_turn_and_the_next_turn_asks_again(
        ) -> None:
    calls = 0

    async def flaky() -> int:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise TimeoutError("no answer")
        return calls

    shared = Coalesced(flaky)
    first = await asyncio.gather(shared(), shared(), return_exceptions=True)
    assert [type(e) for e in first] == [TimeoutError, TimeoutError]
    assert await shared() == 2
