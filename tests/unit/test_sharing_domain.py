"""sharing's domain, given events / when a command / then events or a coded error; and what
a grant allows, asked with the time passed in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contracts.errors import BadRequest
from contracts.sharing import (
    NotShared,
    RevokeReason,
    ShareGranted,
    ShareRevoked,
    SharingEvent,
    share_id,
)
from services.sharing import domain

T0 = datetime(2026, 1, 1, tzinfo=UTC)
LATER = T0 + timedelta(days=3)
OWNER, SET = "owner-id", "set-1"
BOB, CAT, DAN = "bob-id", "cat-id", "dan-id"
SID = share_id(OWNER, SET)


def granted(friend: str, at: datetime = T0, *, years: list[int] | None = None,
            expires_at: datetime | None = None) -> ShareGranted:
    return ShareGranted(share_id=SID, owner_id=OWNER, set_id=SET, set_name="Books",
                        friend_id=friend, permission="read-write", years=years,
                        expires_at=expires_at, at=at)


def revoked(friend: str, at: datetime = T0) -> ShareRevoked:
    return ShareRevoked(share_id=SID, owner_id=OWNER, set_id=SET, friend_id=friend, at=at)


def grant(friends: list[str], *, read_only: bool = False, years: list[int] | None = None,
          expires_at: datetime | None = None, at: datetime = LATER) -> list[ShareGranted]:
    return domain.decide_grant(owner_id=OWNER, set_id=SET, set_name="Books",
                               friend_ids=friends,
                               permission="read-only" if read_only else "read-write",
                               years=years, expires_at=expires_at, at=at)


def revoke(history: list[SharingEvent], friend: str | None, *,
           reason: RevokeReason = "owner") -> list[ShareRevoked]:
    return domain.decide_revoke(domain.fold(history), owner_id=OWNER, set_id=SET,
                                friend_id=friend, at=LATER, reason=reason)


def allows(*, write: bool = False, read_only: bool = False, years: list[int] | None = None,
           expires_at: datetime | None = None, year: int = 2020,
           now: datetime = LATER) -> tuple[bool, str]:
    return domain.allows(permission="read-only" if read_only else "read-write", years=years,
                         expires_at=expires_at, year=year,
                         access="write" if write else "read", now=now)


# ---- grant ----------------------------------------------------------------------------

def test_when_granting_to_two_friends_then_one_grant_each_on_the_share() -> None:
    ends = LATER + timedelta(days=1)
    events = grant([BOB, CAT], read_only=True, years=[2019], expires_at=ends)
    assert [(e.share_id, e.owner_id, e.set_id, e.set_name, e.friend_id, e.years, e.at)
            for e in events] == [(SID, OWNER, SET, "Books", f, [2019], LATER)
                                 for f in (BOB, CAT)]
    assert all(e.permission == "read-only" and e.expires_at == ends for e in events)


def test_when_a_friend_is_named_twice_then_granted_once_in_first_order() -> None:
    assert [e.friend_id for e in grant([CAT, BOB, CAT])] == [CAT, BOB]


def test_when_granting_years_then_each_year_once_in_order() -> None:
    [event] = grant([BOB], years=[2024, 2017, 2024])
    assert event.years == [2017, 2024]


def test_when_granting_without_years_or_expiry_then_all_years_for_ever() -> None:
    [event] = grant([BOB])
    assert (event.years, event.expires_at, event.permission) == (None, None, "read-write")


@pytest.mark.parametrize("expires_at", [LATER, LATER - timedelta(seconds=1)],
                         ids=["now", "past"])
def test_when_the_expiry_is_not_in_the_future_then_bad_request(expires_at: datetime) -> None:
    with pytest.raises(BadRequest) as caught:
        grant([BOB], expires_at=expires_at)
    assert caught.value.code == "bad_request"


def test_given_a_grant_when_granted_again_then_new_terms_since_the_first() -> None:
    share = domain.fold([granted(BOB, T0, years=[2019])])
    [again] = grant([BOB], read_only=True, years=[2020])
    terms = domain.evolve(share, again).grants[BOB]
    assert (terms.permission, terms.years, terms.since) == ("read-only", [2020], T0)


def test_given_a_revoked_grant_when_granted_again_then_since_starts_over() -> None:
    share = domain.fold([granted(BOB, T0), revoked(BOB, T0 + timedelta(days=1))])
    [again] = grant([BOB])
    assert domain.evolve(share, again).grants[BOB].since == LATER


# ---- revoke ---------------------------------------------------------------------------

def test_given_two_grants_when_revoking_one_then_only_that_one_ends() -> None:
    history: list[SharingEvent] = [granted(BOB), granted(CAT)]
    events = revoke(history, BOB)
    assert events == [ShareRevoked(share_id=SID, owner_id=OWNER, set_id=SET, friend_id=BOB,
                                   reason="owner", at=LATER)]
    assert set(domain.fold([*history, *events]).grants) == {CAT}


def test_given_grants_when_revoking_everyone_then_each_active_grant_ends() -> None:
    history: list[SharingEvent] = [granted(BOB), granted(CAT), granted(DAN), revoked(DAN)]
    events = revoke(history, None)
    assert sorted(e.friend_id for e in events) == [BOB, CAT]
    assert domain.fold([*history, *events]).grants == {}


@pytest.mark.parametrize("history, friend", [
    ([], BOB), ([], None), ([granted(CAT)], BOB), ([granted(BOB), revoked(BOB)], BOB),
], ids=["never shared", "never shared, everyone", "shared with another", "revoked before"])
def test_given_no_grant_when_the_owner_revokes_then_not_shared(
        history: list[SharingEvent], friend: str | None) -> None:
    with pytest.raises(NotShared) as caught:
        revoke(history, friend)
    assert caught.value.code == "not_shared"


def test_given_no_grant_when_an_unfriending_revokes_then_nothing_to_do() -> None:
    assert revoke([granted(CAT)], BOB, reason="unfriended") == []


def test_given_a_grant_when_an_unfriending_revokes_then_revoked_as_unfriended() -> None:
    [event] = revoke([granted(BOB), granted(CAT)], BOB, reason="unfriended")
    assert (event.friend_id, event.reason) == (BOB, "unfriended")


@given(st.lists(st.tuples(st.sampled_from([BOB, CAT, DAN]), st.booleans()), max_size=30))
def test_the_grants_are_the_friends_whose_last_event_was_a_grant(
        steps: list[tuple[str, bool]]) -> None:
    history: list[SharingEvent] = []
    since: dict[str, datetime] = {}
    for n, (friend, grants) in enumerate(steps):
        at = T0 + timedelta(minutes=n)
        history.append(granted(friend, at) if grants else revoked(friend, at))
        if grants:
            since.setdefault(friend, at)
        else:
            since.pop(friend, None)
    share = domain.fold(history)
    assert {f: g.since for f, g in share.grants.items()} == since


# ---- allows ---------------------------------------------------------------------------

@pytest.mark.parametrize("write, read_only", [
    (False, True), (False, False), (True, False),
], ids=["read of read-only", "read of read-write", "write of read-write"])
def test_an_open_grant_allows_what_its_permission_allows(write: bool, read_only: bool) -> None:
    assert allows(write=write, read_only=read_only) == (True, "")


def test_a_read_only_grant_refuses_writes() -> None:
    allowed, reason = allows(write=True, read_only=True)
    assert not allowed and reason


def test_a_grant_of_some_years_refuses_the_others_and_says_which() -> None:
    assert allows(years=[2019, 2021], year=2021)[0]
    allowed, reason = allows(years=[2019, 2021], year=2020)
    assert not allowed and "2020" in reason


def test_a_grant_ends_at_its_expiry() -> None:
    ends = LATER + timedelta(hours=1)
    assert allows(expires_at=ends, now=ends - timedelta(microseconds=1))[0]
    for now in (ends, ends + timedelta(days=1)):
        allowed, reason = allows(expires_at=ends, now=now)
        assert not allowed and reason


@given(st.booleans(), st.sets(st.integers(2018, 2022)) | st.none(),
       st.integers(2018, 2022), st.integers(-5, 5), st.integers(-5, 5))
def test_a_write_allowed_is_a_read_allowed_and_nothing_is_after_expiry(
        read_only: bool, years: set[int] | None, year: int, expiry: int,
        now: int) -> None:
    listed = None if years is None else sorted(years)
    ends, at = LATER + timedelta(hours=expiry), LATER + timedelta(hours=now)
    can_read, can_write = (allows(write=w, read_only=read_only, years=listed, expires_at=ends,
                                  year=year, now=at)[0] for w in (False, True))
    assert not can_write or can_read
    assert not can_read or now < expiry
