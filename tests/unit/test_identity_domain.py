"""identity's domain, given events / when a command / then events or an error."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contracts.identity import (
    AccountTaken,
    AlreadyBound,
    DriveLocked,
    DrivePasswordSet,
    DriveUnlocked,
    DriveUnlockFailed,
    InvalidCredentials,
    MemberBound,
    MemberRegistered,
    OpenidClaimed,
    OpenidTaken,
    PasswordChanged,
)
from services.identity import domain
from services.identity.domain import Holder, LockPolicy, Member

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def registered(member_id: str = "m1", nickname: str = "Ann") -> MemberRegistered:
    return MemberRegistered(member_id=member_id, account="ann", nickname=nickname,
                            credential="c1", at=T0)


def test_given_a_claimed_account_when_another_registers_then_taken() -> None:
    with pytest.raises(AccountTaken):
        domain.decide_claim_account(Holder(member_id="m1"), member_id="m2", account="ann")


def test_given_our_own_claim_when_claiming_again_then_nothing_to_do() -> None:
    assert domain.decide_claim_account(Holder(member_id="m1"), member_id="m1",
                                       account="ann") == []


def test_given_a_free_account_when_claiming_then_claimed() -> None:
    [claimed] = domain.decide_claim_account(Holder(), member_id="m1", account="ann")
    assert claimed.member_id == "m1"


def test_given_a_registered_member_when_registering_again_then_nothing() -> None:
    member = domain.fold([registered()])
    assert domain.decide_register(member, member_id="m1", account="ann", nickname="x",
                                  credential="c1", at=T0) == []
    [reg] = domain.decide_register(Member(), member_id="m1", account="ann", nickname="x",
                                   credential="c1", at=T0)
    assert reg.member_id == "m1" and reg.credential == "c1" and not reg.password_hash


def test_given_a_member_when_binding_a_free_openid_then_claim_and_bound() -> None:
    member = domain.fold([registered()])
    claimed, bound = domain.decide_bind(member, Holder(), Member(), openid="wx", nickname="Ann",
                                        password_ok=True, at=T0)
    assert claimed == OpenidClaimed(openid="wx", member_id="m1")
    assert bound == MemberBound(member_id="m1", openid="wx", at=T0)


def test_given_an_openid_bound_elsewhere_when_binding_then_taken() -> None:
    other = domain.fold([registered("m2"), MemberBound(member_id="m2", openid="wx", at=T0)])
    with pytest.raises(OpenidTaken):
        domain.decide_bind(domain.fold([registered()]), Holder(member_id="m2"), other,
                           openid="wx", nickname="Ann", password_ok=True, at=T0)


def test_given_a_stale_claim_when_binding_then_it_is_taken_over() -> None:
    unbound_holder = domain.fold([registered("m2")])  # claim left behind, member unbound
    claimed, bound = domain.decide_bind(domain.fold([registered()]), Holder(member_id="m2"),
                                        unbound_holder, openid="wx", nickname="Ann",
                                        password_ok=True, at=T0)
    assert claimed is not None and bound is not None


def test_given_a_bound_member_when_binding_another_openid_then_already_bound() -> None:
    member = domain.fold([registered(), MemberBound(member_id="m1", openid="wx", at=T0)])
    with pytest.raises(AlreadyBound):
        domain.decide_bind(member, Holder(), Member(), openid="wx2", nickname="Ann",
                           password_ok=True, at=T0)


def test_wrong_nickname_is_the_same_error_as_a_wrong_password() -> None:
    member = domain.fold([registered()])
    for nickname, ok in [("Bob", True), ("Ann", False)]:
        with pytest.raises(InvalidCredentials, match="account or password is wrong"):
            domain.decide_bind(member, Holder(), Member(), openid="wx", nickname=nickname,
                               password_ok=ok, at=T0)


def test_lockout_starts_after_the_free_attempts_and_doubles() -> None:
    policy = LockPolicy(free_attempts=3, base=timedelta(seconds=30))
    assert [policy.lock_for(n) for n in range(1, 6)] == [
        None, None, timedelta(seconds=30), timedelta(seconds=60), timedelta(seconds=120)]
    assert LockPolicy(cap=timedelta(hours=1)).lock_for(40) == timedelta(hours=1)


def test_given_a_lock_when_attempting_before_it_ends_then_locked_even_if_right() -> None:
    locked = Member(member_id="m1", drive="d1", failures=3,
                    locked_until=T0 + timedelta(seconds=30))
    with pytest.raises(DriveLocked):
        domain.decide_attempt(locked, ok=True, now=T0 + timedelta(seconds=29),
                              policy=LockPolicy())
    after = domain.decide_attempt(locked, ok=True, now=T0 + timedelta(seconds=30),
                                  policy=LockPolicy())
    assert isinstance(after, DriveUnlocked)


@given(st.lists(st.booleans(), max_size=30))
def test_failure_count_is_the_run_of_failures_since_the_last_success(
        outcomes: list[bool]) -> None:
    member = Member(member_id="m1", drive="d1")
    policy = LockPolicy(free_attempts=1000)
    run = 0
    for ok in outcomes:
        event = domain.decide_attempt(member, ok=ok, now=T0, policy=policy)
        member = domain.evolve(member, event)
        run = 0 if ok else run + 1
        assert member.failures == run
        assert isinstance(event, DriveUnlocked if ok else DriveUnlockFailed)


@pytest.mark.parametrize("nickname", ["张三", "Ann", "a" * 20, " 李四 ", "😀"])
def test_nicknames_of_any_script_are_accepted(nickname: str) -> None:
    assert domain.clean_nickname(nickname) == nickname.strip()


def test_an_event_from_before_the_credential_store_folds_to_its_hash_as_the_reference() -> None:
    legacy = domain.fold([
        MemberRegistered(member_id="m1", account="ann", nickname="Ann", password_hash="h1",
                         at=T0),
        DrivePasswordSet(member_id="m1", password_hash="d1", question="q?",
                         answer_hash="a1", at=T0)])
    assert (legacy.password, legacy.drive, legacy.recovery, legacy.question) == (
        "log:h1", "log:d1", "log:a1", "q?")
    moved = domain.evolve(legacy, PasswordChanged(member_id="m1", credential="c2", at=T0,
                                                  version=1))
    assert (moved.password, moved.pv) == ("c2", 1)
