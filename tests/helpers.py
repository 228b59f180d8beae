"""What many tests need: fresh command ids, and members registered and logged in."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from contracts.identity import IdentityClient, Login, LoginWechat, Register, Registered
from deploy.wechat import DEFAULT_APPID, AuthRequest, WeChatStandIn
from runtime.settings import Settings
from runtime.tokens import Signer

PASSWORD = "secret-1"


def cid() -> str:
    """A fresh command id."""
    return uuid.uuid4().hex


@dataclass(frozen=True)
class Joined:
    """A member just registered and logged in: its id, its session, and the log position
    of the registration (for read-your-writes)."""

    member_id: str
    session: str
    seq: int


async def register(identity: IdentityClient, account: str, nickname: str = "Ann",
                   password: str = PASSWORD) -> str:
    """Register a member; its id."""
    return (await _registered(identity, account, nickname, password)).member_id


async def _registered(identity: IdentityClient, account: str, nickname: str,
                      password: str) -> Registered:
    return await identity.register(Register(command_id=cid(), account=account,
                                            password=password, nickname=nickname))


async def log_in(identity: IdentityClient, account: str, password: str = PASSWORD) -> str:
    """A session for the account."""
    return (await identity.login(Login(account=account, password=password))).session


async def join(identity: IdentityClient, account: str, nickname: str = "Ann",
               password: str = PASSWORD) -> Joined:
    """Register a member and log in."""
    reply = await _registered(identity, account, nickname, password)
    return Joined(member_id=reply.member_id, session=await log_in(identity, account, password),
                  seq=reply.seq)


@dataclass(frozen=True)
class WeChat:
    """The WeChat OAuth stand-in the tests run, and where it answers."""

    standin: WeChatStandIn
    url: str

    def code(self, user: str, *, snapshot: bool = False) -> str:
        """A login code, as if ``user`` had authorized the Member Center in WeChat."""
        asked = AuthRequest(appid=DEFAULT_APPID, redirect_uri="http://member-center.test/wx",
                            scope="snsapi_base", state="test")
        return self.standin.issue(asked, user, snapshot=snapshot)


def proof_of(openid: str, settings: Settings) -> str:
    """A proof of ``openid`` signed with identity's key, as if WeChat had answered with
    that openid (for openids the stand-in would never make)."""
    proof, _ = Signer(settings.token_private_key).issue(
        member_id=openid, kind="openid", now=datetime.now(UTC), ttl=timedelta(minutes=10),
        pv=0)
    return proof


async def openid_proof(identity: IdentityClient, wechat: WeChat, user: str) -> str:
    """The proof `bind` takes that WeChat user ``user`` (bound to no member) logged in."""
    login = await identity.login_wechat(LoginWechat(code=wechat.code(user)))
    assert not login.bound, f"{user} is bound already"
    return login.openid_proof


async def wechat_session(identity: IdentityClient, wechat: WeChat, user: str) -> str:
    """The session of the member WeChat user ``user`` is bound to."""
    login = await identity.login_wechat(LoginWechat(code=wechat.code(user)))
    assert login.bound, f"{user} is bound to no member"
    return login.session
