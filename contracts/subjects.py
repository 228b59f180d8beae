"""Every subject of the system is built here, and only here.

Events: ``evt.<context>.<aggregate>.<id>.<EventType>`` (always five tokens).
Requests: ``<context>.<operation>``.
Replies: only under a client inbox, ``_INBOX.`` or ``_INBOX_<user>.`` (see `safe_reply`).
"""

from __future__ import annotations

import base64
import hashlib
import re

EVENT_ROOT = "evt"
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,256}$")
# nats-py's default inbox prefix is _INBOX; production gives each user _INBOX_<user>
# (deploy/nats/production.conf, LEDGERSHARE_NATS_INBOX_PREFIX). After the prefix come
# literal tokens: no wildcard, no empty token, no whitespace or control character.
INBOX_PREFIX = r"_INBOX(?:_[A-Za-z0-9_-]+)?"
_REPLY = re.compile(rf"\A{INBOX_PREFIX}(?:\.[^.*>\x00-\x20\x7f-\U0010ffff]+)+\Z")


class SubjectError(ValueError):
    """A subject token would break the subject (dot, wildcard, space, empty, too long)."""


def token(value: str) -> str:
    """The value itself when it is a safe subject token; raises SubjectError otherwise."""
    if not _TOKEN.match(value):
        raise SubjectError(f"not a subject token: {value!r} (letters, digits, _ and - only)")
    return value


SHORT_ID = 120


def encode_id(text: str) -> str:
    """A subject-safe token for user text (account names, openids): reversible base64 when
    short, else a SHA-256 (a long openid of four-byte characters would pass any limit)."""
    raw = base64.urlsafe_b64encode(text.encode("utf-8")).decode("ascii").rstrip("=")
    if len(raw) < SHORT_ID:
        return "b" + raw
    return "h" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def decode_id(tok: str) -> str | None:
    """Inverse of `encode_id` for short ids; None for a hashed one."""
    if not tok.startswith("b"):
        return None
    body = tok[1:]
    return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode("utf-8")


def event_subject(context: str, aggregate: str, agg_id: str, event_type: str) -> str:
    """Subject of one event of one aggregate instance."""
    parts = (context, aggregate, agg_id, event_type)
    return ".".join((EVENT_ROOT, *(token(p) for p in parts)))


def aggregate_subjects(context: str, aggregate: str, agg_id: str) -> str:
    """Filter matching every event of one aggregate instance (the OCC subject filter)."""
    return ".".join((EVENT_ROOT, token(context), token(aggregate), token(agg_id), "*"))


def context_subjects(context: str, aggregate: str | None = None) -> str:
    """Filter matching every event of a context, or of one aggregate type in it."""
    if aggregate is None:
        return f"{EVENT_ROOT}.{token(context)}.>"
    return f"{EVENT_ROOT}.{token(context)}.{token(aggregate)}.*.*"


def every_instance(context: str, aggregate: str, event_type: str) -> str:
    """Filter matching one event type of every instance of one aggregate type."""
    return f"{EVENT_ROOT}.{token(context)}.{token(aggregate)}.*.{token(event_type)}"


def all_events() -> str:
    """Filter matching the whole log."""
    return f"{EVENT_ROOT}.>"


def request_subject(context: str, operation: str) -> str:
    """Subject of a request-reply operation, e.g. ``sharing.grant``."""
    return f"{token(context)}.{token(operation)}"


ADMIN_ROOT = "admin"


def admin_subject(context: str, operation: str) -> str:
    """Subject of an operators' operation, e.g. ``admin.sharing.replay``: a prefix of its own,
    so that only the operators' credentials need to reach it."""
    return f"{ADMIN_ROOT}.{token(context)}.{token(operation)}"


def split_event_subject(subject: str) -> tuple[str, str, str, str]:
    """(context, aggregate, id, event type) of an event subject."""
    parts = subject.split(".")
    if len(parts) != 5 or parts[0] != EVENT_ROOT:
        raise SubjectError(f"not an event subject: {subject!r}")
    return parts[1], parts[2], parts[3], parts[4]


def safe_reply(subject: str) -> bool:
    """Whether a service may answer on ``subject``: only a client's inbox.

    The reply subject is the caller's choice, and a service's answer is published with the
    service's own permissions: aimed at ``evt.>`` it would be stored in the log as an
    event, aimed at ``$JS.API.>`` it would be a JetStream request. Allowing only the inbox
    prefixes clients use keeps both, and any subject a stream captures later, out of reach.
    """
    return len(subject) <= 512 and _REPLY.match(subject) is not None
