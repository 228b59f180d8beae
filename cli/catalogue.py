"""The event catalogue for other services, generated from `contracts/` (docs/events.md)."""

from __future__ import annotations

import inspect
import types
import typing
from typing import Any

import msgspec

from contracts import identity, sharing, social, storage

VERSION = 1
CONTEXTS: list[tuple[str, Any, str]] = [
    (identity.CONTEXT, identity.AnyIdentityEvent,
     "member, account and openid aggregates: `evt.identity.<member|account|openid>.<id>.<Type>`"),
    (social.CONTEXT, social.AnySocialEvent,
     "friendship of an unordered pair: `evt.social.friendship.<pair uuid>.<Type>`"),
    (storage.CONTEXT, storage.AnyStorageEvent,
     "drive of one owner: `evt.storage.drive.<owner>.<Type>`; downloads: "
     "`evt.storage.audit.<owner>.DownloadIssued`"),
    (sharing.CONTEXT, sharing.AnySharingEvent,
     "one owner's account set: `evt.sharing.share.<uuid of owner+set>.<Type>`"),
]


def type_name(tp: Any) -> str:
    """A field type as a reader would write it."""
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        return " | ".join(type_name(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) is typing.Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) is not None:
        args = ", ".join(type_name(a) for a in typing.get_args(tp))
        return f"{getattr(typing.get_origin(tp), '__name__', str(tp))}[{args}]"
    return "None" if tp is type(None) else getattr(tp, "__name__", str(tp))


def event_rows(event: type[msgspec.Struct]) -> list[str]:
    hints = typing.get_type_hints(event)
    rows = []
    for f in msgspec.structs.fields(event):
        default = "" if f.required else f" (default `{f.default!r}`)"
        rows.append(f"| `{f.name}` | `{type_name(hints[f.name])}`{default} |")
    return rows


def render() -> str:
    """The whole catalogue as markdown."""
    out = [f"# ledgershare event catalogue (version {VERSION})", "",
           "Generated from `contracts/` by `ledgershare catalogue`; a test keeps it current.",
           "Every event is JSON (msgspec) with a `type` tag, on the `EVENTS` stream; headers",
           "carry `Ledger-Event-Type`, `Ledger-Correlation-Id`, `Ledger-Causation-Id`,",
           "`Ledger-Actor` and `Nats-Msg-Id`. New fields only ever arrive with defaults.", ""]
    for context, union, where in CONTEXTS:
        out += [f"## {context}", "", where, ""]
        for event in typing.get_args(union):
            doc = inspect.cleandoc(event.__dict__.get("__doc__") or "")
            out += [f"### {event.__name__}", "", doc, "", "| field | type |", "|---|---|",
                    *event_rows(event), ""]
    return "\n".join(line for line in out) + "\n"
