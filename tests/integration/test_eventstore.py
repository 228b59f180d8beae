"""The event log against a real nats-server: OCC, dedup, load, stream settings."""

from __future__ import annotations

import asyncio
import functools

import msgspec
import pytest
from nats.aio.client import Client as NATS
from nats.js.api import StreamConfig

from contracts.base import HDR_EVENT_TYPE, Event
from contracts.subjects import aggregate_subjects, event_subject
from runtime.eventstore import (
    FOREIGN,
    ConcurrencyConflict,
    EventStore,
    EventStoreError,
    Outgoing,
    check_server_version,
    with_retry,
)


class Deposited(Event, frozen=True, kw_only=True):
    amount: int


class Withdrawn(Event, frozen=True, kw_only=True):
    amount: int


class Frozen(Event, frozen=True, kw_only=True):
    amount: int


SCOPE = aggregate_subjects("test", "account", "a1")


def deposit(amount: int) -> Outgoing:
    return Outgoing(subject=event_subject("test", "account", "a1", "Deposited"),
                    event=Deposited(amount=amount))


async def test_one_of_twenty_concurrent_appends_with_the_same_expectation_wins(
        events: EventStore) -> None:
    results = await asyncio.gather(
        *(events.append(SCOPE, [deposit(i)], expected=0, msg_id=f"cmd-{i}") for i in range(20)),
        return_exceptions=True)
    won = [r for r in results if isinstance(r, int)]
    lost = [r for r in results if isinstance(r, ConcurrencyConflict)]
    assert len(won) == 1 and len(lost) == 19
    assert len(await events.load(SCOPE)) == 1


async def test_with_retry_all_twenty_land_once_each(events: EventStore) -> None:
    async def attempt(i: int) -> int:
        loaded = await events.load(SCOPE)
        expected = loaded[-1].seq if loaded else 0
        return await events.append(SCOPE, [deposit(i)], expected=expected, msg_id=f"cmd-{i}")

    await asyncio.gather(*(with_retry(functools.partial(attempt, i), attempts=60)
                           for i in range(20)))
    loaded = await events.load(SCOPE)
    amounts = sorted(_amount(e.data) for e in loaded)
    assert amounts == list(range(20))


def _amount(data: bytes) -> int:
    return int(msgspec.json.decode(data)["amount"])


async def test_same_msg_id_twice_is_one_event(events: EventStore) -> None:
    first = await events.append(SCOPE, [deposit(1)], expected=None, msg_id="same")
    again = await events.append(SCOPE, [deposit(1)], expected=None, msg_id="same")
    assert first == again
    assert len(await events.load(SCOPE)) == 1


async def test_retry_after_a_lost_reply_returns_the_original_sequence(events: EventStore) -> None:
    # The first append landed but the client never saw the ack (timeout); it retries
    # with the same msg id and the same expected sequence, after someone else appended.
    landed = await events.append(SCOPE, [deposit(1)], expected=0, msg_id="cmd-x")
    await events.append(SCOPE, [deposit(2)], expected=landed, msg_id="cmd-y")
    retried = await events.append(SCOPE, [deposit(1)], expected=0, msg_id="cmd-x")
    assert retried == landed
    assert [e.msg_id for e in await events.load(SCOPE)] == ["cmd-x:0", "cmd-y:0"]


async def test_a_stale_expectation_with_a_new_msg_id_is_a_conflict(events: EventStore) -> None:
    await events.append(SCOPE, [deposit(1)], expected=0, msg_id="cmd-1")
    with pytest.raises(ConcurrencyConflict):
        await events.append(SCOPE, [deposit(2)], expected=0, msg_id="cmd-2")


async def test_several_events_of_one_command_land_in_order(events: EventStore) -> None:
    last = await events.append(SCOPE, [deposit(1), deposit(2), deposit(3)], expected=0,
                              msg_id="multi")
    loaded = await events.load(SCOPE)
    assert [_amount(e.data) for e in loaded] == [1, 2, 3]
    assert loaded[-1].seq == last
    assert loaded[0].type == "Deposited"


async def test_load_reads_past_one_batch_and_only_its_aggregate(events: EventStore) -> None:
    other = Outgoing(subject=event_subject("test", "account", "a2", "Deposited"),
                     event=Deposited(amount=-1))
    for i in range(300):
        await events.append(SCOPE, [deposit(i)], expected=None, msg_id=f"m{i}")
        if i % 50 == 0:
            await events.append(aggregate_subjects("test", "account", "a2"), [other],
                               expected=None, msg_id=f"o{i}")
    loaded = await events.load(SCOPE)
    assert [_amount(e.data) for e in loaded] == list(range(300))
    assert await events.load(aggregate_subjects("test", "account", "none")) == []


async def test_an_existing_stream_with_wrong_settings_is_refused(nc: NATS) -> None:
    await nc.jetstream().add_stream(StreamConfig(name="EVENTS", subjects=["evt.>"]))
    with pytest.raises(EventStoreError, match="misconfigured"):
        await EventStore(nc).ensure_stream()


async def test_ensure_stream_is_idempotent(nc: NATS) -> None:
    await EventStore(nc).ensure_stream()
    await EventStore(nc).ensure_stream()


def test_servers_older_than_2_11_are_refused() -> None:
    with pytest.raises(EventStoreError, match=r">= 2\.11"):
        check_server_version(2, 10)
    check_server_version(2, 11)
    check_server_version(3, 0)


async def test_a_load_reads_every_subject_of_the_filter_in_log_order(events: EventStore) -> None:
    # Several event types (subjects) of one aggregate, interleaved with another's.
    for i in range(600):
        kind = (Deposited, Withdrawn, Frozen)[i % 3]
        subject = event_subject("test", "account", "a1", kind.__name__)
        await events.append(SCOPE, [Outgoing(subject=subject, event=kind(amount=i))],
                           expected=None, msg_id=f"mix-{i}")
        other = event_subject("test", "account", "b2", kind.__name__)
        await events.append("x", [Outgoing(subject=other, event=kind(amount=-i))],
                           expected=None, msg_id=f"other-{i}")
    loaded = await events.load(SCOPE)
    assert [_amount(e.data) for e in loaded] == list(range(600))
    assert [_amount(e.data) for e in await events.load(SCOPE, after=loaded[299].seq)] == list(
        range(300, 600))


async def test_a_filter_over_more_subjects_than_one_listing_still_loads_everything(
        events: EventStore) -> None:
    for i in range(300):
        subject = event_subject("test", "many", f"m{i}", "Deposited")
        await events.append("x", [Outgoing(subject=subject, event=Deposited(amount=i))],
                           expected=None, msg_id=f"many-{i}")
    loaded = await events.load("evt.test.many.*.*")
    assert [_amount(e.data) for e in loaded] == list(range(300))


async def test_a_remembered_aggregate_is_as_fresh_as_the_log(events: EventStore,
                                                            nc: NATS) -> None:
    mine, theirs = events, EventStore(nc)  # two service instances
    await mine.append(SCOPE, [deposit(1)], expected=0, msg_id="r-1")
    assert [_amount(e.data) for e in await mine.load(SCOPE)] == [1]
    last = (await theirs.load(SCOPE))[-1].seq
    await theirs.append(SCOPE, [deposit(2)], expected=last, msg_id="r-2")
    seen = await mine.load(SCOPE)  # remembered [1], the log says 2 is newer
    assert [_amount(e.data) for e in seen] == [1, 2]
    await mine.append(SCOPE, [deposit(3)], expected=seen[-1].seq, msg_id="r-3")
    assert [_amount(e.data) for e in await mine.load(SCOPE)] == [1, 2, 3]
    assert [_amount(e.data) for e in await theirs.load(SCOPE)] == [1, 2, 3]
    with pytest.raises(ConcurrencyConflict):  # a stale expectation is still refused
        await theirs.append(SCOPE, [deposit(4)], expected=seen[-1].seq, msg_id="r-4")
    assert [_amount(e.data) for e in await theirs.load(SCOPE)] == [1, 2, 3]


async def test_a_remembered_state_folds_only_what_is_new(events: EventStore, nc: NATS) -> None:
    decoder = msgspec.json.Decoder(Deposited)
    folded: list[int] = []

    def add(total: int, event: Deposited) -> int:
        folded.append(event.amount)
        return total + event.amount

    other = EventStore(nc)
    for i in range(1, 4):
        await events.append(SCOPE, [deposit(i)], expected=None, msg_id=f"s-{i}")
    assert await events.state(SCOPE, decoder, add, 0) == (6, 3) and folded == [1, 2, 3]
    await other.append(SCOPE, [deposit(10)], expected=3, msg_id="s-10")
    assert await events.state(SCOPE, decoder, add, 0) == (16, 4) and folded[3:] == [10]
    await events.append(SCOPE, [deposit(100)], expected=4, msg_id="s-100")
    assert await events.state(SCOPE, decoder, add, 0) == (116, 5) and folded[4:] == [100]
    assert await other.state(SCOPE, decoder, add, 0) == (116, 5)  # folded from scratch


async def test_an_expected_last_that_went_stale_fails_its_append_and_is_asked_again(
        events: EventStore, nc: NATS) -> None:
    other = EventStore(nc)
    assert await events.expected_last(SCOPE) == 0
    first = await events.append(SCOPE, [deposit(1)], expected=0, msg_id="e-1")
    assert await events.expected_last(SCOPE) == first  # remembered from our own append
    theirs = await other.append(SCOPE, [deposit(2)], expected=first, msg_id="e-2")

    async def attempt() -> int:
        return await events.append(SCOPE, [deposit(3)],
                                  expected=await events.expected_last(SCOPE), msg_id="e-3")

    with pytest.raises(ConcurrencyConflict):
        await attempt()  # the remembered sequence is stale; the copy is dropped
    landed = await attempt()  # asked the log this time
    assert landed > theirs
    assert [_amount(e.data) for e in await events.load(SCOPE)] == [1, 2, 3]



async def test_a_message_no_append_wrote_is_passed_over_but_counts_for_occ(
        events: EventStore, nc: NATS) -> None:
    js = nc.jetstream()
    await events.append(SCOPE, [deposit(1)], expected=0, msg_id="f-1")
    subject = event_subject("test", "account", "a1", "Deposited")
    foreign = [
        (await js.publish(subject, b'{"algorithm": "Ed25519"}')).seq,  # a reply, say
        (await js.publish(subject, msgspec.json.encode(Deposited(amount=99)))).seq,
        (await js.publish(subject, msgspec.json.encode(Deposited(amount=98)),
                          headers={HDR_EVENT_TYPE: "Withdrawn"})).seq,
    ]
    decoder = msgspec.json.Decoder(Deposited)
    for reader in (events, EventStore(nc)):  # one that remembered the aggregate, one fresh
        assert [_amount(e.data) for e in await reader.load(SCOPE)] == [1]
        assert [e.seq for e in await reader.messages(SCOPE)][1:] == foreign
        assert await reader.state(SCOPE, decoder, _add, 0) == (1, foreign[-1])
        assert (await reader.history(SCOPE, decoder))[1] == foreign[-1]
        assert set(reader.parked) == set(foreign)
        assert all(r.startswith(FOREIGN) for r in reader.parked.values())
        newest = await reader.last_event_on(subject)
        assert newest is not None and _amount(newest.data) == 1
    # The server counts the foreign messages in the aggregate: an append expects them.
    _, last = await events.state(SCOPE, decoder, _add, 0)
    await events.append(SCOPE, [deposit(2)], expected=last, msg_id="f-2")
    assert await events.state(SCOPE, decoder, _add, 0) == (3, last + 1)


async def test_a_load_pages_past_foreign_messages(events: EventStore, nc: NATS) -> None:
    subject = event_subject("test", "account", "a1", "Deposited")
    for i in range(600):
        if i % 5 == 0:
            await nc.jetstream().publish(subject, b"not an event")
        await events.append(SCOPE, [deposit(i)], expected=None, msg_id=f"p-{i}")
    assert [_amount(e.data) for e in await events.load(SCOPE)] == list(range(600))
    assert [_amount(e.data) for e in await events.load(subject)] == list(range(600))


def _add(total: int, event: Deposited) -> int:
    return total + event.amount
