"""What ends a token before it expires, in every service at once: logging out ends that
session alone; unbinding WeChat ends the sessions WeChat gave; changing or resetting the
cloud-drive password ends the drive tokens issued before. Tried as an attacker holding
the old token would: on every service, with fresh and repeated command ids."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from nats.aio.client import Client as NATS

from contracts.identity import (
    Bind,
    ChangeDrivePassword,
    ChangePassword,
    IdentityClient,
    InvalidToken,
    Logout,
    Me,
    ResetDrivePassword,
    SetDrivePassword,
    Unbind,
    VerifyDrivePassword,
)
from contracts.sharing import CloudSharesRequest, ShareListRequest, SharingClient
from contracts.social import ListFriends, SocialClient
from contracts.storage import DriveRequest, StorageClient
from runtime.settings import Settings
from tests.helpers import WeChat, cid, join, log_in, openid_proof, wechat_session


class Clients:
    def __init__(self, nc: NATS) -> None:
        self.identity = IdentityClient(nc)
        self.social = SocialClient(nc)
        self.storage = StorageClient(nc)
        self.sharing = SharingClient(nc)

    def session_uses(self, session: str) -> list[Callable[[], Awaitable[Any]]]:
        """One read per service that acts for the holder of ``session``."""
        return [lambda: self.identity.me(Me(session=session)),
                lambda: self.social.list_friends(ListFriends(session=session)),
                lambda: self.storage.drive(DriveRequest(session=session)),
                lambda: self.sharing.shares(ShareListRequest(session=session))]


@pytest.fixture
def clients(all_services: Settings, nc: NATS) -> Clients:
    return Clients(nc)


async def refused_everywhere(c: Clients, session: str) -> None:
    for use in c.session_uses(session):
        with pytest.raises(InvalidToken):
            await use()


async def accepted_everywhere(c: Clients, session: str) -> None:
    for use in c.session_uses(session):
        await use()


async def test_logging_out_ends_that_session_everywhere_and_no_other(clients: Clients) -> None:
    member = await join(clients.identity, "13800000101")
    other = await log_in(clients.identity, "13800000101")
    await accepted_everywhere(clients, member.session)

    command = cid()
    done = await clients.identity.logout(Logout(command_id=command, session=member.session))
    await refused_everywhere(clients, member.session)
    await accepted_everywhere(clients, other)
    # A retried logout is the same logout; logging out an ended session changes nothing.
    again = await clients.identity.logout(Logout(command_id=command, session=member.session))
    assert again.seq == done.seq
    await clients.identity.logout(Logout(command_id=cid(), session=member.session))
    # An ended session cannot act in identity either, whatever command id it brings.
    with pytest.raises(InvalidToken):
        await clients.identity.unbind(Unbind(command_id=cid(), session=member.session))


async def test_unbinding_wechat_ends_the_sessions_wechat_gave_and_only_those(
        clients: Clients, wechat: WeChat) -> None:
    member = await join(clients.identity, "13800000102", "甲")
    proof = await openid_proof(clients.identity, wechat, "alice")
    await clients.identity.bind(Bind(command_id=cid(), openid_proof=proof,
                                     account="13800000102", password="secret-1",
                                     nickname="甲"))
    through_wechat = await wechat_session(clients.identity, wechat, "alice")
    await accepted_everywhere(clients, through_wechat)

    await clients.identity.unbind(Unbind(command_id=cid(), session=member.session))
    await refused_everywhere(clients, through_wechat)
    await accepted_everywhere(clients, member.session)

    # Binding again does not bring the old WeChat session back; a new one works.
    proof = await openid_proof(clients.identity, wechat, "alice")
    await clients.identity.bind(Bind(command_id=cid(), openid_proof=proof,
                                     account="13800000102", password="secret-1",
                                     nickname="甲"))
    await refused_everywhere(clients, through_wechat)
    await accepted_everywhere(clients, await wechat_session(clients.identity, wechat, "alice"))


async def test_a_wechat_session_that_unbinds_ends_itself_but_its_retry_answers_the_same(
        clients: Clients, wechat: WeChat) -> None:
    await join(clients.identity, "13800000103", "乙")
    proof = await openid_proof(clients.identity, wechat, "bob")
    await clients.identity.bind(Bind(command_id=cid(), openid_proof=proof,
                                     account="13800000103", password="secret-1",
                                     nickname="乙"))
    session = await wechat_session(clients.identity, wechat, "bob")
    command = cid()
    first = await clients.identity.unbind(Unbind(command_id=command, session=session))
    again = await clients.identity.unbind(Unbind(command_id=command, session=session))
    assert again.seq == first.seq
    await refused_everywhere(clients, session)


async def drive_token(c: Clients, session: str, password: str) -> str:
    verified = await c.identity.drive_password_verify(VerifyDrivePassword(
        command_id=cid(), session=session, password=password))
    return verified.drive_token


@pytest.mark.parametrize("how", ["change", "reset"])
async def test_changing_the_drive_password_ends_earlier_drive_tokens(
        clients: Clients, how: str) -> None:
    member = await join(clients.identity, "13800000104")
    await clients.identity.drive_password_set(SetDrivePassword(
        command_id=cid(), session=member.session, password="drive-pw1", question="猫的名字",
        answer="咪咪"))
    old = await drive_token(clients, member.session, "drive-pw1")
    await clients.sharing.cloud_shares(CloudSharesRequest(session=member.session,
                                                          drive_token=old))
    if how == "change":
        await clients.identity.drive_password_change(ChangeDrivePassword(
            command_id=cid(), session=member.session, old_password="drive-pw1",
            new_password="drive-pw2"))
    else:
        await clients.identity.drive_password_reset(ResetDrivePassword(
            command_id=cid(), session=member.session, answer="咪咪", new_password="drive-pw2"))

    with pytest.raises(InvalidToken, match="cloud-drive password has changed"):
        await clients.sharing.cloud_shares(CloudSharesRequest(session=member.session,
                                                              drive_token=old))
    new = await drive_token(clients, member.session, "drive-pw2")
    await clients.sharing.cloud_shares(CloudSharesRequest(session=member.session,
                                                          drive_token=new))
    await accepted_everywhere(clients, member.session)  # the session itself goes on


async def test_a_password_change_retried_answers_the_same_and_ends_every_older_session(
        clients: Clients) -> None:
    member = await join(clients.identity, "13800000105")
    other = await log_in(clients.identity, "13800000105")
    command = cid()
    change = ChangePassword(command_id=command, session=member.session,
                            old_password="secret-1", new_password="secret-2")
    first = await clients.identity.change_password(change)
    assert (await clients.identity.change_password(change)).seq == first.seq
    await refused_everywhere(clients, member.session)
    await refused_everywhere(clients, other)
    await accepted_everywhere(clients, await log_in(clients.identity, "13800000105",
                                                    "secret-2"))
