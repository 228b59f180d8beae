"""Free-text rules (contracts/text.py), the reply-subject rule, and the identity and social
requests that use them."""

from __future__ import annotations

import sys
import typing
import unicodedata
from datetime import datetime
from typing import Annotated

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from contracts import identity, social
from contracts.base import Request
from contracts.subjects import safe_reply
from contracts.text import UNSAFE_RANGES, is_plain, plain_text

UNSAFE_CATEGORIES = {"Cc", "Cf", "Cs", "Zl", "Zp"}


def test_the_unsafe_list_is_every_control_format_and_separator_character() -> None:
    # Python's Unicode database may be older than the list (then the list's newer entries
    # are unassigned here), never newer without the list following.
    listed = {cp for lo, hi in UNSAFE_RANGES for cp in range(lo, hi + 1)}
    category = unicodedata.category
    wrong = [f"U+{cp:04X} ({category(chr(cp))})" for cp in range(sys.maxunicode + 1)
             if (category(chr(cp)) in UNSAFE_CATEGORIES) != (cp in listed)
             and not (cp in listed and category(chr(cp)) == "Cn")]
    assert wrong == []


@pytest.mark.parametrize("bad", ["\u202e", "\u202a", "\u2066", "\u2069", "\u200b", "\u200f",
                                 "\u0000", "\u001b", "\u007f", "\u0085", "\n", "\r", "\t",
                                 "\u2028", "\u2029", "\ufeff", "\U000e0041"])
def test_plain_text_refuses_each_unsafe_character_anywhere(bad: str) -> None:
    for text in (bad, f"a{bad}", f"{bad}a", f"a{bad}b"):
        assert not is_plain(text)
        with pytest.raises(msgspec.ValidationError):
            msgspec.convert(text, Annotated[str, plain_text(max_length=10)])


@given(st.text(st.characters(blacklist_categories=("Cc", "Cf", "Cs", "Zl", "Zp")),
               max_size=50))
def test_plain_text_keeps_everything_else(text: str) -> None:
    assert is_plain(text)
    assert msgspec.convert(text, Annotated[str, plain_text(max_length=50)]) == text


def test_a_final_newline_is_refused_too() -> None:
    # "$" would match before it; the pattern is anchored with \Z.
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert("name\n", Annotated[str, plain_text(max_length=10)])


def test_lengths_and_blank() -> None:
    strict = Annotated[str, plain_text(min_length=1, max_length=5, blank=False)]
    assert msgspec.convert(" 张三 ", strict) == " 张三 "
    for bad in ("", "   ", "\u3000", "123456"):
        with pytest.raises(msgspec.ValidationError):
            msgspec.convert(bad, strict)
    assert msgspec.convert("   ", Annotated[str, plain_text(max_length=5)]) == "   "


@pytest.mark.parametrize("reply", ["_INBOX.abc", "_INBOX.abc.17", "_INBOX_storage.x.2",
                                   "_INBOX_wechat.Zq9.3"])
def test_client_inboxes_are_safe_replies(reply: str) -> None:
    assert safe_reply(reply)


@pytest.mark.parametrize("reply", [
    "", "evt.identity.member.x.MemberRegistered", "evt.>", "$JS.API.STREAM.DELETE.EVENTS",
    "$JS.ACK.EVENTS.c.1.2.3.4.5", "$SRV.PING", "cmd.identity.k", "identity.register",
    "_INBOX", "_INBOX.", "_INBOX..a", "_INBOX.a.", "_INBOX.*", "_INBOX.>", "_INBOX.a.b>",
    "_INBOX.a b", "_INBOX.a\n", "_INBOX.a\u0000", "_INBOXevt.x", "_INBOX_.x",
    "_INBOX_a.b.c\u202e", "x._INBOX.a", "_INBOX." + "a" * 600,
])
def test_anything_else_is_not_answered(reply: str) -> None:
    assert not safe_reply(reply)


@pytest.mark.parametrize(("kind", "field"), [
    (identity.Register, "nickname"), (identity.Bind, "nickname"),
    (identity.ChangeNickname, "nickname"), (social.AddFriend, "nickname"),
    (identity.SetDrivePassword, "question")])
def test_names_and_questions_are_plain_text(kind: type[Request], field: str) -> None:
    fields = {"command_id": "c" * 16, "session": "s", "account": "acc", "password": "pw",
              "openid_proof": "p", "nickname": "Ann", "question": "first pet?",
              "answer": "Rex"}
    names = {f.name for f in msgspec.structs.fields(kind)}
    good = {k: v for k, v in fields.items() if k in names}
    assert msgspec.convert(good, kind)
    with pytest.raises(msgspec.ValidationError, match=field):
        msgspec.convert({**good, field: "Bo\u202eb"}, kind)


def _requests() -> list[type[Request]]:
    found = [getattr(m, n) for m in (identity, social) for n in dir(m)]
    return [k for k in found if isinstance(k, type) and issubclass(k, Request)
            and k is not Request]


@pytest.mark.parametrize("kind", _requests(), ids=lambda k: k.__name__)
def test_a_request_takes_only_aware_datetimes(kind: type[Request]) -> None:
    hints = typing.get_type_hints(kind, include_extras=True)
    assert [name for name, hint in hints.items() if _naive_datetime(hint)] == []


def test_the_datetime_check_sees_naive_ones() -> None:
    aware = Annotated[datetime, msgspec.Meta(tz=True)]
    assert _naive_datetime(datetime) and _naive_datetime(datetime | None)
    assert _naive_datetime(list[Annotated[datetime, msgspec.Meta(ge=None)]])
    assert not _naive_datetime(aware) and not _naive_datetime(aware | None)


def _naive_datetime(hint: object) -> bool:
    """Whether a type hint lets a datetime through without ``Meta(tz=True)``."""
    if hint is datetime:
        return True
    if typing.get_origin(hint) is Annotated:
        base, *metas = typing.get_args(hint)
        if base is datetime:
            return not any(isinstance(m, msgspec.Meta) and m.tz is True for m in metas)
        return _naive_datetime(base)
    return any(_naive_datetime(a) for a in typing.get_args(hint))
