"""The desktop program's API: every operation members may call, over HTTP, derived from
the operations declared in `contracts/` (nothing here lists them again).

``POST /api/v1/<context>/<operation>`` takes the operation's request as JSON (the session
may come as ``Authorization: Bearer <session>`` instead of the body's ``session``) and
answers its reply as JSON, or the error reply (``{code, message, correlation_id,
details}``) with the HTTP status of the error's class. ``GET /api/v1/openapi.json``
describes them all.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import msgspec
from nats.aio.client import Client as NATS
from starlette.requests import Request as HttpRequest
from starlette.responses import Response

from contracts.base import HDR_CORRELATION
from contracts.client import ServiceClient
from contracts.errors import (
    BadRequest,
    CommandInProgress,
    Conflict,
    ErrorReply,
    Forbidden,
    Internal,
    LedgerError,
    NotFound,
    RateLimited,
    TooLarge,
    Unauthenticated,
    Unavailable,
)
from contracts.operations import Operation
from gateway.limits import Limiter, client_address

PREFIX = "/api/v1"
BODY_DEADLINE_S = 10.0
# Most specific first: a TooLarge is a BadRequest, a CommandInProgress is Unavailable.
STATUS: tuple[tuple[type[LedgerError], int], ...] = (
    (TooLarge, 413), (BadRequest, 400), (Unauthenticated, 401), (Forbidden, 403),
    (NotFound, 404), (Conflict, 409), (RateLimited, 429), (CommandInProgress, 503),
    (Unavailable, 503))
_json = msgspec.json.Encoder()
_CORRELATION = re.compile(r"[A-Za-z0-9_-]{8,64}")
log = logging.getLogger("ledgershare.gateway")


class NoSuchOperation(NotFound):
    """No operation members may call has that path."""

    code = "no_such_operation"


def public(err: LedgerError, correlation_id: str) -> LedgerError:
    """What an internet client may read of an error: a plain "unavailable" names the
    service, subject or bus that failed, which stays in the gateway's log."""
    if type(err) is not Unavailable:
        return err
    log.warning("unavailable: %s", err.message, extra={"correlation_id": correlation_id})
    return Unavailable("the system did not answer in time; please try again shortly")


def status_of(kind: type[LedgerError]) -> int:
    """The HTTP status of a typed error class (500 for internal and unknown ones)."""
    for cls, status in STATUS:
        if issubclass(kind, cls):
            return status
    return 500


@dataclass(frozen=True)
class Exposed:
    """One operation the API serves, and the client that calls it over NATS."""

    context: str
    operation: Operation[Any, Any]
    client: ServiceClient

    @property
    def path(self) -> str:
        return f"{PREFIX}/{self.context}/{self.operation.name}"


def exposed(nc: NATS, clients: Iterable[type[ServiceClient]], *, audience: str,
            timeout: float) -> dict[tuple[str, str], Exposed]:
    """Every declared operation whose audience includes ``audience``, by (context, name)."""
    found = {}
    for cls in clients:
        client = cls(nc, timeout=timeout)
        for op in cls.operations():
            if audience in op.audience:
                found[(client.context, op.name)] = Exposed(client.context, op, client)
    return found


class Api:
    """Serves the exposed operations."""

    def __init__(self, operations: dict[tuple[str, str], Exposed], *, max_body: int,
                 limiter: Limiter) -> None:
        self.operations = operations
        self.max_body = max_body
        self.limiter = limiter

    async def call(self, request: HttpRequest) -> Response:
        """One operation: decode as the service would, admit it past the rate limits,
        call it over NATS, answer."""
        correlation_id = _correlation_id(request)
        client = client_address(request, self.limiter.trusted)
        try:
            target = self._target(request)
            fields = await self._fields(request, target.operation)
            body = encoded(fields, target.operation)
            await self.limiter.admit(target.operation, client,
                                     self.limiter.account_of(fields))
            reply = await target.client.call_encoded(target.operation, body,
                                                     correlation_id=correlation_id,
                                                     client_address=client)
        except LedgerError as err:
            return error_response(public(err, correlation_id),
                                  err.correlation_id or correlation_id)
        except Exception:
            log.exception("internal error", extra={"correlation_id": correlation_id})
            return error_response(Internal(f"internal error; quote {correlation_id}"),
                                  correlation_id)
        return Response(reply, media_type="application/json",
                        headers={HDR_CORRELATION: correlation_id})

    def _target(self, request: HttpRequest) -> Exposed:
        key = (request.path_params["context"], request.path_params["operation"])
        target = self.operations.get(key)
        if target is None:
            raise NoSuchOperation(f"no operation {PREFIX}/{key[0]}/{key[1]}; "
                                  f"see {PREFIX}/openapi.json")
        return target

    async def _fields(self, request: HttpRequest, op: Operation[Any, Any]) -> dict[str, Any]:
        """The request's fields, with the bearer session when the operation takes one."""
        fields = json_object(await read_limited(request, self.max_body), op.request.__name__)
        session = bearer(request)
        if session and "session" in op.request.__struct_fields__:
            if fields.setdefault("session", session) != session:
                raise BadRequest("two different sessions: one in the Authorization header, "
                                 "another in the body")
        return fields


def encoded(fields: dict[str, Any], op: Operation[Any, Any]) -> bytes:
    """The request as JSON, refused here as the service would refuse it."""
    body = _json.encode(fields)
    try:
        op.request_decoder.decode(body)
    except msgspec.ValidationError as err:
        raise BadRequest(f"invalid {op.request.__name__}: {err}") from None
    return body


def json_object(data: bytes, what: str) -> dict[str, Any]:
    """The body as a JSON object (an empty body is an empty one)."""
    try:
        fields = msgspec.json.decode(data) if data.strip() else {}
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as err:
        raise BadRequest(f"invalid {what}: {err}") from None
    if not isinstance(fields, dict):
        raise BadRequest(f"invalid {what}: the body must be a JSON object")
    return fields


async def read_limited(request: HttpRequest, limit: int, *,
                       within: float = BODY_DEADLINE_S) -> bytes:
    """The request body, refused past ``limit`` bytes without reading the rest, or when
    it does not arrive ``within`` seconds (a slow sender holds no connection for long)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise TooLarge(f"the request body is {declared} bytes; the limit is {limit}")
    body = bytearray()
    try:
        async with asyncio.timeout(within):
            async for chunk in request.stream():
                body += chunk
                if len(body) > limit:
                    raise TooLarge(f"the request body is over the limit of {limit} bytes")
    except TimeoutError:
        raise BadRequest(f"the request body did not arrive within {within:g} s") from None
    return bytes(body)


def _correlation_id(request: HttpRequest) -> str:
    """The caller's correlation id when it is a plain short token; a fresh one otherwise
    (it is stored on every event the request appends)."""
    given = request.headers.get("x-correlation-id", "")
    return given if _CORRELATION.fullmatch(given) else uuid.uuid4().hex


def bearer(request: HttpRequest) -> str:
    """The session of ``Authorization: Bearer <session>`` ("" without one)."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" else ""


def error_response(err: LedgerError, correlation_id: str) -> Response:
    """The wire error reply, with the HTTP status of its class."""
    reply = ErrorReply(code=err.code, message=err.message, correlation_id=correlation_id,
                       details=err.details)
    headers = {HDR_CORRELATION: correlation_id}
    if isinstance(err, Unavailable):
        headers["Retry-After"] = "1"
    elif isinstance(err, RateLimited):
        headers["Retry-After"] = err.details.get("retry_after_s", "1")
    return Response(_json.encode(reply), status_code=status_of(type(err)),
                    media_type="application/json", headers=headers)
