"""Base types for events, requests and replies, and the header names on the wire."""

from __future__ import annotations

from typing import ClassVar

import msgspec

HDR_EVENT_TYPE = "Ledger-Event-Type"
HDR_CORRELATION = "Ledger-Correlation-Id"
HDR_CAUSATION = "Ledger-Causation-Id"
HDR_ACTOR = "Ledger-Actor"
HDR_MSG_ID = "Nats-Msg-Id"
HDR_COMMAND = "Ledger-Command"  # the command pipeline's key of the command that appended
HDR_PART = "Ledger-Command-Part"  # "i/n": the i-th of the n events one decision appended
HDR_CLIENT = "Ledger-Client-Address"  # the IP address a gateway's HTTP request came from

MAX_REQUEST_BYTES = 256 * 1024


class Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    """Base of every event; each context tags its own union (the tag is the class name)."""

    # (field, field naming whose it is): the personal data the event store seals with
    # that member's key (runtime/personal.py), so erasing the member makes it unreadable.
    personal: ClassVar[tuple[tuple[str, str], ...]] = ()


class Request(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Base of every request body."""


class Reply(msgspec.Struct, frozen=True, kw_only=True):
    """Base of every reply body. Commands carry the log position (seq) of their last event."""


class CommandReply(Reply, frozen=True, kw_only=True):
    """Reply of a command: the stream sequence of its last event (0 if it emitted none)."""

    seq: int = 0


def event_type(event: Event) -> str:
    """The tag of an event (its class name)."""
    return type(event).__name__
