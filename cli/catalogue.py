"""The catalogues, generated from the services' declarations in `contracts/`: the events
(docs/events.md, for services that subscribe) and the operations with their error codes
(docs/operations.md, for gateway clients)."""

from __future__ import annotations

import inspect
import sys
import types
import typing
from typing import Any

import msgspec

from contracts.admin import AdminClient
from contracts.errors import GENERIC, LedgerError
from contracts.operations import Operation
from runtime.app import Service
from services.registry import SERVICES

VERSION = 1


def subjects_of(service: Service) -> str:
    """The subject layout its contract module documents (its docstring after the title)."""
    first = typing.get_args(service.events)[0]
    doc = inspect.cleandoc(sys.modules[first.__module__].__doc__ or "")
    return doc.partition("\n\n")[2].strip()


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
        rows.append(f"| `{f.encode_name}` | `{type_name(hints[f.name])}`{default} |")
    return rows


def render() -> str:
    """The whole catalogue as markdown."""
    out = [f"# ledgershare event catalogue (version {VERSION})", "",
           "Generated from `contracts/` by `ledgershare catalogue`; a test keeps it current.",
           "Every event is JSON (msgspec) with a `type` tag, on the `EVENTS` stream; headers",
           "carry `Ledger-Event-Type`, `Ledger-Correlation-Id`, `Ledger-Causation-Id`,",
           "`Ledger-Actor` and `Nats-Msg-Id`. New fields only ever arrive with defaults.", ""]
    for service in SERVICES:
        out += [f"## {service.name}", "", "```", subjects_of(service), "```", ""]
        for event in typing.get_args(service.events):
            doc = inspect.cleandoc(event.__dict__.get("__doc__") or "")
            out += [f"### {event.__name__}", "", doc, "", "| field | type |", "|---|---|",
                    *event_rows(event), ""]
    return "\n".join(line for line in out) + "\n"


def render_operations() -> str:
    """Every service's operations, their request and reply fields and the error codes
    each may answer, as markdown."""
    out = [f"# ledgershare operations (version {VERSION})", "",
           "Generated from the operations declared in `contracts/` by `ledgershare catalogue",
           "--operations`; a test keeps it current. A request is JSON on `<context>.<name>`",
           "(NATS request-reply); an error reply has the header `Nats-Service-Error-Code`",
           "and the body `{code, message, correlation_id, details}`. Every operation may also",
           "answer the generic codes at the end.", ""]
    for service in SERVICES:
        out += [f"## {service.name}", "", service.description, ""]
        for op in service.client.operations():
            out += _operation(service.name, op)
    out += ["## operators", "", "Served at `admin.<service>.<name>` by every service with a read "
            f"model ({', '.join(s.name for s in SERVICES if s.read_model)}).", ""]
    for op in AdminClient.operations():
        out += _operation("admin.<service>", op)
    out += ["## generic error codes", "", *_codes(GENERIC)]
    return "\n".join(out) + "\n"


def _operation(context: str, op: Operation[Any, Any]) -> list[str]:
    doc = inspect.cleandoc(op.request.__dict__.get("__doc__") or "")
    return [f"### `{context}.{op.name}`", "", *([doc, ""] if doc else []),
            f"request `{op.request.__name__}`:", "", "| field | type |", "|---|---|",
            *event_rows(op.request), "", f"reply `{op.reply.__name__}`:", "",
            "| field | type |", "|---|---|", *event_rows(op.reply), "",
            *(["errors:", "", *_codes(op.errors)] if op.errors else []), ""]


def _codes(errors: tuple[type[LedgerError], ...]) -> list[str]:
    return ["| code | meaning |", "|---|---|", *(
        f"| `{e.code}` | {inspect.cleandoc(e.__doc__ or '').splitlines()[0]} |"
        for e in errors), ""]
