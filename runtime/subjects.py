"""NATS subject filters as the projector uses them: one covering filter for its consumer,
and a fast test of which delivered subjects the projection wants."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence


def covering(filters: Sequence[str]) -> str:
    """The narrowest single subject filter that matches everything ``filters`` match."""
    if len(filters) == 1:
        return filters[0]
    split = [f.split(".") for f in filters]
    shortest = min(len(tokens) for tokens in split)
    common: list[str] = []
    for tokens in zip(*(t[:shortest - 1] for t in split), strict=True):
        if len(set(tokens)) > 1 or tokens[0] in ("*", ">"):
            break
        common.append(tokens[0])
    return ".".join([*common, ">"])


def subject_matcher(filters: Sequence[str]) -> Callable[[str], bool]:
    """A test of whether a subject matches any of the NATS filters (``*`` one token,
    ``>`` one or more): a prefix test settles most subjects in one C call (``a.b.>``
    filters, and subjects under no filter's literal head); the rest go to one regular
    expression."""
    def one(pattern: str) -> str:
        return r"\.".join("[^.]+" if t == "*" else ".+" if t == ">" else re.escape(t)
                          for t in pattern.split("."))
    compiled = re.compile("|".join(f"(?:{one(f)})" for f in filters))
    heads = tuple(_literal_head(f) for f in filters)
    wholes = tuple(f[:-1] for f in filters if f.endswith(".>") and "*" not in f
                   and f.count(">") == 1)

    def wanted(subject: str) -> bool:
        if subject.startswith(wholes):
            return True
        return subject.startswith(heads) and compiled.fullmatch(subject) is not None

    return wanted


def _literal_head(pattern: str) -> str:
    """The part of a filter before its first wildcard token (with its dot)."""
    head: list[str] = []
    for t in pattern.split("."):
        if t in ("*", ">"):
            return ".".join(head) + "." if head else ""
        head.append(t)
    return pattern
