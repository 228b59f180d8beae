"""One question to a server, shared by everyone who asks it at about the same time.

Every asker is answered by a question sent *after* it asked, so the answer covers all
the server had done before (an append acknowledged before an authorization check began
is in what that check learns). Those who ask before the question leaves share it: the
question goes out on the event loop's next turn, so the requests a busy service took in
one read from its socket cost one round trip, not one each.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Coalesced(Generic[T]):
    """``ask()``, run once for all who call before it is sent."""

    def __init__(self, ask: Callable[[], Awaitable[T]]) -> None:
        self._ask = ask
        self._next: asyncio.Future[T] | None = None  # the round not sent yet
        self._rounds: set[asyncio.Task[None]] = set()

    async def __call__(self) -> T:
        """The answer of a question sent after this call began."""
        answer = self._next
        if answer is None:
            answer = self._next = asyncio.get_running_loop().create_future()
            answer.add_done_callback(_seen)
            task = asyncio.create_task(self._round(answer))
            self._rounds.add(task)
            task.add_done_callback(self._rounds.discard)
        # Shielded: one asker given up on (a cancelled request) must not cancel the
        # round for the others.
        return await asyncio.shield(answer)

    async def _round(self, answer: asyncio.Future[T]) -> None:
        self._next = None  # whoever asks from now on is not covered by this question
        try:
            answer.set_result(await self._ask())
        except Exception as err:
            answer.set_exception(err)
        finally:
            if not answer.done():  # cancelled itself: its askers must not wait forever
                answer.cancel()


def _seen(future: asyncio.Future[T]) -> None:
    # A round whose every asker was cancelled still has its failure looked at, so asyncio
    # does not report it as never retrieved.
    if not future.cancelled():
        future.exception()
