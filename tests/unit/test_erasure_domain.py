"""identity's erasure decisions and claim subjects, given / when / then over events."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest

from contracts.identity import (
    AccountClaimed,
    AccountReleased,
    ClaimSubjects,
    InvalidCredentials,
    MemberBound,
    MemberErased,
    MemberRegistered,
    OpenidReleased,
    legacy_account_subjects,
)
from services.identity import domain
from services.identity.domain import Holder

AT = datetime(2026, 11, 30, tzinfo=UTC)
MID = "m-1"
REGISTERED = MemberRegistered(member_id=MID, account="Alice.W", nickname="爱丽丝", at=AT,
                              credential="c-1")


def test_erasure_needs_the_password_and_leaves_a_member_who_is_no_more() -> None:
    member = domain.fold([REGISTERED])
    with pytest.raises(InvalidCredentials):
        domain.decide_erase(member, password_ok=False, at=AT)
    [erased] = domain.decide_erase(member, password_ok=True, at=AT)
    after = domain.evolve(member, erased)
    assert not after.exists and after.erased and after.account == "Alice.W"
    with pytest.raises(InvalidCredentials):  # erased: as good as unknown
        domain.authenticate(after, password_ok=True)


def test_an_erased_member_releases_what_they_hold_and_nothing_else() -> None:
    bound = MemberBound(member_id=MID, openid="wx-1", at=AT)
    erased = domain.fold([REGISTERED, bound, MemberErased(member_id=MID, at=AT)])
    mine, theirs = Holder(member_id=MID), Holder(member_id="m-2")
    assert domain.decide_release_account(mine, erased) == [
        AccountReleased(account="Alice.W", member_id=MID)]
    assert domain.decide_release_account(theirs, erased) == []
    assert domain.decide_release_openid(mine, erased) == [
        OpenidReleased(openid="wx-1", member_id=MID)]
    alive = domain.fold([REGISTERED, bound])
    assert domain.decide_release_account(mine, alive) == []  # only after an erasure
    released = domain.evolve_holder(mine, AccountReleased(account="x", member_id=MID))
    assert released == Holder()
    assert domain.decide_claim_account(released, member_id="m-3", account="Alice.W") == [
        AccountClaimed(account="Alice.W", member_id="m-3")]


def test_a_claim_of_an_older_log_counts_until_released() -> None:
    assert domain.either(Holder(), Holder(member_id="old")).member_id == "old"
    assert domain.either(Holder(member_id="new"), Holder()).member_id == "new"
    assert domain.either(Holder(), Holder()).member_id is None


def test_claim_subjects_name_nobody_and_depend_on_the_key() -> None:
    one, other = ClaimSubjects(b"k" * 32), ClaimSubjects(b"j" * 32)
    subject = one.account_subjects("Alice.W")
    name = base64.urlsafe_b64encode(b"alice.w").decode().rstrip("=")
    assert name not in subject and "alice" not in subject.lower()
    assert name in legacy_account_subjects("Alice.W")  # what older logs did
    assert subject == one.account_subjects("ALICE.w")  # case-insensitive, as accounts are
    assert subject != other.account_subjects("Alice.W")
    assert one.openid_subjects("wx-1") != one.account_subjects("wx-1")  # kinds apart
    with pytest.raises(ValueError):
        ClaimSubjects(b"short")
