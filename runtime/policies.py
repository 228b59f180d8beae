"""What every policy (a projection that issues commands) does with a failing step: try it
again a few times after a transient failure, then hand the event back to the projector,
which delivers it again. A policy's event is never parked: its effect is owed."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from contracts.errors import CommandReused, Conflict, LedgerError, Unavailable
from runtime.projector import TRANSIENT, Redeliver
from runtime.service import translate

log = logging.getLogger("ledgershare.policies")
T = TypeVar("T")
ATTEMPTS = 5
FIRST_PAUSE_S = 0.05  # doubling: 0.75 s in all before the event goes back


async def persist(step: Callable[[], Awaitable[T]], *, what: str, attempts: int = ATTEMPTS,
                  first_pause: float = FIRST_PAUSE_S) -> T:
    """``step``, tried again after a transient failure with growing pauses; still
    failing, the event goes back to the projector (`Redeliver`), never to the dead
    letters."""
    failure: Exception | None = None
    for n in range(attempts):
        if failure is not None:
            await asyncio.sleep(first_pause * 2 ** (n - 1))
        try:
            return await step()
        except Exception as err:
            if not transient(err):
                raise
            log.warning("%s: %r; trying again", what, err)
            failure = err
    raise Redeliver(f"{attempts} tries failed, the last with {failure!r}") from failure


def transient(err: Exception) -> bool:
    """Whether the same step may succeed later: a timeout, a part not answering, a read
    model behind, a concurrent append. A command id reused with other content never will."""
    if isinstance(err, CommandReused):
        return False
    typed = err if isinstance(err, LedgerError) else translate(err)
    return isinstance(typed, Unavailable | Conflict) or isinstance(err, TRANSIENT)
