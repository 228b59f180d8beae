"""identity's projection: members and openids, from identity's own events."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg
import msgspec

from contracts.identity import (
    CONTEXT,
    AnyIdentityEvent,
    DrivePasswordSet,
    MemberBound,
    MemberRegistered,
    MemberUnbound,
    NicknameChanged,
    OpenidClaimed,
    OpenidReleased,
    PasswordChanged,
    account_key,
)
from contracts.subjects import context_subjects
from runtime.eventstore import StoredEvent
from services.identity import tables

_decoder = msgspec.json.Decoder(AnyIdentityEvent)


class IdentityProjection:
    """members(member_id, account, nickname, openid, …) and openids(openid, member_id)."""

    name = "identity"
    subjects: Sequence[str] = (context_subjects(CONTEXT),)

    async def setup(self, conn: asyncpg.Connection, schema: str) -> None:
        await tables.create_tables(conn, schema)

    async def apply(self, conn: asyncpg.Connection, schema: str, event: StoredEvent) -> None:
        match _decoder.decode(event.data):
            case MemberRegistered(member_id=mid, account=acc, nickname=nick, at=at):
                await tables.insert_member(conn, schema, member_id=mid, account=acc,
                                          account_key=account_key(acc), nickname=nick, at=at)
            case NicknameChanged(member_id=mid, nickname=nick):
                await tables.set_nickname(conn, schema, mid, nick)
            case PasswordChanged(member_id=mid):
                await tables.bump_password_version(conn, schema, mid)
            case MemberBound(member_id=mid, openid=oid):
                await tables.set_openid(conn, schema, mid, oid)
            case MemberUnbound(member_id=mid):
                await tables.set_openid(conn, schema, mid, None)
            case DrivePasswordSet(member_id=mid):
                await tables.mark_drive_password(conn, schema, mid)
            case OpenidClaimed(openid=oid, member_id=mid):
                await tables.claim_openid(conn, schema, oid, mid)
            case OpenidReleased(openid=oid, member_id=mid):
                await tables.release_openid(conn, schema, oid, mid)
            case _:
                pass  # lockout bookkeeping and account claims are not in the read model
