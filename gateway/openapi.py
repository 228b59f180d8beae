"""The API's OpenAPI 3.1 document, generated from the same declarations it serves."""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from typing import Any

import msgspec

from contracts.errors import GENERIC, ErrorReply, LedgerError
from gateway.api import Exposed, NoSuchOperation, status_of

REF = "#/components/schemas/{name}"


def document(operations: Iterable[Exposed], *, version: str) -> dict[str, Any]:
    """The whole document."""
    ops = list(operations)
    types: list[Any] = [ErrorReply]
    for e in ops:
        types += [e.operation.request, e.operation.reply]
    _, schemas = msgspec.json.schema_components(types, ref_template=REF)
    return {
        "openapi": "3.1.0",
        "info": {"title": "ledgershare desktop API", "version": version,
                 "description": "Every operation the desktop program calls. Errors are "
                                "`ErrorReply` with the HTTP status of their class; "
                                "`code` is stable."},
        "paths": {e.path: {"post": _operation(e)} for e in ops},
        "components": {"schemas": schemas, "securitySchemes": {
            "session": {"type": "http", "scheme": "bearer",
                        "description": "the session from identity/login"}}},
    }


def _operation(e: Exposed) -> dict[str, Any]:
    op = e.operation
    doc = inspect.cleandoc(op.request.__dict__.get("__doc__") or "")
    spec: dict[str, Any] = {
        "operationId": f"{e.context}.{op.name}",
        "tags": [e.context],
        "requestBody": {"required": True, "content": {"application/json": {
            "schema": {"$ref": REF.format(name=op.request.__name__)}}}},
        "responses": {"200": {"description": op.reply.__name__, "content": {
            "application/json": {"schema": {"$ref": REF.format(name=op.reply.__name__)}}}},
            **_errors(op.errors)},
    }
    if doc:
        spec["summary"] = doc.splitlines()[0]
    if "session" in op.request.__struct_fields__:
        spec["security"] = [{"session": []}]
    return spec


def _errors(declared: tuple[type[LedgerError], ...]) -> dict[str, Any]:
    by_status: dict[int, list[str]] = {}
    every: tuple[type[LedgerError], ...] = (*declared, *GENERIC, NoSuchOperation)
    for cls in every:
        by_status.setdefault(status_of(cls), []).append(f"`{cls.code}`")
    return {str(status): {"description": "codes: " + ", ".join(codes), "content": {
        "application/json": {"schema": {"$ref": REF.format(name="ErrorReply")}}}}
        for status, codes in sorted(by_status.items())}
