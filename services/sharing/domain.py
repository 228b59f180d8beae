"""sharing's domain: the grants of one (owner, account set), and what a grant allows. Pure."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import msgspec

from contracts.errors import BadRequest
from contracts.sharing import (
    NotShared,
    Permission,
    RevokeReason,
    ShareGranted,
    ShareRevoked,
    SharingEvent,
    share_id,
)


class GrantState(msgspec.Struct, frozen=True, kw_only=True):
    permission: Permission
    years: list[int] | None
    expires_at: datetime | None
    since: datetime


class Share(msgspec.Struct, frozen=True, kw_only=True):
    """Who one owner's account set is shared with."""

    grants: dict[str, GrantState] = {}


def evolve(share: Share, event: SharingEvent) -> Share:
    match event:
        case ShareGranted(friend_id=fid, permission=permission, years=years, expires_at=exp, at=at):
            since = share.grants[fid].since if fid in share.grants else at
            grant = GrantState(permission=permission, years=years, expires_at=exp, since=since)
            return Share(grants={**share.grants, fid: grant})
        case ShareRevoked(friend_id=fid):
            return Share(grants={k: v for k, v in share.grants.items() if k != fid})
    return share


def fold(events: Iterable[SharingEvent]) -> Share:
    share = Share()
    for event in events:
        share = evolve(share, event)
    return share


def decide_grant(*, owner_id: str, set_id: str, set_name: str, friend_ids: list[str],
                 permission: Permission, years: list[int] | None, expires_at: datetime | None,
                 at: datetime) -> list[ShareGranted]:
    """One grant per friend (a grant to someone already granted replaces its terms)."""
    if expires_at is not None and expires_at <= at:
        raise BadRequest("the expiry time is already past")
    sid = share_id(owner_id, set_id)
    return [ShareGranted(share_id=sid, owner_id=owner_id, set_id=set_id, set_name=set_name,
                         friend_id=fid, permission=permission,
                         years=sorted(set(years)) if years else None,
                         expires_at=expires_at, at=at)
            for fid in dict.fromkeys(friend_ids)]


def decide_revoke(share: Share, *, owner_id: str, set_id: str, friend_id: str | None,
                  at: datetime, reason: RevokeReason = "owner") -> list[ShareRevoked]:
    """Revoke one friend, or everyone when ``friend_id`` is None."""
    targets = list(share.grants) if friend_id is None else [friend_id]
    active = [fid for fid in targets if fid in share.grants]
    if not active and reason == "owner":
        raise NotShared("that account set is not shared with that friend")
    sid = share_id(owner_id, set_id)
    return [ShareRevoked(share_id=sid, owner_id=owner_id, set_id=set_id, friend_id=fid,
                         reason=reason, at=at)
            for fid in active]


def allows(*, permission: str, years: list[int] | None, expires_at: datetime | None, year: int,
           access: str, now: datetime) -> tuple[bool, str]:
    """Whether an active grant (between friends) allows this access now."""
    if expires_at is not None and now >= expires_at:
        return False, "the share has expired"
    if years is not None and year not in years:
        return False, f"the share does not include {year}"
    if access == "write" and permission != "read-write":
        return False, "the share is read-only"
    return True, ""


def owner_allows(through: dict[str, tuple[str, str]]) -> tuple[bool, str]:
    """The owner may use their set, unless an agency handed it to another accountant."""
    if any(permission == "none" for _, permission in through.values()):
        return False, "the account set was handed over to another accountant"
    return True, "owner"


def agency_allows(through: dict[str, tuple[str, str]], *, access: str) -> tuple[bool, str]:
    """Whether any agency's access (reason, permission) allows this access; the reason
    names the role it came through."""
    usable = sorted((permission != "read-write", reason) for reason, permission
                    in through.values() if permission != "none")
    if not usable:
        return False, "not shared"
    read_only, reason = usable[0]
    if access == "write" and read_only:
        return False, "the agency lets supervisors read only"
    return True, reason
