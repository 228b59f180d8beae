"""What many tests need: fresh command ids, and members registered and logged in."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from contracts.identity import IdentityClient, Login, Register

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
    reply = await identity.register(Register(command_id=cid(), account=account,
                                             password=password, nickname=nickname))
    return reply.member_id


async def log_in(identity: IdentityClient, account: str, password: str = PASSWORD) -> str:
    """A session for the account."""
    return (await identity.login(Login(account=account, password=password))).session


async def join(identity: IdentityClient, account: str, nickname: str = "Ann",
               password: str = PASSWORD) -> Joined:
    """Register a member and log in."""
    reply = await identity.register(Register(command_id=cid(), account=account,
                                             password=password, nickname=nickname))
    return Joined(member_id=reply.member_id, session=await log_in(identity, account, password),
                  seq=reply.seq)
