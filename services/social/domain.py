"""social's domain: one friendship between two members, `evolve` and `decide`. Pure."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import msgspec

from contracts.social import (
    AlreadyFriends,
    CannotFriendSelf,
    FriendAdded,
    FriendRemoved,
    NotFriends,
    SocialEvent,
    pair_id,
)


class Friendship(msgspec.Struct, frozen=True, kw_only=True):
    """Whether two members are friends, and since when."""

    active: bool = False
    since: datetime | None = None


def evolve(state: Friendship, event: SocialEvent) -> Friendship:
    match event:
        case FriendAdded(at=at):
            return Friendship(active=True, since=at)
        case FriendRemoved():
            return Friendship()
    return state


def fold(events: Iterable[SocialEvent]) -> Friendship:
    state = Friendship()
    for event in events:
        state = evolve(state, event)
    return state


def decide_add(state: Friendship, *, member_id: str, friend_id: str, friend_nickname: str,
               at: datetime) -> FriendAdded:
    """Befriend someone who is not yet a friend (and not oneself)."""
    if member_id == friend_id:
        raise CannotFriendSelf("you cannot add yourself as a friend")
    if state.active:
        raise AlreadyFriends("you are already friends")
    return FriendAdded(friendship_id=pair_id(member_id, friend_id), member_id=member_id,
                       friend_id=friend_id, friend_nickname=friend_nickname, at=at)


def decide_remove(state: Friendship, *, member_id: str, friend_id: str,
                  at: datetime) -> FriendRemoved:
    """End a friendship that exists."""
    if not state.active:
        raise NotFriends("that member is not your friend")
    return FriendRemoved(friendship_id=pair_id(member_id, friend_id), member_id=member_id,
                         friend_id=friend_id, at=at)
