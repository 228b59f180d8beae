"""Typed async client base: send a request Struct, get the reply Struct or the typed error."""

from __future__ import annotations

import random
from typing import Any, ClassVar

import msgspec
from nats.aio.client import Client as NATS
from nats.errors import Error as NatsError
from nats.errors import MaxPayloadError, NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from contracts.base import HDR_CLIENT, HDR_CORRELATION
from contracts.errors import (
    GENERIC,
    ErrorReply,
    LedgerError,
    TooLarge,
    Unavailable,
    code_table,
    from_reply,
)
from contracts.operations import Operation, Rep, Req, operations_of
from contracts.requests import mux_of
from contracts.subjects import admin_subject, request_subject

ERROR_CODE_HEADER = "Nats-Service-Error-Code"
_encoder = msgspec.json.Encoder()
_error_decoder = msgspec.json.Decoder(ErrorReply)


class ServiceClient:
    """Calls the operations of one context over NATS request-reply.

    A subclass declares its context's operations (`contracts.operations.Operation`) as
    class attributes; ``codes`` then holds every error they declare, which is what a raw
    call (`call_raw`) re-raises by."""

    context: str = ""
    codes: ClassVar[dict[str, type[LedgerError]]] = code_table(GENERIC)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        declared = [e for op in operations_of(cls) for e in op.errors]
        cls.codes = code_table((*GENERIC, *dict.fromkeys(declared)))

    def __init__(self, nc: NATS, *, timeout: float = 5.0, context: str | None = None) -> None:
        self.nc = nc
        self.timeout = timeout
        if context is not None:
            self.context = context

    @classmethod
    def operations(cls) -> list[Operation[Any, Any]]:
        """The operations this client declares."""
        return operations_of(cls)

    async def call(self, operation: Operation[Req, Rep], request: Req, *,
                   correlation_id: str | None = None, client_address: str = "") -> Rep:
        """Send one request; return the decoded reply or raise its typed error.
        ``client_address``: where a gateway received the member's request (for audit)."""
        data = await self.call_encoded(operation, _encoder.encode(request),
                                       correlation_id=correlation_id,
                                       client_address=client_address)
        return operation.reply_decoder.decode(data)

    async def call_encoded(self, operation: Operation[Any, Any], payload: bytes, *,
                           correlation_id: str | None = None,
                           client_address: str = "") -> bytes:
        """`call` with the request already JSON and the reply left as JSON (a gateway
        passing bodies through); errors are raised as the operation declares them."""
        return await self._request(self.subject(operation), payload, correlation_id,
                                   operation.codes, client_address)

    async def call_raw(self, operation: str, payload: bytes,
                       correlation_id: str | None = None) -> bytes:
        """Send raw bytes (for tests and tools); raise the typed error on an error reply."""
        return await self._request(request_subject(self.context, operation), payload,
                                   correlation_id, self.codes)

    def subject(self, operation: Operation[Any, Any]) -> str:
        """Where this client sends an operation's requests."""
        if operation.admin:
            return admin_subject(self.context, operation.name)
        return request_subject(self.context, operation.name)

    async def _request(self, subject: str, payload: bytes, correlation_id: str | None,
                       codes: dict[str, type[LedgerError]], client_address: str = "") -> bytes:
        headers = {HDR_CORRELATION: correlation_id or f"{random.getrandbits(128):032x}"}
        if client_address:
            headers[HDR_CLIENT] = client_address
        try:
            msg = await mux_of(self.nc).request(subject, payload, within=self.timeout,
                                                headers=headers)
        except NoRespondersError as err:
            raise Unavailable(f"no {self.context} service is running") from err
        except NatsTimeout as err:
            raise Unavailable(f"{subject} did not answer within {self.timeout:g}s") from err
        except MaxPayloadError as err:
            raise TooLarge(f"the request is larger than the message bus accepts ({err})"
                           ) from err
        except NatsError as err:  # disconnected, reconnecting, draining
            raise Unavailable(f"the message bus is not reachable now ({err})") from err
        if msg.headers and ERROR_CODE_HEADER in msg.headers:
            raise from_reply(_error_decoder.decode(msg.data), codes)
        return msg.data
