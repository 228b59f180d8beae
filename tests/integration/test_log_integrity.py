"""The log only holds events: no reply subject a caller picks makes a service write into
it, and a message that is there without an append's headers is parked, never folded."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable
from datetime import UTC, datetime

import asyncpg
import msgspec
import pytest
from nats.aio.client import Client as NATS

from cli.operate import ask_all
from contracts.base import HDR_EVENT_TYPE
from contracts.errors import BadRequest
from contracts.identity import (
    AnyIdentityEvent,
    Bind,
    ChangeNickname,
    IdentityClient,
    Login,
    Me,
    Register,
    SetDrivePassword,
    member_subjects,
)
from contracts.social import AddFriend, ListFriends, SocialClient
from contracts.subjects import event_subject
from runtime.eventstore import FOREIGN, EventStore
from runtime.settings import Settings
from services.registry import SERVICES
from tests.helpers import join

_identity_decoder = msgspec.json.Decoder(AnyIdentityEvent)
# The read models with a member directory: schema -> projection.
PROJECTING_MEMBERS = {"social": "social", "sharing": "access"}


@pytest.fixture
def services(all_services: Settings, nc: NATS) -> NATS:
    """A connection, with all four services running."""
    return nc


async def _member(nc: NATS, account: str, nickname: str = "Ann") -> tuple[str, str]:
    """A registered member's id and a session."""
    joined = await join(IdentityClient(nc, timeout=10), account, nickname)
    return joined.member_id, joined.session


async def _endpoint_errors(nc: NATS) -> dict[str, int]:
    """Errors counted per endpoint subject, from every running instance's stats."""
    found: dict[str, int] = {}
    for service in await ask_all(nc, "$SRV.STATS"):
        for ep in service["endpoints"]:
            found[ep["subject"]] = found.get(ep["subject"], 0) + ep["data"]["errors"]
    return found


async def _every_endpoint(nc: NATS) -> list[str]:
    subjects = [ep["subject"] for service in await ask_all(nc, "$SRV.INFO")
                for ep in service["endpoints"]]
    declared = {f"{s.name}.{op.name}" for s in SERVICES for op in s.client.operations()}
    admin = {f"admin.{s.name}.replay" for s in SERVICES if s.read_model is not None}
    assert set(subjects) == declared | admin  # the operators' replay included
    return subjects


async def _errors_once_counted(nc: NATS, subjects: list[str],
                               within: float = 3.0) -> dict[str, int]:
    """Errors per endpoint, once each of ``subjects`` counts one (or ``within`` passed)."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        errors = await _endpoint_errors(nc)
        if (all(errors.get(s, 0) >= 1 for s in subjects)
                or asyncio.get_running_loop().time() > deadline):
            await asyncio.sleep(0.2)  # time for a reply, were one sent, to be stored
            return errors


async def test_a_reply_subject_in_the_log_gets_no_answer_from_any_endpoint(
        services: NATS, events: EventStore) -> None:
    member_id, token = await _member(services, "victim")
    target = event_subject("identity", "member", member_id, "MemberRegistered")
    endpoints = await _every_endpoint(services)
    before = await events.last_sequence()
    for subject in endpoints:
        # An empty object is a valid request for some endpoints (public_key) and a bad
        # one for the rest: neither a reply nor an error reply may land in the log.
        await services.publish(subject, b"{}", reply=target)
    await services.flush()
    errors = await _errors_once_counted(services, endpoints)
    assert await events.last_sequence() == before
    assert [s for s in endpoints if errors.get(s, 0) < 1] == []  # each refusal counted
    me = await IdentityClient(services, timeout=10).me(Me(session=token))
    assert me.member_id == member_id
    history, _ = await events.history(member_subjects(member_id), _identity_decoder)
    assert [type(e).__name__ for e in history] == ["MemberRegistered"]


async def test_discovery_requests_never_answer_into_the_log(
        services: NATS, events: EventStore) -> None:
    member_id, token = await _member(services, "victim")
    target = event_subject("identity", "member", member_id, "MemberRegistered")
    before = await events.last_sequence()
    for verb in ("PING", "INFO", "STATS"):
        for subject in (f"$SRV.{verb}", f"$SRV.{verb}.identity"):
            await services.publish(subject, b"", reply=target)
        # Each discovery subject is one subscription, served in order: once a fair
        # request is answered, the crafted one before it has been handled.
        assert len(await ask_all(services, f"$SRV.{verb}")) == len(SERVICES)
        assert len(await ask_all(services, f"$SRV.{verb}.identity")) == 1
    await asyncio.sleep(0.2)
    assert await events.last_sequence() == before
    assert (await IdentityClient(services, timeout=10).me(Me(session=token))).member_id


async def _raw(nc: NATS, subject: str, data: bytes,
               headers: dict[str, str] | None = None) -> int:
    ack = await nc.jetstream().publish(subject, data, headers=headers)
    return int(ack.seq)


def _forged_nickname(member_id: str, nickname: str) -> bytes:
    return msgspec.json.encode({"type": "NicknameChanged", "member_id": member_id,
                                "nickname": nickname, "at": datetime.now(UTC)})


async def _plant_foreign_messages(nc: NATS, member_id: str) -> list[int]:
    """What a crafted reply or a raw publish leaves in a member's stream."""
    def on(kind: str) -> str:
        return event_subject("identity", "member", member_id, kind)
    return [
        await _raw(nc, on("MemberRegistered"), b'{"algorithm": "Ed25519", "key": "x"}'),
        await _raw(nc, on("PasswordChanged"), b"\xff not json"),
        # A well-formed event, but not appended: no event-type header.
        await _raw(nc, on("NicknameChanged"), _forged_nickname(member_id, "forged")),
        # An event-type header that is not the subject's.
        await _raw(nc, on("MemberRegistered"), _forged_nickname(member_id, "forged"),
                   {HDR_EVENT_TYPE: "NicknameChanged"}),
    ]


async def test_foreign_messages_in_a_member_are_parked_and_the_member_works(
        services: NATS, events: EventStore, pool: asyncpg.Pool) -> None:
    member_id, token = await _member(services, "victim", "Ann")
    foreign = await _plant_foreign_messages(services, member_id)
    loaded = await events.load(member_subjects(member_id))
    assert [e.type for e in loaded] == ["MemberRegistered"]
    assert set(foreign) <= set(events.parked)
    identity = IdentityClient(services, timeout=10)
    assert (await identity.me(Me(session=token))).nickname == "Ann"
    # Appends on the member still pass their expected-sequence check.
    await identity.change_nickname(ChangeNickname(command_id=uuid.uuid4().hex,
                                                  session=token, nickname="Bea"))
    await identity.drive_password_set(SetDrivePassword(
        command_id=uuid.uuid4().hex, session=token, password="drive-pw", question="q?",
        answer="a"))
    token = (await identity.login(Login(account="victim", password="secret-1"))).session
    me = await identity.me(Me(session=token))
    assert (me.nickname, me.drive_password_set) == ("Bea", True)
    # Other services check a session against the member's newest PasswordChanged.
    friends = await SocialClient(services, timeout=10).list_friends(ListFriends(session=token))
    assert friends.friends == []
    await _projections_parked(pool, events, foreign)


async def _projections_parked(pool: asyncpg.Pool, events: EventStore,
                              foreign: list[int]) -> None:
    # The projections that read members went past the foreign messages without applying
    # them.
    await _checkpoints_reach(pool, await events.last_sequence())
    for schema, projection in PROJECTING_MEMBERS.items():
        nicknames = {r["nickname"] for r in await pool.fetch(
            f"SELECT nickname FROM {schema}.directory")}
        assert nicknames == {"Bea"}
        parked = await pool.fetch(f"SELECT stream_seq, reason FROM {schema}.dead_letters "
                                  "WHERE projection = $1 ORDER BY stream_seq", projection)
        assert [r["stream_seq"] for r in parked] == foreign
        assert all(r["reason"].startswith(FOREIGN) for r in parked)


async def _checkpoints_reach(pool: asyncpg.Pool, seq: int) -> None:
    for _ in range(500):
        rows = [await pool.fetch(f"SELECT last_seq FROM {schema}.checkpoints "
                                 "WHERE projection = $1", projection)
                for schema, projection in PROJECTING_MEMBERS.items()]
        if all(r["last_seq"] >= seq for found in rows for r in found):
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"projections did not reach {seq}")


UNSAFE = ["\u202e", "\u2066", "\u2069", "\u200f", "\u0000", "\u0007", "\u001b[31m", "\u0085",
          "\n", "\u2028", "\ufeff"]


async def _refused(call: Awaitable[object]) -> None:
    with pytest.raises(BadRequest) as err:
        await call
    assert err.value.code == "bad_request", err.value


async def test_control_and_bidi_characters_in_names_and_questions_are_bad_requests(
        services: NATS) -> None:
    _, token = await _member(services, "plain", "Ann")
    await _member(services, "friend", "Bob")
    for bad in UNSAFE:
        await _every_name_and_question_refused(services, token, bad)


async def _every_name_and_question_refused(nc: NATS, token: str, bad: str) -> None:
    identity, social = IdentityClient(nc, timeout=10), SocialClient(nc, timeout=10)
    nickname = f"Bo{bad}b"
    await _refused(identity.register(Register(command_id=uuid.uuid4().hex, account="other",
                                              password="secret-1", nickname=nickname)))
    await _refused(identity.bind(Bind(command_id=uuid.uuid4().hex, openid_proof="x.y",
                                      account="plain", password="secret-1",
                                      nickname=nickname)))
    await _refused(identity.change_nickname(ChangeNickname(
        command_id=uuid.uuid4().hex, session=token, nickname=nickname)))
    await _refused(social.add_friend(AddFriend(command_id=uuid.uuid4().hex, session=token,
                                               account="friend", nickname=nickname)))
    await _refused(identity.drive_password_set(SetDrivePassword(
        command_id=uuid.uuid4().hex, session=token, password="drive-pw",
        question=f"first{bad} pet?", answer="Rex")))
    assert not (await identity.me(Me(session=token))).drive_password_set
