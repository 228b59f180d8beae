"""social over NATS against real servers, with identity running beside it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from nats.aio.client import Client as NATS

from contracts.identity import (
    Bind,
    ChangeNickname,
    ChangePassword,
    IdentityClient,
    InvalidToken,
    Me,
)
from contracts.social import (
    AddFriend,
    AlreadyFriends,
    CannotFriendSelf,
    ListFriends,
    NoSuchMember,
    NotFriends,
    RemoveFriend,
    SocialClient,
)
from runtime.eventstore import EventStore
from runtime.settings import Settings
from runtime.tokens import Signer, new_private_key
from services.identity.service import build as build_identity
from services.social.service import build as build_social
from tests.helpers import WeChat, cid, join, openid_proof, wechat_session
from tests.services import running, service_settings


class Clients:
    def __init__(self, nc: NATS) -> None:
        self.identity = IdentityClient(nc, timeout=10)
        self.social = SocialClient(nc, timeout=10)

    async def member(self, account: str, nickname: str) -> tuple[str, int]:
        """Register, log in; returns (session, log position of the registration)."""
        joined = await join(self.identity, account, nickname)
        return joined.session, joined.seq


@pytest.fixture
async def clients(settings: Settings, nc: NATS, pool: asyncpg.Pool,
                  events: EventStore) -> AsyncIterator[Clients]:
    configured = service_settings(settings)
    async with running(build_identity, configured, nc, pool, events), \
            running(build_social, configured, nc, pool, events):
        yield Clients(nc)


async def test_seed_steps_one_and_two(clients: Clients, wechat: WeChat) -> None:
    a, _ = await clients.member("13800000001", "张三")
    _, b_token = await clients.member("13800000002", "李四")
    proof = await openid_proof(clients.identity, wechat, "wx-a")
    await clients.identity.bind(Bind(command_id=cid(), openid_proof=proof,
                                     account="13800000001", password="secret-1",
                                     nickname="张三"))
    a = await wechat_session(clients.identity, wechat, "wx-a")
    info = await clients.identity.me(Me(session=a))
    assert info.bound and info.nickname == "张三"
    added = await clients.social.add_friend(AddFriend(
        command_id=cid(), session=a, account="13800000002", nickname="李四", seq=b_token))
    listed = await clients.social.list_friends(ListFriends(session=a, seq=added.seq))
    assert [(f.account, f.nickname) for f in listed.friends] == [("13800000002", "李四")]
    assert datetime.now(UTC) - listed.friends[0].since < timedelta(minutes=1)


async def test_friendship_is_mutual_and_can_end(clients: Clients) -> None:
    a, _ = await clients.member("alice", "Alice")
    b, b_token = await clients.member("bob", "Bob")
    added = await clients.social.add_friend(AddFriend(
        command_id=cid(), session=a, account="BOB", nickname="Bob", seq=b_token))
    seen_by_b = await clients.social.list_friends(ListFriends(session=b, seq=added.seq))
    assert [f.account for f in seen_by_b.friends] == ["alice"]
    with pytest.raises(AlreadyFriends):
        await clients.social.add_friend(AddFriend(command_id=cid(), session=b,
                                                  account="alice", nickname="Alice"))
    removed = await clients.social.remove_friend(RemoveFriend(command_id=cid(), session=b,
                                                              account="alice"))
    after = await clients.social.list_friends(ListFriends(session=a, seq=removed.seq))
    assert after.friends == []
    with pytest.raises(NotFriends):
        await clients.social.remove_friend(RemoveFriend(command_id=cid(), session=a,
                                                        account="bob"))


async def test_mismatches_reveal_nothing_and_self_is_refused(clients: Clients) -> None:
    a, _ = await clients.member("alice", "Alice")
    _, b_token = await clients.member("bob", "Bob")
    messages = set()
    for account, nickname in [("bob", "Robert"), ("nobody", "Bob")]:
        with pytest.raises(NoSuchMember) as err:
            await clients.social.add_friend(AddFriend(command_id=cid(), session=a,
                                                      account=account, nickname=nickname,
                                                      seq=b_token))
        messages.add(err.value.message)
    assert messages == {"no member with that account and nickname"}
    with pytest.raises(CannotFriendSelf):
        await clients.social.add_friend(AddFriend(command_id=cid(), session=a,
                                                  account="alice", nickname="Alice"))


async def test_social_follows_nickname_changes(clients: Clients) -> None:
    a, _ = await clients.member("alice", "Alice")
    b, b_token = await clients.member("bob", "Bob")
    await clients.social.add_friend(AddFriend(command_id=cid(), session=a, account="bob",
                                              nickname="Bob", seq=b_token))
    changed = await clients.identity.change_nickname(ChangeNickname(
        command_id=cid(), session=b, nickname="Bobby"))
    listed = await clients.social.list_friends(ListFriends(session=a, seq=changed.seq))
    assert [f.nickname for f in listed.friends] == ["Bobby"]
    with pytest.raises(NoSuchMember):
        await clients.social.add_friend(AddFriend(command_id=cid(), session=b, account="alice",
                                                  nickname="Alicia", seq=changed.seq))


async def test_social_refuses_forged_expired_altered_and_outdated_tokens(
        clients: Clients) -> None:
    a, a_token = await clients.member("alice", "Alice")
    member_id = (await clients.identity.me(Me(session=a))).member_id
    now = datetime.now(UTC)
    forged, _ = Signer(new_private_key()).issue(member_id=member_id, kind="session", now=now,
                                                ttl=timedelta(hours=1), pv=0)
    body, sig = a.split(".")
    flipped = f"{body}.{sig[:-2]}{'AA' if sig[-2:] != 'AA' else 'BB'}"
    changed = await clients.identity.change_password(ChangePassword(
        command_id=cid(), session=a, old_password="secret-1", new_password="secret-2"))
    for bad in [forged, flipped, "x.y", a]:
        with pytest.raises(InvalidToken):
            await clients.social.list_friends(ListFriends(session=bad, seq=changed.seq))
    del a_token


async def test_social_refuses_an_expired_token(settings: Settings, nc: NATS,
                                               pool: asyncpg.Pool, events: EventStore) -> None:
    configured = service_settings(settings).with_overrides(session_ttl_s=0.2)
    async with running(build_identity, configured, nc, pool, events), \
            running(build_social, configured, nc, pool, events):
        clients = Clients(nc)
        a, seq = await clients.member("alice", "Alice")
        await clients.social.list_friends(ListFriends(session=a, seq=seq))
        await asyncio.sleep(0.3)
        with pytest.raises(InvalidToken, match="expired"):
            await clients.social.list_friends(ListFriends(session=a, seq=seq))
