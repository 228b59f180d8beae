"""The desktop API as a transport: a typed client's operations called through the gateway
(``POST /api/v1/<context>/<operation>``) instead of over NATS, with the same replies and
the same typed errors.

`OverHttp` goes before a typed client class, whose declared operations it then sends over
HTTP: ``class IdentityOverHttp(OverHttp, IdentityClient)`` is an `IdentityClient` whose
``register(...)`` is a POST to the gateway.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import httpx
import msgspec

from contracts.errors import (
    BadRequest,
    Conflict,
    ErrorReply,
    Forbidden,
    LedgerError,
    NotFound,
    TooLarge,
    Unauthenticated,
    Unavailable,
    from_reply,
)
from contracts.identity import IdentityClient
from contracts.operations import Operation, Rep, Req
from contracts.sharing import SharingClient
from contracts.social import SocialClient
from contracts.storage import StorageClient
from contracts.sync import SyncClient

API_PREFIX = "/api/v1"
HDR_HTTP_CORRELATION = "X-Correlation-Id"  # the caller's correlation id, as the gateway reads it
# The class an HTTP status stands for, for an error code the operation does not declare
# (the gateway's own `no_such_operation`): `except NotFound` still catches it.
STATUS_CLASS: dict[int, type[LedgerError]] = {
    400: BadRequest, 401: Unauthenticated, 403: Forbidden, 404: NotFound, 409: Conflict,
    413: TooLarge, 503: Unavailable}
_encoder = msgspec.json.Encoder()
_error_decoder = msgspec.json.Decoder(ErrorReply)


def api_path(context: str, operation: str) -> str:
    """Where the gateway serves an operation (the HTTP counterpart of its subject)."""
    return f"{API_PREFIX}/{context}/{operation}"


def gateway_base(url: str) -> str:
    """The gateway's base URL from what a user gives: its origin, or the desktop API's URL
    (``http://host:8080/api/v1``) as `ledgershare run` prints it."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadRequest(f"not a gateway URL: {url!r} (give http://host:port)")
    path = parts.path.rstrip("/").removesuffix(API_PREFIX)
    return f"{parts.scheme}://{parts.netloc}{path}"


def gateway_http(url: str, *, timeout: float) -> httpx.AsyncClient:
    """An HTTP client for the gateway at ``url``; open it with ``async with``."""
    return httpx.AsyncClient(base_url=gateway_base(url), timeout=httpx.Timeout(
        timeout, connect=min(timeout, 3.0)), headers={"content-type": "application/json"})


def error_of(answer: httpx.Response, codes: dict[str, type[LedgerError]]) -> LedgerError:
    """The typed error of an error answer: by its code when the operation declares it,
    else by the class its status stands for (keeping the code)."""
    try:
        reply = _error_decoder.decode(answer.content)
    except msgspec.DecodeError:
        return _not_an_error_reply(answer)
    if reply.code in codes:
        return from_reply(reply, codes)
    err = from_reply(reply, {reply.code: STATUS_CLASS.get(answer.status_code, LedgerError)})
    err.code = reply.code  # type: ignore[misc]
    return err


def _not_an_error_reply(answer: httpx.Response) -> LedgerError:
    # A proxy's page or another server at that address: say where, and what came back.
    what = (f"{answer.request.url} answered HTTP {answer.status_code} "
            f"{answer.reason_phrase}, not an error reply of the desktop API")
    if answer.status_code >= 500 or answer.status_code == 429:
        return Unavailable(f"{what}; try again shortly")
    return LedgerError(f"{what}; is that a ledgershare gateway?")


class OverHttp:
    """Sends the operations of the typed client class it precedes through the gateway
    (their ``call``; the NATS-only calls of `ServiceClient` are not for these clients)."""

    context: str  # the typed client's, which comes after this class

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http

    async def call(self, operation: Operation[Req, Rep], request: Req, *,
                   correlation_id: str | None = None, client_address: str = "") -> Rep:
        """POST one request; return the decoded reply or raise its typed error. (The
        gateway sees the client's address itself: ``client_address`` is for gateways.)"""
        path = api_path(self.context, operation.name)
        headers = {HDR_HTTP_CORRELATION: correlation_id} if correlation_id else {}
        try:
            answer = await self.http.post(path, content=_encoder.encode(request),
                                          headers=headers)
        except httpx.TimeoutException as err:
            raise Unavailable(f"the gateway at {self.http.base_url} did not answer {path} "
                              f"in time ({type(err).__name__})") from err
        except httpx.HTTPError as err:
            raise Unavailable(f"the gateway at {self.http.base_url} is not reachable "
                              f"({err or type(err).__name__}); is it running?") from err
        if not answer.is_success:
            raise error_of(answer, operation.codes)
        return self._reply(operation, answer)

    def _reply(self, operation: Operation[Req, Rep], answer: httpx.Response) -> Rep:
        try:
            return operation.reply_decoder.decode(answer.content)
        except msgspec.DecodeError as err:
            raise LedgerError(f"the answer of {answer.request.url} is not a "
                              f"{operation.reply.__name__} ({err})") from None


class IdentityOverHttp(OverHttp, IdentityClient):
    """identity's operations through the gateway."""


class SocialOverHttp(OverHttp, SocialClient):
    """social's operations through the gateway."""


class StorageOverHttp(OverHttp, StorageClient):
    """storage's operations through the gateway."""


class SharingOverHttp(OverHttp, SharingClient):
    """sharing's operations through the gateway."""


class SyncOverHttp(OverHttp, SyncClient):
    """sync's operations through the gateway."""
