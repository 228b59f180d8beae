"""The operator's log rewrite: an older log (hashes, the question and personal data in the
clear, claims under the names' base64) copied into a new stream that holds none of it,
on which every service works and every read model rebuilds to the same rows."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime

import asyncpg
import msgspec
import pytest
from nats.aio.client import Client as NATS

from cli.main import main
from cli.rewrite import RETIRED
from contracts.admin import AdminClient, replay
from contracts.base import HDR_ACTOR, Event
from contracts.identity import (
    AccountClaimed,
    AccountTaken,
    AskQuestion,
    DrivePasswordSet,
    IdentityClient,
    Me,
    MemberBound,
    MemberRegistered,
    NicknameChanged,
    OpenidClaimed,
    PasswordChanged,
    Register,
    VerifyDrivePassword,
    account_key,
    legacy_account_subject,
    legacy_openid_subject,
    member_subject,
    member_subjects,
)
from contracts.sharing import ShareGranted, share_id, share_subject
from contracts.social import FriendAdded, ListFriends, SocialClient, friendship_subject, pair_id
from contracts.subjects import encode_id
from runtime.eventstore import EventStore, Meta, Outgoing, event_headers
from runtime.passwords import Hasher
from runtime.projector import Projector
from runtime.replay import compare, rebuild
from runtime.settings import Settings
from services.registry import SERVICES
from tests.helpers import cid, log_in
from tests.services import read_models, running, service_settings

NOW = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
QUESTION = "旧问题是什么"
ACCOUNT_A, ACCOUNT_B, OPENID = "13800000401", "13800000402", "oLegacyOpenId-401"
PLAIN = ("13800000401", "13800000402", "老王", "小李", OPENID, "旧账套名", QUESTION)
TRIAL, NEW = "EVENTS_TRIAL", "EVENTS_V2"


class Legacy(msgspec.Struct, frozen=True, kw_only=True):
    """The members of the older log, and where its tell-tale data is."""

    a: str
    b: str
    foreign_seq: int
    sealed_seq: int


async def publish_legacy(nc: NATS, subject: str, event: Event, n: int) -> int:
    """Publish an event as an append did before sealing: fields as they are."""
    headers = event_headers(event, f"legacy-{n}:0", Meta(actor="legacy", correlation_id=f"c{n}"))
    ack = await nc.jetstream().publish(subject, msgspec.json.encode(event), headers=headers)
    return ack.seq


async def older_log(nc: NATS, events: EventStore, hasher: Hasher) -> Legacy:
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    share = share_id(a, "set-1")
    log: list[tuple[str, Event]] = [
        (legacy_account_subject(ACCOUNT_A, AccountClaimed(account="", member_id=a)),
         AccountClaimed(account=ACCOUNT_A, member_id=a)),
        (member_subject(a, MemberRegistered(member_id=a, account="", nickname="", at=NOW)),
         MemberRegistered(member_id=a, account=ACCOUNT_A, nickname="老王", at=NOW,
                          password_hash=await hasher.hash("old-pass-a"))),
        (legacy_account_subject(ACCOUNT_B, AccountClaimed(account="", member_id=b)),
         AccountClaimed(account=ACCOUNT_B, member_id=b)),
        (member_subject(b, MemberRegistered(member_id=b, account="", nickname="", at=NOW)),
         MemberRegistered(member_id=b, account=ACCOUNT_B, nickname="小李", at=NOW,
                          password_hash=await hasher.hash("old-pass-b"))),
        (member_subject(b, PasswordChanged(member_id=b, at=NOW)),
         PasswordChanged(member_id=b, at=NOW, password_hash=await hasher.hash("new-pass-b"))),
        (member_subject(a, DrivePasswordSet(member_id=a, at=NOW)),
         DrivePasswordSet(member_id=a, at=NOW, password_hash=await hasher.hash("drive-a"),
                          question=QUESTION, answer_hash=await hasher.hash("答案"))),
        (legacy_openid_subject(OPENID, OpenidClaimed(openid="", member_id=a)),
         OpenidClaimed(openid=OPENID, member_id=a)),
        (member_subject(a, MemberBound(member_id=a, openid="", at=NOW)),
         MemberBound(member_id=a, openid=OPENID, at=NOW)),
        (friendship_subject(pair_id(a, b), FriendAdded(
            friendship_id="", member_id="", friend_id="", friend_nickname="", at=NOW)),
         FriendAdded(friendship_id=pair_id(a, b), member_id=a, friend_id=b,
                     friend_nickname="小李", at=NOW)),
        (share_subject(share, ShareGranted(share_id="", owner_id="", set_id="", set_name="",
                                           friend_id="", at=NOW)),
         ShareGranted(share_id=share, owner_id=a, set_id="set-1", set_name="旧账套名",
                      friend_id=b, at=NOW)),
    ]
    for n, (subject, event) in enumerate(log):
        await publish_legacy(nc, subject, event, n)
    foreign = await nc.jetstream().publish(f"evt.identity.member.{a}.Junk", b"\xffnot json")
    # Appended today: sealed already, to be copied byte for byte.
    changed = NicknameChanged(member_id=b, nickname="小李2", at=NOW)
    sealed = await events.append(member_subjects(b), [Outgoing(
        subject=member_subject(b, changed), event=changed)], expected=None, msg_id="now-1")
    # The same message id twice, further apart than the deduplication window.
    await shorten_window(nc, 1.0)
    await asyncio.sleep(1.2)
    renamed = NicknameChanged(member_id=a, nickname="老王2", at=NOW)
    await publish_legacy(nc, member_subject(a, renamed), renamed, 0)
    await shorten_window(nc, 120.0)
    return Legacy(a=a, b=b, foreign_seq=foreign.seq, sealed_seq=sealed)


async def shorten_window(nc: NATS, seconds: float) -> None:
    js = nc.jetstream()
    config = (await js.stream_info("EVENTS")).config
    await js.update_stream(dataclasses.replace(config, duplicate_window=seconds))


async def messages(nc: NATS, stream: str) -> list[tuple[str, dict[str, str], bytes]]:
    """Every message of a stream: subject, headers, payload."""
    js = nc.jetstream()
    last = (await js.stream_info(stream)).state.last_seq
    found = []
    for seq in range(1, last + 1):
        msg = await js.get_msg(stream, seq=seq, direct=True)
        found.append((msg.subject or "", dict(msg.headers or {}), msg.data or b""))
    return found


def nothing_to_tell(log: list[tuple[str, dict[str, str], bytes]]) -> None:
    """No message holds a hash, the question, a personal field in the clear or a
    claim subject made from a name."""
    tell_tales = [*PLAIN, encode_id(account_key(ACCOUNT_A)), encode_id(account_key(ACCOUNT_B)),
                  encode_id(OPENID)]
    for subject, headers, data in log:
        raw = subject.encode() + repr(headers).encode() + data
        assert b"$argon2" not in raw, raw
        for text in tell_tales:
            assert text.encode() not in raw, (text, raw)


def cli(settings: Settings, monkeypatch: pytest.MonkeyPatch, *argv: str) -> int:
    """``ledgershare …`` as an operator runs it, with the test's servers in the environment."""
    for name, value in (("HOME", settings.home), ("NATS_URL", settings.nats_url),
                        ("PG_DSN", settings.pg_dsn), ("SUBJECT_KEY", settings.subject_key),
                        ("STREAM", settings.stream)):
        monkeypatch.setenv(f"LEDGERSHARE_{name}", value)
    return main(list(argv))


async def rebuilt(nc: NATS, pool: asyncpg.Pool, stream: str, prefix: str) -> None:
    for model in read_models():
        await rebuild(nc, pool, model.projection(), f"{prefix}_{model.schema}", stream=stream)


async def differences(pool: asyncpg.Pool, left: str, right: str) -> list[str]:
    found = []
    for model in read_models():
        found += await compare(pool, f"{left}_{model.schema}", f"{right}_{model.schema}",
                               model.tables)
    return found


async def friends_of(nc: NATS, session: str) -> list[tuple[str, str]]:
    """A member's friends, as social's read model lists them."""
    found = await SocialClient(nc, timeout=10).list_friends(ListFriends(session=session))
    return [(f.account, f.nickname) for f in found.friends]


@asynccontextmanager
async def services_on(settings: Settings, nc: NATS, pool: asyncpg.Pool
                      ) -> AsyncIterator[list[Projector]]:
    """Every service, on ``settings.stream`` and with its subject key as given; yields
    their projectors."""
    events = EventStore(nc, settings.stream)
    await events.ensure_stream()  # verifies the rewritten stream has the log's settings
    async with AsyncExitStack() as stack:
        wirings = [await stack.enter_async_context(running(s.build, settings, nc, pool, events))
                   for s in SERVICES]
        yield [p for w in wirings for p in w.projectors]


async def refusal(projectors: list[Projector], within: float = 15.0) -> str:
    """Why the first projector that refuses its checkpoint does (waiting for one)."""
    deadline = time.monotonic() + within
    while not (refused := [p.refused for p in projectors if p.refused]):
        assert time.monotonic() < deadline, "no projector refuses"
        await asyncio.sleep(0.1)
    return refused[0]


async def all_serving(projectors: list[Projector], within: float = 15.0) -> None:
    """Wait until no projector refuses its checkpoint any more."""
    deadline = time.monotonic() + within
    while refusing := [p.consumer for p in projectors if p.refused or not p.active]:
        assert time.monotonic() < deadline, refusing
        await asyncio.sleep(0.1)


async def test_a_rewritten_log_holds_no_secret_or_personal_data_and_serves_the_same(
        settings: Settings, nc: NATS, events: EventStore, pool: asyncpg.Pool,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    configured = service_settings(settings)
    legacy = await older_log(nc, events, Hasher(time_cost=1, memory_kib=8192, parallelism=1))
    before = await messages(nc, "EVENTS")
    assert any(b"$argon2" in data for _, _, data in before)  # the log is really an older one
    async with services_on(configured, nc, pool):  # live read models, built from the old log
        session_b = await log_in(IdentityClient(nc, timeout=10), ACCOUNT_B, "new-pass-b")
        assert await friends_of(nc, session_b) == [(ACCOUNT_A, "老王2")]

    # A trial copy first (the old stream stays live), then the rewrite with the switch.
    run = asyncio.to_thread
    assert await run(cli, configured, monkeypatch, "log", "rewrite", "--into", TRIAL,
                     "--no-switch", "--json") == 0
    trial = msgspec.json.decode(capsys.readouterr().out.splitlines()[-1])
    assert trial["upcast"] == {"AccountClaimed": 2, "MemberRegistered": 2,
                               "PasswordChanged": 1, "DrivePasswordSet": 1,
                               "OpenidClaimed": 1, "MemberBound": 1, "FriendAdded": 1,
                               "ShareGranted": 1, "NicknameChanged": 1}, trial
    assert trial["renamed_message_ids"] == 1
    assert [u["seq"] for u in trial["unchanged"]] == [legacy.foreign_seq]
    assert trial["shifted_sequences"] == 0
    await rebuilt(nc, pool, "EVENTS", "old")
    await rebuilt(nc, pool, TRIAL, "trial")
    assert await differences(pool, "old", "trial") == []
    assert await run(cli, configured, monkeypatch, "log", "rewrite", "--into", TRIAL) == 1
    assert "not empty" in capsys.readouterr().out
    assert await run(cli, configured, monkeypatch, "log", "rewrite", "--into", NEW) == 0
    said = capsys.readouterr().out
    assert "msg/s" in said and "DrivePasswordSet" in said and f"{NEW} now holds evt.>" in said

    after = await messages(nc, NEW)
    assert len(after) == len(before)
    ids = [h["Nats-Msg-Id"] for _, h, _ in after if "Nats-Msg-Id" in h]
    assert len(set(ids)) == len(ids) == len(before) - 1  # all but the foreign message
    nothing_to_tell(after)
    assert [h.get(HDR_ACTOR) for _, h, _ in after[:3]] == ["legacy"] * 3  # headers kept
    assert after[legacy.foreign_seq - 1][2] == before[legacy.foreign_seq - 1][2]
    assert after[legacy.sealed_seq - 1][2] == before[legacy.sealed_seq - 1][2]
    old = await nc.jetstream().stream_info("EVENTS")
    assert old.config.subjects == [f"{RETIRED}.EVENTS"]

    await rebuilt(nc, pool, NEW, "new")
    assert await differences(pool, "old", "new") == []

    async with services_on(configured.with_overrides(stream=NEW), nc, pool) as projectors:
        identity = IdentityClient(nc, timeout=10)
        session = await log_in(identity, ACCOUNT_A, "old-pass-a")
        me = await identity.me(Me(session=session))
        assert (me.account, me.nickname, me.bound) == (ACCOUNT_A, "老王2", True)
        assert (await identity.drive_question(AskQuestion(session=session))).question == QUESTION
        await identity.drive_password_verify(VerifyDrivePassword(
            command_id=cid(), session=session, password="drive-a"))
        session_b = await log_in(identity, ACCOUNT_B, "new-pass-b")
        # The read models count in the old stream: they refuse until rebuilt from this one.
        assert "rebuild it" in await refusal(projectors)
        for model in read_models():
            rebuilt_model = await replay(AdminClient(nc, context=model.schema, timeout=60),
                                         swap=True, progress=lambda _: None)
            # The live rows (from the old log) equal those rebuilt from the new one.
            assert rebuilt_model.swapped and rebuilt_model.differences == [], rebuilt_model
        assert await friends_of(nc, session_b) == [(ACCOUNT_A, "老王2")]
        # Policies keep their place: every sequence is the same in the new stream.
        for schema in ("identity", *(m.schema for m in read_models())):
            await pool.execute(f"UPDATE {schema}.checkpoints SET stream_created = NULL "
                               "WHERE projection LIKE '%policy'")
        await all_serving(projectors)
        with pytest.raises(AccountTaken):  # the claim, found under its keyed subject
            await identity.register(Register(command_id=cid(), account=ACCOUNT_B.upper(),
                                             nickname="冒名", password="secret-9"))
