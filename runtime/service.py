"""Service runtime: a `nats.micro` service whose endpoints take and give msgspec Structs.

Requests are served concurrently (nats-py runs one subscription's callbacks in order, so
each request becomes a task, bounded by ``max_in_flight``). Decode and domain errors go
back as typed `ErrorReply`s; anything unexpected as ``internal`` with a correlation id,
logged with its traceback and never sent.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic

import asyncpg
import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from nats.micro.request import Request as MicroRequest
from nats.micro.service import EndpointConfig, EndpointStats, Service, ServiceConfig

from contracts.base import HDR_CLIENT, HDR_CORRELATION, MAX_REQUEST_BYTES, Request
from contracts.client import ERROR_CODE_HEADER
from contracts.errors import (
    BadRequest,
    Conflict,
    ErrorReply,
    Internal,
    LedgerError,
    TooLarge,
    Unavailable,
)
from contracts.operations import Operation, Rep, Req
from contracts.subjects import admin_subject, safe_reply
from runtime.eventstore import ConcurrencyConflict, Meta
from runtime.projector import ProjectionLag

log = logging.getLogger("ledgershare.service")
_encoder = msgspec.json.Encoder()
REFUSED_REPLY = "reply_not_an_inbox"  # counted as an endpoint's last error


@dataclass(frozen=True)
class Call:
    """What a handler knows about the request besides its body."""

    correlation_id: str
    received_at: datetime
    headers: dict[str, str]

    def meta(self, msg_id: str, actor: str) -> Meta:
        """What the events this request appends say about their cause."""
        return Meta(correlation_id=self.correlation_id, causation_id=msg_id, actor=actor,
                    client_address=self.client_address)

    @property
    def client_address(self) -> str:
        """The IP address the gateway received the member's request from ("" when the
        request names none, or something that is not an address): for audit, never for a
        decision, since any NATS client could send the header."""
        try:
            return str(ipaddress.ip_address(self.headers.get(HDR_CLIENT, "")))
        except ValueError:
            return ""


@dataclass(frozen=True)
class Endpoint(Generic[Req, Rep]):
    """One operation served: its declaration (from contracts) and the handler answering it.
    The handler's request and reply types must be the declaration's."""

    operation: Operation[Req, Rep]
    handler: Callable[[Req, Call], Awaitable[Rep]]

    @property
    def name(self) -> str:
        return self.operation.name


@dataclass
class Counters:
    """Per-endpoint figures reported through ``$SRV.STATS``."""

    requests: int = 0
    errors: int = 0
    internal_errors: int = 0
    total_ns: int = 0
    last_error: str = ""

    def as_data(self) -> dict[str, Any]:
        avg = self.total_ns // self.requests if self.requests else 0
        return {"requests": self.requests, "errors": self.errors,
                "internal_errors": self.internal_errors, "average_ns": avg,
                "last_error": self.last_error}


class ServiceHost:
    """Hosts the endpoints of one context as a discoverable micro service."""

    def __init__(self, nc: NATS, *, name: str, version: str, description: str,
                 endpoints: Sequence[Endpoint[Any, Any]], max_in_flight: int = 256,
                 declared: Sequence[Operation[Any, Any]] | None = None) -> None:
        if declared is not None:
            _serves_exactly(endpoints, declared, name)
        self.nc = nc
        self.name = name
        self.version = version
        self.description = description
        self.endpoints = list(endpoints)
        self.counters = {ep.name: Counters() for ep in self.endpoints}
        self._slots = asyncio.Semaphore(max_in_flight)
        self._tasks: set[asyncio.Task[None]] = set()
        self._service: Service | None = None
        # Errors raised that their operation does not declare: the caller's client cannot
        # raise them as their class. Logged; the tests' harness fails on any.
        self.undeclared: list[str] = []

    async def start(self) -> None:
        """Subscribe every endpoint under the service's queue group."""
        self._service = InboxOnlyService(self.nc, ServiceConfig(
            name=self.name, version=self.version, description=self.description,
            queue_group=self.name, stats_handler=self._stats_data))
        await self._service.start()
        for ep in self.endpoints:
            await self._service.add_endpoint(EndpointConfig(
                name=ep.name, subject=self.subject(ep.operation), handler=self._dispatcher(ep)))

    def subject(self, operation: Operation[Any, Any]) -> str:
        """Where this host serves an operation."""
        if operation.admin:
            return admin_subject(self.name, operation.name)
        return f"{self.name}.{operation.name}"

    def _stats_data(self, stats: EndpointStats) -> dict[str, Any]:
        counters = self.counters.get(stats.name)
        return counters.as_data() if counters else {}

    def _dispatcher(self, ep: Endpoint[Any, Any]) -> Callable[[MicroRequest], Awaitable[None]]:
        async def dispatch(req: MicroRequest) -> None:
            if not self._answerable(ep, req._msg):
                return  # before the handler: a refused request has no effect at all
            await self._slots.acquire()
            task = asyncio.create_task(self._serve(ep, req))
            self._tasks.add(task)
            task.add_done_callback(self._done)
        return dispatch

    def _answerable(self, ep: Endpoint[Any, Any], msg: Msg) -> bool:
        # No reply subject: the request runs and nobody is answered, as before.
        if not msg.reply or safe_reply(msg.reply):
            return True
        counters = self.counters[ep.name]
        counters.requests += 1
        counters.errors += 1
        counters.last_error = REFUSED_REPLY
        _refused(msg)
        return False

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._slots.release()

    async def _serve(self, ep: Endpoint[Any, Any], req: MicroRequest) -> None:
        headers = {str(k): v for k, v in (req.headers or {}).items()}
        call = Call(correlation_id=headers.get(HDR_CORRELATION) or uuid.uuid4().hex,
                    received_at=datetime.now(UTC), headers=headers)
        started = time.perf_counter_ns()
        counters = self.counters[ep.name]
        counters.requests += 1
        body: bytes | ErrorReply
        try:
            body = await self._answer(ep, req.data, call)
        except LedgerError as err:
            self._check_declared(ep, err)
            body = self._failure(counters, err, call)
        except Exception as err:
            known = translate(err)
            body = (self._crash(counters, ep, err, call) if known is None
                    else self._failure(counters, known, call))
        counters.total_ns += time.perf_counter_ns() - started
        await self._respond(req, body)

    async def _answer(self, ep: Endpoint[Any, Any], data: bytes, call: Call) -> bytes:
        request = decode_request(ep, data)
        return _encoder.encode(await ep.handler(request, call))

    def _check_declared(self, ep: Endpoint[Any, Any], err: LedgerError) -> None:
        if ep.operation.codes.get(err.code) is not type(err):
            problem = f"{ep.name} raised {type(err).__name__} ({err.code}), undeclared"
            self.undeclared.append(problem)
            log.error("%s: declare it in the operation's errors", problem)

    def _failure(self, counters: Counters, err: LedgerError, call: Call) -> ErrorReply:
        counters.errors += 1
        counters.last_error = err.code
        return err.reply(call.correlation_id)

    def _crash(self, counters: Counters, ep: Endpoint[Any, Any], err: Exception,
               call: Call) -> ErrorReply:
        counters.errors += 1
        counters.internal_errors += 1
        counters.last_error = Internal.code
        log.error("internal error in %s.%s", self.name, ep.name, exc_info=err,
                  extra={"correlation_id": call.correlation_id})
        return Internal(f"internal error; quote {call.correlation_id} to the operators"
                        ).reply(call.correlation_id)

    async def _respond(self, req: MicroRequest, body: bytes | ErrorReply) -> None:
        if not req._msg.reply:
            return  # a publish without a reply subject: nobody to answer
        if isinstance(body, ErrorReply):
            headers = {ERROR_CODE_HEADER: body.code, "Nats-Service-Error": body.message}
            await req.respond(_encoder.encode(body), headers=headers)
        else:
            await req.respond(body)

    async def stop(self, drain_timeout: float = 10.0) -> None:
        """Stop taking requests, then wait (bounded) for those in flight."""
        if self._service is not None:
            await self._service.stop()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=drain_timeout)


class InboxOnlyService(Service):
    """nats.micro's service, with its discovery answers ($SRV.PING, INFO, STATS) also sent
    only to a client inbox. nats-py answers them on whatever reply subject the request
    names, so ``$SRV.INFO`` with reply ``evt.<context>.…`` would have the service publish
    its description into the log with its own permission to append there."""

    async def _handle_ping_request(self, msg: Msg) -> None:
        if _discoverable(msg):
            await super()._handle_ping_request(msg)

    async def _handle_info_request(self, msg: Msg) -> None:
        if _discoverable(msg):
            await super()._handle_info_request(msg)

    async def _handle_stats_request(self, msg: Msg) -> None:
        if _discoverable(msg):
            await super()._handle_stats_request(msg)


def _discoverable(msg: Msg) -> bool:
    if safe_reply(msg.reply):
        return True
    if msg.reply:  # without one there is nobody to answer, and nothing to report
        _refused(msg)
    return False


def _refused(msg: Msg) -> None:
    log.warning("not answering a request on %s: its reply subject %r is not a client inbox",
                msg.subject, msg.reply[:200], extra={"reply_subject": msg.reply[:200]})


def translate(err: Exception) -> LedgerError | None:
    """Infrastructure errors a caller can act on, as typed errors; None for the rest."""
    if isinstance(err, ConcurrencyConflict):
        return Conflict("someone else changed the same thing at the same time; try again")
    if isinstance(err, ProjectionLag):
        return Unavailable(f"the read model is behind: {err}; try again")
    # OperatorInterventionError: PostgreSQL shutting down or starting up (a restart), or
    # ending this session; the next try finds it back.
    if isinstance(err, NatsTimeout | TimeoutError | NoRespondersError
                  | asyncpg.PostgresConnectionError | asyncpg.OperatorInterventionError
                  | OSError):
        return Unavailable(f"a part of the system did not answer in time ({type(err).__name__})")
    return None


def decode_request(ep: Endpoint[Any, Any], data: bytes) -> Request:
    """Decode a request body or raise BadRequest/TooLarge saying where it is wrong."""
    if len(data) > MAX_REQUEST_BYTES:
        raise TooLarge(f"request is {len(data)} bytes; the limit is {MAX_REQUEST_BYTES}")
    try:
        request: Request = ep.operation.request_decoder.decode(data)
    except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError,
            RecursionError) as err:
        raise BadRequest(f"invalid {ep.operation.request.__name__}: {err}") from None
    return request


def _serves_exactly(endpoints: Sequence[Endpoint[Any, Any]],
                    declared: Sequence[Operation[Any, Any]], name: str) -> None:
    served = [ep.operation for ep in endpoints]
    missing = [op.name for op in declared if op not in served]
    extra = [op.name for op in served if op not in declared and not op.admin]
    if missing or extra or len(set(map(id, served))) != len(served):
        raise TypeError(f"{name} must serve each declared operation once: missing {missing}, "
                        f"undeclared {extra}")
