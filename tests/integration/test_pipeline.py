"""The command pipeline on a real NATS server: who may run a command, and what a repeat
finds, when runs race, die half-way or die after appending."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime

import msgspec
import pytest
from nats.aio.client import Client as NATS

from contracts.errors import CommandInProgress, CommandReused
from contracts.identity import (
    AnyIdentityEvent,
    ChangeNickname,
    IdentityEvent,
    NicknameChanged,
    VerifyDrivePassword,
    member_subject,
    member_subjects,
)
from runtime.commands import Command, Fold, Pipeline, Step, command_key, content_digest
from runtime.eventstore import EventStore, Meta, Outgoing
from runtime.journal import Journal, Record, journal_subject

T0 = datetime(2026, 1, 1, tzinfo=UTC)
META = Meta(correlation_id="c", causation_id="test", actor="m")
Names = list[str]
NAMES: Fold[Names, IdentityEvent] = Fold(
    msgspec.json.Decoder(AnyIdentityEvent),
    lambda names, e: [*names, e.nickname] if isinstance(e, NicknameChanged) else names, [])


@pytest.fixture
async def pipeline(nc: NATS, events: EventStore) -> Pipeline:
    journal = Journal(nc)
    await journal.ensure()
    return Pipeline(events, journal, "identity", lease_s=1.0, wait_s=0.3)


def renames(member: str, *nicknames: str) -> list[Outgoing]:
    events = [NicknameChanged(member_id=member, nickname=n, at=T0) for n in nicknames]
    return [Outgoing(subject=member_subject(member, e), event=e) for e in events]


class Counting:
    """A decision that counts how often it is made."""

    def __init__(self, member: str, *nicknames: str) -> None:
        self.member, self.nicknames, self.calls = member, nicknames, 0

    def __call__(self, state: Names) -> list[Outgoing]:
        self.calls += 1
        return renames(self.member, *self.nicknames)


async def run(pipeline: Pipeline, request: ChangeNickname, decide: Counting,
              member: str) -> Step[Names, IdentityEvent]:
    async def body(cmd: Command) -> Step[Names, IdentityEvent]:
        return await pipeline.step(cmd, member_subjects(member), NAMES, decide)

    return await pipeline.run("change_nickname", request, caller=member, correlation_id="c",
                              body=body)


def rename(nickname: str, command_id: str | None = None) -> ChangeNickname:
    return ChangeNickname(command_id=command_id or uuid.uuid4().hex, session="s",
                          nickname=nickname)


def test_credentials_and_the_id_are_not_content() -> None:
    a = VerifyDrivePassword(command_id="aaaaaaaa", session="s1", password="guess-1")
    b = VerifyDrivePassword(command_id="bbbbbbbb", session="s2", password="guess-2")
    assert content_digest(a) == content_digest(b)
    assert content_digest(rename("Ann")) != content_digest(rename("Bob"))


def test_the_key_separates_callers_operations_and_contexts() -> None:
    keys = {command_key("identity", "op", "m1", "x"), command_key("identity", "op", "m2", "x"),
            command_key("identity", "op2", "m1", "x"), command_key("social", "op", "m1", "x")}
    assert len(keys) == 4


async def test_a_repeat_answers_from_the_log_and_decides_nothing(pipeline: Pipeline) -> None:
    member, request, decide = "m-repeat", rename("Ann"), Counting("m-repeat", "Ann", "Bo")
    first = await run(pipeline, request, decide, member)
    again = await run(pipeline, request, decide, member)
    assert decide.calls == 1 and not first.repeated and again.repeated
    assert again.events == first.events and again.seq == first.seq
    with pytest.raises(CommandReused):
        await run(pipeline, rename("Eve", request.command_id), decide, member)


async def test_a_run_in_progress_holds_the_command(pipeline: Pipeline,
                                                  events: EventStore) -> None:
    member, request = "m-busy", rename("Ann")
    release = asyncio.Event()

    async def slow(state: Names) -> list[Outgoing]:
        await release.wait()
        return renames(member, "Ann")

    async def body(cmd: Command) -> Step[Names, IdentityEvent]:
        return await pipeline.step(cmd, member_subjects(member), NAMES, slow)

    holder = asyncio.create_task(pipeline.run("change_nickname", request, caller=member,
                                              correlation_id="c", body=body))
    await asyncio.sleep(0.1)
    with pytest.raises(CommandInProgress):
        await run(pipeline, request, Counting(member, "Mallory"), member)
    release.set()
    await holder
    repeat = Counting(member, "Mallory")
    assert (await run(pipeline, request, repeat, member)).repeated and repeat.calls == 0
    assert [e.type for e in await events.load(member_subjects(member))] == ["NicknameChanged"]


async def test_a_run_that_died_after_appending_is_found_by_the_repeat(
        pipeline: Pipeline) -> None:
    member, request = "m-died", rename("Ann")
    key = command_key("identity", "change_nickname", member, request.command_id)
    await _held_since(pipeline, key, request, time.time())  # its holder never lets go
    died = Command(key=key, fresh=True, meta=META)
    await pipeline.step(died, member_subjects(member), NAMES, Counting(member, "Ann"))
    repeat = Counting(member, "Mallory")
    with pytest.raises(CommandInProgress):  # within the lease: wait for the holder
        await run(pipeline, request, repeat, member)
    await asyncio.sleep(1.0)  # the lease runs out
    assert (await run(pipeline, request, repeat, member)).repeated and repeat.calls == 0


async def test_a_run_that_died_half_way_is_completed_by_the_repeat(
        pipeline: Pipeline, events: EventStore) -> None:
    member, request = "m-half", rename("Ann")
    key = command_key("identity", "change_nickname", member, request.command_id)
    await _held_since(pipeline, key, request, 0.0)  # a holder whose lease ran out long ago
    first, _ = renames(member, "Ann", "Bo")
    # What a run that died between the two appends of its decision leaves behind:
    await events._append_one(member_subjects(member), first, 0, "died:0", META, key, "1/2")
    decide = Counting(member, "Ann", "Bo")
    step = await run(pipeline, request, decide, member)
    assert decide.calls == 1 and not step.repeated and step.state == ["Ann", "Ann", "Bo"]
    again = await run(pipeline, request, decide, member)
    assert decide.calls == 1 and again.repeated and again.seq == step.seq


async def _held_since(pipeline: Pipeline, key: str, request: ChangeNickname,
                      since: float) -> None:
    record = Record(digest=content_digest(request), running=True, since=since)
    assert await pipeline.journal.put(journal_subject("identity", key), record, last=0)
