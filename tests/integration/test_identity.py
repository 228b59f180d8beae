"""identity over NATS against real servers: registration, binding, login, tokens, drive."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from contracts.errors import BadRequest, CommandReused
from contracts.identity import (
    AccountTaken,
    AlreadyBound,
    Bind,
    ChangePassword,
    DriveLocked,
    DrivePasswordAlreadySet,
    IdentityClient,
    InvalidAccount,
    InvalidCredentials,
    InvalidNickname,
    InvalidToken,
    Login,
    LoginWechat,
    Me,
    OpenidTaken,
    Register,
    ResetDrivePassword,
    SetDrivePassword,
    SnapshotUser,
    Unbind,
    VerifyDrivePassword,
    WechatCodeRefused,
    WrongAnswer,
    WrongDrivePassword,
)
from contracts.subjects import context_subjects
from runtime.app import Wiring
from runtime.eventstore import EventStore
from runtime.tokens import Signer, new_private_key
from tests.helpers import WeChat, cid, log_in, openid_proof, register, wechat_session


async def test_seed_step_one_register_bind_and_member_info(
        identity_client: IdentityClient, wechat: WeChat) -> None:
    await register(identity_client, "13800000001", "张三")
    await register(identity_client, "13800000002", "李四")
    proof = await openid_proof(identity_client, wechat, "zhangsan")
    await identity_client.bind(Bind(command_id=cid(), openid_proof=proof,
                                    account="13800000001", password="secret-1",
                                    nickname="张三"))
    token = await wechat_session(identity_client, wechat, "zhangsan")
    info = await identity_client.me(Me(session=token))
    assert (info.account, info.nickname, info.bound, info.drive_password_set) == (
        "13800000001", "张三", True, False)
    other = await identity_client.me(Me(session=await log_in(identity_client, "13800000002")))
    assert other.bound is False


async def test_fifty_concurrent_registrations_of_one_account_make_one_member(
        identity_client: IdentityClient, identity: Wiring) -> None:
    results = await asyncio.gather(
        *(register(identity_client, "Same.Name" if i % 2 else "same.name", f"n{i}")
          for i in range(50)),
        return_exceptions=True)
    winners = [r for r in results if isinstance(r, str)]
    assert len(winners) == 1
    assert all(isinstance(r, AccountTaken) for r in results if not isinstance(r, str))
    members = await EventStore(identity.host.nc).load(context_subjects("identity", "member"))
    assert [e.type for e in members] == ["MemberRegistered"]


async def test_a_retried_registration_is_one_member(identity_client: IdentityClient) -> None:
    command = Register(command_id=cid(), account="retry.me", password="secret-1", nickname="r")
    first = await identity_client.register(command)
    second = await identity_client.register(command)
    assert (first.member_id, first.seq) == (second.member_id, second.seq)


@pytest.mark.parametrize(("account", "nickname", "error"), [
    ("ab", "ok", InvalidAccount), ("has space", "ok", InvalidAccount),
    ("a.b*", "ok", InvalidAccount), ("good", "x" * 21, InvalidNickname),
    ("good", "   ", InvalidNickname),
    # invisible and bidi characters are refused as the request is decoded
    ("good", "a\u200bb", BadRequest), ("good", "a\u202eb", BadRequest),
])
async def test_bad_registrations_are_refused_with_their_code(
        identity_client: IdentityClient, account: str, nickname: str,
        error: type[Exception]) -> None:
    with pytest.raises(error):
        await register(identity_client, account, nickname)


async def test_unknown_account_answers_like_a_wrong_password(
        identity_client: IdentityClient) -> None:
    await register(identity_client, "known", "k")
    with pytest.raises(InvalidCredentials) as wrong:
        await identity_client.login(Login(account="known", password="not-it-1"))
    with pytest.raises(InvalidCredentials) as unknown:
        await identity_client.login(Login(account="unknown", password="not-it-1"))
    assert wrong.value.message == unknown.value.message


async def test_binding_rules(identity_client: IdentityClient, wechat: WeChat) -> None:
    await register(identity_client, "alice", "Alice")
    await register(identity_client, "bob", "Bob")
    wx1 = await openid_proof(identity_client, wechat, "wx-1")
    bind = Bind(command_id=cid(), openid_proof=wx1, account="alice", password="secret-1",
                nickname="Alice")
    await identity_client.bind(bind)
    await identity_client.bind(bind)  # the same binding again is no error
    wx2 = await openid_proof(identity_client, wechat, "wx-2")
    with pytest.raises(InvalidCredentials):
        await identity_client.bind(Bind(command_id=cid(), openid_proof=wx2, account="bob",
                                        password="secret-1", nickname="Not Bob"))
    with pytest.raises(OpenidTaken):  # a proof obtained before alice bound wx-1
        await identity_client.bind(Bind(command_id=cid(), openid_proof=wx1, account="bob",
                                        password="secret-1", nickname="Bob"))
    wx3 = await openid_proof(identity_client, wechat, "wx-3")
    with pytest.raises(AlreadyBound):
        await identity_client.bind(Bind(command_id=cid(), openid_proof=wx3, account="alice",
                                        password="secret-1", nickname="Alice"))
    alice = await log_in(identity_client, "alice")
    await identity_client.unbind(Unbind(command_id=cid(), session=alice))
    again = await openid_proof(identity_client, wechat, "wx-1")  # bound to no one now
    await identity_client.bind(Bind(command_id=cid(), openid_proof=again, account="bob",
                                    password="secret-1", nickname="Bob"))
    token = await wechat_session(identity_client, wechat, "wx-1")
    assert (await identity_client.me(Me(session=token))).account == "bob"


async def test_an_openid_is_never_a_credential(identity_client: IdentityClient,
                                               wechat: WeChat) -> None:
    await register(identity_client, "carol", "Carol")
    session = await log_in(identity_client, "carol")
    forged = [
        "",  # none
        "x.y",  # not a token
        session,  # a genuine token of another kind
        Signer(new_private_key()).issue(member_id="o-any", kind="openid", now=datetime.now(UTC),
                                        ttl=timedelta(minutes=10), pv=0)[0],  # another key
    ]
    for proof in forged:
        with pytest.raises(InvalidToken):
            await identity_client.bind(Bind(command_id=cid(), openid_proof=proof,
                                            account="carol", password="secret-1",
                                            nickname="Carol"))
    with pytest.raises(WechatCodeRefused):
        await identity_client.login_wechat(LoginWechat(code="made-up"))
    code = wechat.code("dave")
    await identity_client.login_wechat(LoginWechat(code=code))
    with pytest.raises(WechatCodeRefused):  # a code works once
        await identity_client.login_wechat(LoginWechat(code=code))
    with pytest.raises(SnapshotUser):
        await identity_client.login_wechat(LoginWechat(code=wechat.code("eve", snapshot=True)))
    assert not (await identity_client.me(Me(session=session))).bound


async def test_a_password_change_invalidates_earlier_tokens(
        identity_client: IdentityClient) -> None:
    await register(identity_client, "changer", "c")
    old = await log_in(identity_client, "changer")
    await identity_client.change_password(ChangePassword(command_id=cid(), session=old,
                                                old_password="secret-1",
                                                new_password="secret-2"))
    with pytest.raises(InvalidToken):
        await identity_client.me(Me(session=old))
    changed = await log_in(identity_client, "changer", "secret-2")
    assert (await identity_client.me(Me(session=changed))).account


async def test_forged_expired_and_altered_tokens_are_refused(
        identity_client: IdentityClient) -> None:
    member_id = await register(identity_client, "victim", "v")
    good = await log_in(identity_client, "victim")
    now = datetime.now(UTC)
    forged, _ = Signer(new_private_key()).issue(member_id=member_id, kind="session", now=now,
                                                ttl=timedelta(hours=1), pv=0)
    body, sig = good.split(".")
    altered = [f"{body[:-1]}{'A' if body[-1] != 'A' else 'B'}.{sig}",
               f"{body}.{sig[:-1]}{'A' if sig[-1] != 'A' else 'B'}"]
    for bad in [forged, *altered, "", "nonsense", good + "x"]:
        with pytest.raises(InvalidToken):
            await identity_client.me(Me(session=bad))


async def test_drive_password_lockout_grows_and_holds_against_the_right_password(
        identity_client: IdentityClient) -> None:
    await register(identity_client, "locker", "l")
    token = await log_in(identity_client, "locker")
    await identity_client.drive_password_set(SetDrivePassword(
        command_id=cid(), session=token, password="drive-pw", question="pet?", answer=" Rex "))
    with pytest.raises(DrivePasswordAlreadySet):
        await identity_client.drive_password_set(SetDrivePassword(
            command_id=cid(), session=token, password="drive-pw", question="q", answer="a"))

    async def verify(password: str) -> object:
        return await identity_client.drive_password_verify(VerifyDrivePassword(
            command_id=cid(), session=token, password=password))

    for _ in range(2):
        with pytest.raises(WrongDrivePassword):
            await verify("wrong-pw")
    with pytest.raises(WrongDrivePassword) as third:
        await verify("wrong-pw")
    first_lock = datetime.fromisoformat(third.value.details["locked_until"])
    with pytest.raises(DriveLocked):
        await verify("drive-pw")  # right password, still locked
    await _sleep_until(first_lock)
    with pytest.raises(WrongDrivePassword) as fourth:
        await verify("wrong-pw")
    second_lock = datetime.fromisoformat(fourth.value.details["locked_until"])
    assert second_lock - datetime.now(UTC) > timedelta(seconds=0.5)  # doubled: 0.8 s
    await _sleep_until(second_lock)
    assert (await verify("drive-pw")).drive_token  # type: ignore[attr-defined]
    with pytest.raises(WrongDrivePassword) as after:
        await verify("wrong-pw")
    assert after.value.details["failures"] == "1"  # success reset the count


async def _sleep_until(moment: datetime) -> None:
    await asyncio.sleep(max(0.0, (moment - datetime.now(UTC)).total_seconds()) + 0.05)


async def test_reset_with_the_answer_normalised(identity_client: IdentityClient) -> None:
    await register(identity_client, "forgetful", "f")
    token = await log_in(identity_client, "forgetful")
    await identity_client.drive_password_set(SetDrivePassword(
        command_id=cid(), session=token, password="drive-pw", question="pet?", answer=" Rex "))
    with pytest.raises(WrongAnswer):
        await identity_client.drive_password_reset(ResetDrivePassword(
            command_id=cid(), session=token, answer="rax", new_password="new-drive"))
    await identity_client.drive_password_reset(ResetDrivePassword(
        command_id=cid(), session=token, answer="  REX", new_password="new-drive"))
    reply = await identity_client.drive_password_verify(VerifyDrivePassword(
        command_id=cid(), session=token, password="new-drive"))
    assert reply.drive_token


async def test_parallel_guessing_gets_no_more_tries_than_allowed(
        identity_client: IdentityClient) -> None:
    await register(identity_client, "guessed", "g")
    token = await log_in(identity_client, "guessed")
    await identity_client.drive_password_set(SetDrivePassword(
        command_id=cid(), session=token, password="drive-pw", question="q", answer="a"))
    results = await asyncio.gather(*(identity_client.drive_password_verify(VerifyDrivePassword(
        command_id=cid(), session=token, password=f"guess-{i}")) for i in range(20)),
        return_exceptions=True)
    evaluated = [r for r in results if isinstance(r, WrongDrivePassword)]
    locked = [r for r in results if isinstance(r, DriveLocked)]
    assert len(evaluated) == 3 and len(locked) == 17


async def test_a_bind_command_id_reused_for_another_wechat_user_is_refused(
        identity_client: IdentityClient, wechat: WeChat) -> None:
    await register(identity_client, "frank", "Frank")
    first = Bind(command_id=cid(), openid_proof=await openid_proof(identity_client, wechat,
                                                                   "wx-frank"),
                 account="frank", password="secret-1", nickname="Frank")
    await identity_client.bind(first)
    await identity_client.bind(first)  # a repeat, with the same proof: the same answer
    await identity_client.unbind(Unbind(command_id=cid(),
                                        session=await log_in(identity_client, "frank")))
    other = await openid_proof(identity_client, wechat, "wx-other")
    with pytest.raises(CommandReused):
        await identity_client.bind(msgspec.structs.replace(first, openid_proof=other))
    assert not (await identity_client.me(Me(session=await log_in(identity_client,
                                                                 "frank")))).bound
