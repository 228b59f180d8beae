"""Every service: any payload on any endpoint, and read models equal a fresh replay."""

from __future__ import annotations

import asyncio
import json
import uuid

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nats.aio.client import Client as NATS

from contracts.errors import LedgerError, TooLarge
from contracts.identity import (
    AccountTaken,
    Bind,
    ChangeNickname,
    IdentityClient,
    Login,
    Me,
    PublicKeyRequest,
    Register,
    SetDrivePassword,
    VerifyDrivePassword,
    WrongDrivePassword,
)
from contracts.social import AddFriend, RemoveFriend, SocialClient
from runtime.eventstore import EventStore
from runtime.replay import compare, rebuild
from runtime.settings import Settings
from services.registry import SERVICES, named
from tests.helpers import WeChat, log_in, openid_proof, proof_of
from tests.services import read_models

ENDPOINTS = [(service.name, op.name) for service in SERVICES
             for op in service.client.operations()]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=30)
awkward_text = st.sampled_from(["a.b", "*", ">", "", " ", "\u0000", "é" * 300, "\ud7ff",
                                "x" * 5000, "a b", "$SRV", "..", "🙂"])
request_like = st.fixed_dictionaries({}, optional={
    "command_id": awkward_text | st.text(), "session": awkward_text | st.text(),
    "account": awkward_text, "password": awkward_text, "nickname": awkward_text,
    "openid": awkward_text, "seq": st.integers() | st.text(), "answer": awkward_text,
    "question": awkward_text, "new_password": awkward_text, "old_password": awkward_text,
    "owner_id": awkward_text, "set_id": awkward_text, "set_name": awkward_text,
    "year": st.integers(-5, 5000) | awkward_text, "period": st.integers(-1, 20),
    "size": st.integers(-1, 1 << 62), "sha256": awkward_text | st.just("0" * 64),
    "upload_id": awkward_text, "version_id": awkward_text, "friends": st.lists(awkward_text),
    "member_id": awkward_text, "access": st.sampled_from(["read", "write", "x"]),
    "permission": st.sampled_from(["read-only", "read-write", "none"]), "quota": st.integers(),
    "years": st.lists(st.integers()), "expires_at": awkward_text, "at": awkward_text})
payloads = (st.binary(max_size=3000)
            | json_values.map(lambda v: json.dumps(v).encode())
            | request_like.map(lambda v: json.dumps(v).encode())
            | st.integers(1, 60).map(lambda depth: b"[" * depth * 1000))


@pytest.fixture
def services(all_services: Settings, nc: NATS) -> NATS:
    """A connection, with all four services running."""
    return nc


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(endpoint=st.sampled_from(ENDPOINTS), payload=payloads)
async def test_any_payload_on_any_endpoint_gets_a_typed_error_and_changes_nothing(
        services: NATS, events: EventStore, endpoint: tuple[str, str], payload: bytes) -> None:
    context, op = endpoint
    before = await events.last_sequence()
    try:
        await named(context).client(services, timeout=10).call_raw(op, payload)
    except LedgerError as err:
        assert err.code != "internal", err
        assert await events.last_sequence() == before
    assert await IdentityClient(services).public_key(PublicKeyRequest())


async def test_subject_breaking_values_are_only_data(services: NATS, all_services: Settings,
                                                     wechat: WeChat) -> None:
    identity = IdentityClient(services, timeout=10)
    for bad in ["**>", ">>>", "a b", "a\u0000b"]:
        with pytest.raises(LedgerError) as err:
            await identity.register(Register(command_id=uuid.uuid4().hex, account=bad,
                                              password="secret-1", nickname="n"))
        assert err.value.code == "invalid_account"
    # dots are allowed in accounts (phone numbers, e-mail-like names): encoded in subjects
    await identity.register(Register(command_id=uuid.uuid4().hex, account="a.b",
                                     password="secret-1", nickname="n"))
    with pytest.raises(AccountTaken):
        await identity.register(Register(command_id=uuid.uuid4().hex, account="A.B",
                                         password="secret-1", nickname="n"))
    # openids are free text: dots and wildcards are encoded, never put raw in a subject
    await identity.register(Register(command_id=uuid.uuid4().hex, account="dots",
                                     password="secret-1", nickname="d"))
    await identity.bind(Bind(command_id=uuid.uuid4().hex, account="dots", password="secret-1",
                             openid_proof=proof_of("o.*.>", all_services), nickname="d"))
    # the longest openid, of four-byte characters, still makes one subject token
    await identity.register(Register(command_id=uuid.uuid4().hex, account="longid",
                                     password="secret-1", nickname="l"))
    await identity.bind(Bind(command_id=uuid.uuid4().hex, account="longid",
                             openid_proof=proof_of("🙂" * 128, all_services),
                             password="secret-1", nickname="l"))
    assert (await identity.me(Me(session=await log_in(identity, "longid")))).bound


async def test_rebuilding_every_read_model_equals_the_live_one(
        services: NATS, pool: asyncpg.Pool, events: EventStore, wechat: WeChat) -> None:
    await _some_history(services, wechat)
    for model in read_models():
        projection = model.projection()
        # A checkpoint moves only with the events its projection reads: wait for the
        # last of those, not for the log's end.
        lasts = [await events.last_on(subject) for subject in projection.subjects]
        seq = max((e.seq for e in lasts if e is not None), default=0)
        await _wait_live(pool, model.schema, projection.name, seq)
        await rebuild(services, pool, projection, f"{model.schema}_rebuilt")
        assert await compare(pool, model.schema, f"{model.schema}_rebuilt", model.tables) == []
    # The history is in them: its members and friendships are in social's tables.
    assert await pool.fetchval("SELECT count(*) FROM social.directory") > 0
    assert await pool.fetchval("SELECT count(*) FROM social.friends") > 0


async def _wait_live(pool: asyncpg.Pool, schema: str, name: str, seq: int) -> None:
    for _ in range(500):
        at = await pool.fetchval(f"SELECT last_seq FROM {schema}.checkpoints "
                                 "WHERE projection = $1", name)
        if at is not None and at >= seq:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{schema} did not reach {seq}")


async def _some_history(nc: NATS, wechat: WeChat) -> None:
    identity, social = IdentityClient(nc, timeout=10), SocialClient(nc, timeout=10)
    sessions, registered = [], 0
    for i in range(6):
        registered = (await identity.register(Register(
            command_id=uuid.uuid4().hex, account=f"mem{i}", password="secret-1",
            nickname=f"成员{i}"))).seq
        sessions.append((await identity.login(Login(account=f"mem{i}", password="secret-1")))
                        .session)
    last = registered  # social's directory must hold the friends before they are named
    for i in range(1, 6):
        last = (await social.add_friend(AddFriend(command_id=uuid.uuid4().hex,
                                                  session=sessions[0], account=f"mem{i}",
                                                  nickname=f"成员{i}", seq=last))).seq
    await social.remove_friend(RemoveFriend(command_id=uuid.uuid4().hex, session=sessions[3],
                                            account="mem0", seq=last))
    await identity.change_nickname(ChangeNickname(command_id=uuid.uuid4().hex,
                                                  session=sessions[1], nickname="renamed"))
    await identity.bind(Bind(command_id=uuid.uuid4().hex, account="mem2", password="secret-1",
                             openid_proof=await openid_proof(identity, wechat, "mem2"),
                             nickname="成员2"))
    await identity.drive_password_set(SetDrivePassword(
        command_id=uuid.uuid4().hex, session=sessions[4], password="drive-pw", question="q",
        answer="a"))
    with pytest.raises(WrongDrivePassword):
        await identity.drive_password_verify(VerifyDrivePassword(
            command_id=uuid.uuid4().hex, session=sessions[4], password="nope-nope"))


@pytest.mark.parametrize(("context", "op"), ENDPOINTS)
async def test_oversized_payloads_are_refused_on_every_endpoint(
        services: NATS, context: str, op: str) -> None:
    client = named(context).client(services, timeout=10)
    with pytest.raises(TooLarge):
        await client.call_raw(op, json.dumps({"account": "x" * 400_000}).encode())
    # Past the server's max_payload (1 MiB) the client cannot even send it.
    with pytest.raises(TooLarge, match="message bus"):
        await client.call_raw(op, b"x" * (1024 * 1024 + 1))
    assert await IdentityClient(services).public_key(PublicKeyRequest())
