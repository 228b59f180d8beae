"""sync's erasure policy: an erased member's devices are revoked and their sync stops.

On ``MemberErased`` every device of the member gets its ``DeviceRevoked`` (so none may act
again, in any instance, from the next request on), and every set-year of theirs its lease
ended and ``SyncTurnedOff`` (events in the log, with no device as the actor). The devices
and set-years are read from sync's own read model once it has reached the erasure (its
projection has blanked their names by then); each step is decided on its aggregate's
events, so a redelivery adds nothing twice.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import asyncpg
import msgspec

from contracts.identity import ERASURES, AnyIdentityEvent, MemberErased
from contracts.sync import device_subject, device_subjects, set_year_subject, set_year_subjects
from runtime.commands import Command, Pipeline
from runtime.eventstore import Outgoing, StoredEvent
from runtime.policies import persist
from runtime.projector import Projector
from services.sync import domain, tables
from services.sync.domain import Acting, Device, SetYear
from services.sync.handlers import DEVICE, SET_YEAR

_decoder = msgspec.json.Decoder(AnyIdentityEvent)


class ErasurePolicy:
    """On MemberErased: each device of the member revoked, each set-year's sync ended."""

    name = "erasure_policy"
    subjects: Sequence[str] = (ERASURES,)

    def __init__(self, commands: Pipeline, model: Projector) -> None:
        self.commands = commands
        self.model = model

    async def setup(self, conn: asyncpg.Connection, schema: str) -> None:
        """No tables: the policy keeps only its checkpoint."""

    async def apply(self, conn: asyncpg.Connection, schema: str, event: StoredEvent) -> None:
        erased = _decoder.decode(event.data)
        if isinstance(erased, MemberErased):
            await persist(lambda: self._end_all(erased, event.seq), what="sync erasure policy")

    async def _end_all(self, erased: MemberErased, seq: int) -> None:
        await self.model.wait_until(seq)
        pool, schema, me = self.model.pool, self.model.schema, erased.member_id
        correlation = f"erasure-{uuid.uuid4().hex}"
        for device in await tables.devices_of(pool, schema, me):
            did = device["device_id"]
            await self._revoke(self._command(f"erase-{did}", me, correlation), erased, did)
        for row in await tables.set_years_of(pool, schema, me):
            act = Acting(set_year_id=row["set_year_id"], member_id=me, set_id=row["set_id"],
                         year=row["year"], device=Device(), at=erased.at)
            await self._stop(self._command(f"erase-{act.set_year_id}", me, correlation), act)

    def _command(self, name: str, member_id: str, correlation: str) -> Command:
        return self.commands.internal(name, actor=member_id, correlation_id=correlation)

    async def _revoke(self, cmd: Command, erased: MemberErased, device_id: str) -> None:
        def decide(device: Device) -> list[Outgoing]:
            return [Outgoing(subject=device_subject(device_id, e), event=e)
                    for e in domain.decide_revoke(device, member_id=erased.member_id,
                                                  by_device=None, at=erased.at)]

        await self.commands.step(cmd, device_subjects(device_id), DEVICE, decide)

    async def _stop(self, cmd: Command, act: Acting) -> None:
        sy = act.set_year_id

        def decide(state: SetYear) -> list[Outgoing]:
            return [Outgoing(subject=set_year_subject(sy, e), event=e)
                    for e in domain.decide_erase(state, act)]

        await self.commands.step(cmd, set_year_subjects(sy), SET_YEAR, decide)
