"""Typed async client base: send a request Struct, get the reply Struct or the typed error."""

from __future__ import annotations

import random
from typing import Any, TypeVar

import msgspec
from nats.aio.client import Client as NATS
from nats.errors import Error as NatsError
from nats.errors import MaxPayloadError, NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from contracts.base import HDR_CORRELATION, Reply, Request
from contracts.errors import ErrorReply, TooLarge, Unavailable, from_reply
from contracts.requests import mux_of
from contracts.subjects import request_subject

R = TypeVar("R", bound=Reply)

ERROR_CODE_HEADER = "Nats-Service-Error-Code"
_encoder = msgspec.json.Encoder()
_error_decoder = msgspec.json.Decoder(ErrorReply)
_decoders: dict[type[Any], msgspec.json.Decoder[Any]] = {}


def _decoder(kind: type[R]) -> msgspec.json.Decoder[R]:
    dec = _decoders.get(kind)
    if dec is None:
        dec = _decoders[kind] = msgspec.json.Decoder(kind)
    return dec


class ServiceClient:
    """Calls the operations of one context over NATS request-reply."""

    context: str = ""

    def __init__(self, nc: NATS, *, timeout: float = 5.0, context: str | None = None) -> None:
        self.nc = nc
        self.timeout = timeout
        if context is not None:
            self.context = context

    async def call(self, operation: str, request: Request, reply_type: type[R],
                   *, correlation_id: str | None = None) -> R:
        """Send one request; return the decoded reply or raise its typed error."""
        data = await self.call_raw(operation, _encoder.encode(request), correlation_id)
        return _decoder(reply_type).decode(data)

    async def call_raw(self, operation: str, payload: bytes,
                       correlation_id: str | None = None) -> bytes:
        """Send raw bytes (for tests and tools); raise the typed error on an error reply."""
        subject = request_subject(self.context, operation)
        headers = {HDR_CORRELATION: correlation_id or f"{random.getrandbits(128):032x}"}
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
            raise from_reply(_error_decoder.decode(msg.data))
        return msg.data
