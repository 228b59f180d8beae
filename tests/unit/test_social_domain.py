"""social's domain, given events / when a command / then an event or a coded error."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contracts.social import (
    AlreadyFriends,
    CannotFriendSelf,
    FriendAdded,
    FriendRemoved,
    NotFriends,
    SocialEvent,
    pair_id,
)
from services.social import domain
from services.social.domain import Friendship

T0 = datetime(2026, 1, 1, tzinfo=UTC)
LATER = T0 + timedelta(days=3)
ANN, BOB = "ann-id", "bob-id"


def added(at: datetime = T0, *, by: str = ANN, friend: str = BOB) -> FriendAdded:
    return FriendAdded(friendship_id=pair_id(by, friend), member_id=by, friend_id=friend,
                       friend_nickname="Bob", at=at)


def removed(at: datetime = T0, *, by: str = ANN, friend: str = BOB) -> FriendRemoved:
    return FriendRemoved(friendship_id=pair_id(by, friend), member_id=by, friend_id=friend,
                         at=at)


def add(state: Friendship, *, by: str = ANN, friend: str = BOB,
        at: datetime = LATER) -> FriendAdded:
    return domain.decide_add(state, member_id=by, friend_id=friend, friend_nickname="Bob",
                             at=at)


def remove(state: Friendship, *, by: str = ANN, friend: str = BOB,
           at: datetime = LATER) -> FriendRemoved:
    return domain.decide_remove(state, member_id=by, friend_id=friend, at=at)


# ---- add ------------------------------------------------------------------------------

def test_given_strangers_when_adding_then_friend_added_for_the_pair() -> None:
    event = add(domain.fold([]))
    assert event == FriendAdded(friendship_id=pair_id(BOB, ANN), member_id=ANN,
                                friend_id=BOB, friend_nickname="Bob", at=LATER)


def test_given_anything_when_adding_oneself_then_cannot_friend_self() -> None:
    with pytest.raises(CannotFriendSelf) as caught:
        add(domain.fold([]), friend=ANN)
    assert caught.value.code == "cannot_friend_self"


@pytest.mark.parametrize("by, friend", [(ANN, BOB), (BOB, ANN)], ids=["same", "other side"])
def test_given_friends_when_either_adds_again_then_already_friends(by: str,
                                                                   friend: str) -> None:
    with pytest.raises(AlreadyFriends) as caught:
        add(domain.fold([added()]), by=by, friend=friend)
    assert caught.value.code == "already_friends"


def test_given_an_ended_friendship_when_adding_again_then_added_anew() -> None:
    state = domain.fold([added(), removed(T0 + timedelta(days=1))])
    event = add(state, by=BOB, friend=ANN)
    assert (event.member_id, event.friend_id, event.at) == (BOB, ANN, LATER)
    assert domain.evolve(state, event) == Friendship(active=True, since=LATER)


# ---- remove ---------------------------------------------------------------------------

@pytest.mark.parametrize("history", [
    [], [added(), removed(T0 + timedelta(days=1))],
], ids=["never friends", "no longer friends"])
def test_given_no_friendship_when_removing_then_not_friends(
        history: list[SocialEvent]) -> None:
    with pytest.raises(NotFriends) as caught:
        remove(domain.fold(history))
    assert caught.value.code == "not_friends"


def test_given_friends_when_the_other_side_removes_then_removed_on_the_same_pair() -> None:
    event = remove(domain.fold([added()]), by=BOB, friend=ANN)
    assert event == FriendRemoved(friendship_id=pair_id(ANN, BOB), member_id=BOB,
                                  friend_id=ANN, at=LATER)


# ---- fold -----------------------------------------------------------------------------

def test_a_friendship_remembers_since_when_and_forgets_it_when_ended() -> None:
    assert domain.fold([added(T0)]) == Friendship(active=True, since=T0)
    assert domain.fold([added(T0), removed(LATER)]) == Friendship()


def test_pair_ids_do_not_depend_on_who_asks_and_differ_between_pairs() -> None:
    assert pair_id(ANN, BOB) == pair_id(BOB, ANN)
    assert pair_id(ANN, BOB) != pair_id(ANN, "cat-id")


@given(st.lists(st.booleans(), max_size=20))
def test_the_friendship_is_what_the_last_event_made_it(adds: list[bool]) -> None:
    history: list[SocialEvent] = [
        added(T0 + timedelta(minutes=n)) if a else removed(T0 + timedelta(minutes=n))
        for n, a in enumerate(adds)]
    state = domain.fold(history)
    last = history[-1] if history else None
    assert state.active == isinstance(last, FriendAdded)
    assert state.since == (last.at if isinstance(last, FriendAdded) else None)


@given(st.lists(st.booleans(), max_size=20))
def test_only_the_redundant_command_is_refused(adds: list[bool]) -> None:
    state, friends = domain.fold([]), False
    for n, wants_add in enumerate(adds):
        at = T0 + timedelta(minutes=n)
        redundant = wants_add == friends
        error = AlreadyFriends if wants_add else NotFriends
        try:
            event: SocialEvent = add(state, at=at) if wants_add else remove(state, at=at)
        except error:
            assert redundant
            continue
        assert not redundant
        state, friends = domain.evolve(state, event), wants_add
        assert state.active == friends
