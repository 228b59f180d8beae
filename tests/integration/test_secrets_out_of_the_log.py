"""No secret enters the log: after the guide's whole walkthrough (register, bind, change
nothing but set a cloud-drive password with a security question, verify it, change it,
reset it by the answer), no event holds an Argon2 hash, a password, the answer or the
question; identity keeps them in its own store, and logins still work from it."""

from __future__ import annotations

import io
import uuid
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest
from nats.aio.client import Client as NATS
from rich.console import Console

from cli.demo import Walkthrough
from contracts.identity import (
    AccountClaimed,
    AccountTaken,
    AskQuestion,
    ChangeDrivePassword,
    ChangePassword,
    DeleteMember,
    DrivePasswordSet,
    IdentityClient,
    IdentityEvent,
    MemberRegistered,
    Register,
    ResetDrivePassword,
    SetDrivePassword,
    VerifyDrivePassword,
    legacy_account_subject,
    member_subject,
)
from contracts.subjects import context_subjects
from runtime.eventstore import EventStore, Outgoing
from runtime.passwords import Hasher
from runtime.settings import Settings
from tests.helpers import cid, join, log_in

NOW = datetime.now(UTC)
QUESTION = "我第一只猫叫什么"
ANSWER = "Whiskers-the-Secret"
SECRETS = ("pass-123", "drive-789", "secret-1", "secret-2", "drive-pw1", "drive-pw2",
           "drive-pw3", QUESTION, ANSWER, ANSWER.casefold(), "first pet?", "Rex", "rex")


async def every_event(nc: NATS, events: EventStore) -> list[bytes]:
    """The subject, headers and payload of every message in the log, as bytes."""
    js = nc.jetstream()
    last = (await js.stream_info(events.stream)).state.last_seq
    found = []
    for seq in range(1, last + 1):
        msg = await js.get_msg(events.stream, seq=seq, direct=True)
        headers = "".join(f"{k}:{v}" for k, v in (msg.headers or {}).items())
        found.append(f"{msg.subject}{headers}".encode() + (msg.data or b""))
    return found


async def test_after_the_walkthrough_and_every_password_operation_no_event_holds_a_secret(
        all_services: Settings, nc: NATS, events: EventStore, pool: asyncpg.Pool,
        tmp_path: Path) -> None:
    walk = Walkthrough(nc, Console(file=io.StringIO()), "7070", tmp_path, all_services)
    await walk.run()
    identity = IdentityClient(nc)
    member = await join(identity, "13800000201")
    await identity.change_password(ChangePassword(
        command_id=cid(), session=member.session, old_password="secret-1",
        new_password="secret-2"))
    session = await log_in(identity, "13800000201", "secret-2")
    await identity.drive_password_set(SetDrivePassword(
        command_id=cid(), session=session, password="drive-pw1", question=QUESTION,
        answer=ANSWER))
    await identity.drive_password_verify(VerifyDrivePassword(
        command_id=cid(), session=session, password="drive-pw1"))
    await identity.drive_password_change(ChangeDrivePassword(
        command_id=cid(), session=session, old_password="drive-pw1",
        new_password="drive-pw2"))
    await identity.drive_password_reset(ResetDrivePassword(
        command_id=cid(), session=session, answer=ANSWER, new_password="drive-pw3"))

    logged = await every_event(nc, events)
    kinds = {d.split(b"Nats")[0].rsplit(b".", 1)[-1] for d in logged}
    assert {b"MemberRegistered", b"PasswordChanged", b"DrivePasswordSet",
            b"DrivePasswordChanged"} <= kinds  # the events that used to carry secrets
    for data in logged:
        assert b"$argon2" not in data, data
        for secret in SECRETS:
            assert secret.encode() not in data, (secret, data)
    # identity answers from its own store
    assert (await identity.drive_question(AskQuestion(session=session))).question == QUESTION
    await identity.drive_password_verify(VerifyDrivePassword(
        command_id=cid(), session=session, password="drive-pw3"))
    stored = await pool.fetchval("SELECT count(*) FROM identity.credentials "
                                 "WHERE secret_hash LIKE '$argon2id$%'")
    assert stored >= 8


async def test_a_member_whose_secrets_older_events_carry_still_logs_in_and_moves_to_the_store(
        all_services: Settings, nc: NATS, events: EventStore, pool: asyncpg.Pool) -> None:
    """A log written before the credential store: the hashes are in the events. Such a
    member logs in and uses the drive password and question as before; their next
    password change stores the new secret in identity's store, not the log."""
    hasher = Hasher(time_cost=1, memory_kib=8192, parallelism=1)
    mid = str(uuid.uuid4())
    account = "13800000301"
    legacy: list[tuple[str, IdentityEvent]] = [
        (legacy_account_subject(account, AccountClaimed(account="", member_id=mid)),
         AccountClaimed(account=account, member_id=mid)),
        (member_subject(mid, MemberRegistered(member_id=mid, account="", nickname="", at=NOW)),
         MemberRegistered(member_id=mid, account=account, nickname="旧", at=NOW,
                          password_hash=await hasher.hash("old-pass-1"))),
        (member_subject(mid, DrivePasswordSet(member_id=mid, at=NOW)),
         DrivePasswordSet(member_id=mid, at=NOW, password_hash=await hasher.hash("drive-1"),
                          question="旧问题", answer_hash=await hasher.hash("旧答案"))),
    ]
    for n, (subject, event) in enumerate(legacy):
        await events.append(subject.rsplit(".", 1)[0] + ".*", [Outgoing(
            subject=subject, event=event)], expected=None, msg_id=f"legacy-{mid}-{n}")

    identity = IdentityClient(nc)
    session = await log_in(identity, account, "old-pass-1")
    assert (await identity.drive_question(AskQuestion(session=session))).question == "旧问题"
    await identity.drive_password_verify(VerifyDrivePassword(
        command_id=cid(), session=session, password="drive-1"))
    await identity.drive_password_reset(ResetDrivePassword(
        command_id=cid(), session=session, answer="旧答案", new_password="drive-2"))
    await identity.change_password(ChangePassword(
        command_id=cid(), session=session, old_password="old-pass-1",
        new_password="new-pass-1"))
    session = await log_in(identity, account, "new-pass-1")
    await identity.drive_password_verify(VerifyDrivePassword(
        command_id=cid(), session=session, password="drive-2"))
    kinds = await pool.fetch("SELECT kind FROM identity.credentials WHERE member_id = $1",
                             mid)
    assert sorted(r["kind"] for r in kinds) == ["drive", "password"]

    # The older log's claim (under the name's base64) still holds the name...
    with pytest.raises(AccountTaken):
        await identity.register(Register(command_id=cid(), account=account.upper(),
                                         nickname="冒名", password="secret-9"))
    # ...until its member deletes their account: then the name is free, and claimed
    # anew under a keyed subject that names nobody.
    await identity.delete_member(DeleteMember(command_id=cid(), session=session,
                                              password="new-pass-1"))
    again = await identity.register(Register(command_id=cid(), account=account,
                                             nickname="新人", password="secret-9"))
    assert again.member_id != mid
    claims = [e.subject for e in await events.load(context_subjects("identity", "account"))]
    assert len(claims) == 3 and claims[-1].split(".")[3].startswith("k"), claims
