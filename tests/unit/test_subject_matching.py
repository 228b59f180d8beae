"""The projector's subject test agrees with NATS wildcard rules on any subject."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.subjects import covering, subject_matcher

tokens = st.sampled_from(["evt", "a", "b", "ab", "x"])
subjects = st.lists(tokens, min_size=1, max_size=6).map(".".join)
patterns = st.lists(st.sampled_from(["evt", "a", "b", "*"]), min_size=0, max_size=5).flatmap(
    lambda head: st.sampled_from(["", ">", "ab"]).map(
        lambda tail: ".".join([*head, tail] if tail else head) or ">"))


def nats_match(subject: str, pattern: str) -> bool:
    """NATS's rule, token by token: ``*`` one token, ``>`` one or more at the end."""
    have, want = subject.split("."), pattern.split(".")
    for i, w in enumerate(want):
        if w == ">":
            return len(have) > i
        if i >= len(have) or (w != "*" and w != have[i]):
            return False
    return len(have) == len(want)


@pytest.mark.parametrize(("subject", "pattern"), [
    ("evt.ab", "evt.a.>"), ("evt.a", "evt.a.>"), ("evt.a.b", "evt.a.>"), ("ab", "a"),
    ("a.b.c", "a.*"), ("a.b", "a.*"), ("evt.sharing", "evt.sharing.>"), ("x", ">"),
    ("evt.a.b.c.d", "evt.a.*.*.d"), ("evt.a.b.c.e", "evt.a.*.*.d"),
])
def test_the_matcher_on_the_edges(subject: str, pattern: str) -> None:
    assert subject_matcher([pattern])(subject) == nats_match(subject, pattern)


@settings(max_examples=1000)
@given(subject=subjects, filters=st.lists(patterns, min_size=1, max_size=4))
def test_the_matcher_follows_the_nats_rules(subject: str, filters: list[str]) -> None:
    expected = any(nats_match(subject, f) for f in filters)
    assert subject_matcher(filters)(subject) == expected


@given(subject=subjects, filters=st.lists(patterns, min_size=1, max_size=4))
def test_the_covering_filter_matches_whatever_a_filter_does(subject: str,
                                                           filters: list[str]) -> None:
    if any(nats_match(subject, f) for f in filters):
        assert nats_match(subject, covering(filters))
