"""Contract round-trips and subject building (property tests)."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from contracts import identity, social
from contracts.errors import BadRequest, LedgerError, code_table, from_reply
from contracts.identity import AccountTaken, IdentityClient
from contracts.subjects import (
    SubjectError,
    decode_id,
    encode_id,
    event_subject,
    split_event_subject,
)

stamps = st.datetimes(timezones=st.just(UTC))


@given(st.text(max_size=600))
def test_encoded_ids_are_single_safe_tokens_reversible_when_short(text: str) -> None:
    token = encode_id(text)
    subject = event_subject("identity", "account", token, "AccountClaimed")
    assert len(subject.split(".")) == 5
    assert decode_id(token) in (text, None)
    if len(text.encode()) < 80:
        assert decode_id(token) == text


def test_long_ids_stay_distinct() -> None:
    a, b = "🙂" * 128, "🙂" * 127 + "🙃"
    assert encode_id(a) != encode_id(b) and encode_id(a) == encode_id(a)


@pytest.mark.parametrize("bad", ["a.b", "*", ">", "", "a b", "x" * 300])
def test_unsafe_tokens_are_refused(bad: str) -> None:
    with pytest.raises(SubjectError):
        event_subject("identity", "member", bad, "MemberRegistered")


def test_split_event_subject() -> None:
    assert split_event_subject("evt.a.b.c.D") == ("a", "b", "c", "D")
    with pytest.raises(SubjectError):
        split_event_subject("evt.a.b.D")


@given(st.builds(identity.MemberRegistered, member_id=st.uuids().map(str), account=st.text(),
                 nickname=st.text(), password_hash=st.text(), at=stamps)
       | st.builds(identity.DriveUnlockFailed, member_id=st.text(), failures=st.integers(0),
                   locked_until=st.none() | stamps, at=stamps))
def test_identity_events_round_trip_through_the_union(event: identity.IdentityEvent) -> None:
    data = msgspec.json.encode(event)
    assert msgspec.json.decode(data, type=identity.AnyIdentityEvent) == event


@given(st.builds(social.FriendAdded, friendship_id=st.text(), member_id=st.text(),
                 friend_id=st.text(), friend_nickname=st.text(), at=stamps))
def test_social_events_round_trip(event: social.FriendAdded) -> None:
    assert msgspec.json.decode(msgspec.json.encode(event), type=social.AnySocialEvent) == event


def test_pair_ids_do_not_depend_on_order() -> None:
    assert social.pair_id("a", "b") == social.pair_id("b", "a") != social.pair_id("a", "c")


def test_error_codes_map_back_to_the_classes_the_operation_declares() -> None:
    codes = IdentityClient.register.codes
    assert codes["account_taken"] is AccountTaken and codes["bad_request"] is BadRequest
    err = from_reply(AccountTaken("taken").reply("cid"), codes)
    assert isinstance(err, AccountTaken) and err.correlation_id == "cid"
    undeclared = from_reply(AccountTaken("taken").reply("c"), IdentityClient.me.codes)
    assert type(undeclared) is LedgerError and undeclared.code == "account_taken"


def test_a_code_given_to_two_classes_is_refused() -> None:
    class Impostor(BadRequest):
        code = "account_taken"

    with pytest.raises(TypeError, match="account_taken"):
        code_table((AccountTaken, Impostor))


def test_events_carry_their_type_tag() -> None:
    event = identity.NicknameChanged(member_id="m", nickname="n",
                                     at=datetime(2026, 1, 1, tzinfo=UTC))
    assert msgspec.json.decode(msgspec.json.encode(event))["type"] == "NicknameChanged"


def test_every_one_character_change_of_a_token_is_refused() -> None:
    from datetime import timedelta

    from contracts.identity import InvalidToken
    from runtime.tokens import Signer, Verifier, new_private_key, public_key_of

    key = new_private_key()
    now = datetime.now(UTC)
    token, _ = Signer(key).issue(member_id="m", kind="session", now=now,
                                 ttl=timedelta(hours=1), pv=0)
    verifier = Verifier(public_key_of(key))
    assert verifier.verify(token, kind="session", now=now).sub == "m"
    for i, ch in enumerate(token):
        for other in {"A", "B", "_", "."} - {ch}:
            with pytest.raises(InvalidToken):
                verifier.verify(token[:i] + other + token[i + 1:], kind="session", now=now)
