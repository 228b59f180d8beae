"""An operation, declared once: its request, its reply and the errors it may raise.

A context's client class holds its operations as attributes::

    class SocialClient(ServiceClient):
        context = CONTEXT
        add_friend = Operation(AddFriend, FriendChanged, errors=(NoSuchMember, ...))

On a client instance ``client.add_friend(request)`` sends the request and returns the
reply (or raises one of the declared errors); on the class, ``SocialClient.add_friend`` is
the declaration a service's `Endpoint` is built from, so a handler whose request or reply
type differs from the declaration does not type-check.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, Generic, Literal, Protocol, TypeVar, overload

import msgspec

from contracts.base import Reply, Request
from contracts.errors import GENERIC, LedgerError, code_table

# Who may call an operation: members through a gateway (the desktop program's API, the
# WeChat Member Center), other services, or operators.
Caller = Literal["desktop", "wechat", "services", "operators"]
MEMBERS: frozenset[Caller] = frozenset({"desktop", "wechat"})

Req = TypeVar("Req", bound=Request)
Rep = TypeVar("Rep", bound=Reply)
Req_contra = TypeVar("Req_contra", bound=Request, contravariant=True)
Rep_co = TypeVar("Rep_co", bound=Reply, covariant=True)


class Transport(Protocol):
    """What an operation needs of the client it is called through."""

    async def call(self, operation: Operation[Any, Any], request: Any, *,
                   correlation_id: str | None = None) -> Any: ...


class Bound(Protocol[Req_contra, Rep_co]):
    """An operation on a client instance: send the request, get the reply."""

    def __call__(self, request: Req_contra, *,
                 correlation_id: str | None = None) -> Coroutine[Any, Any, Rep_co]: ...


class Operation(Generic[Req, Rep]):
    """One request-reply operation: ``<context>.<name>`` (``admin.<context>.<name>`` for an
    operators' operation), taking ``request`` and answering ``reply``. A ``throttled`` one
    checks a secret or makes an account: a gateway limits how often each client and each
    account may call it (`gateway.limits`)."""

    def __init__(self, request: type[Req], reply: type[Rep], *,
                 errors: tuple[type[LedgerError], ...] = (), admin: bool = False,
                 audience: frozenset[Caller] = MEMBERS, name: str = "",
                 throttled: bool = False) -> None:
        self.request = request
        self.reply = reply
        self.errors = errors
        self.admin = admin
        self.audience = frozenset({"operators"}) if admin else audience
        self.name = name
        self.throttled = throttled
        # Every error a caller may get back: the generic ones and those declared here.
        self.codes = code_table((*GENERIC, *errors))
        self.request_decoder = msgspec.json.Decoder(request)
        self.reply_decoder = msgspec.json.Decoder(reply)

    def __set_name__(self, owner: type, name: str) -> None:
        if not self.name:
            self.name = name

    def __repr__(self) -> str:
        return f"Operation({self.name!r}, {self.request.__name__} -> {self.reply.__name__})"

    @overload
    def __get__(self, client: None, owner: type) -> Operation[Req, Rep]: ...

    @overload
    def __get__(self, client: Transport, owner: type) -> Bound[Req, Rep]: ...

    def __get__(self, client: Transport | None, owner: type) -> Operation[Req, Rep] | Bound[
            Req, Rep]:
        if client is None:
            return self
        return _bind(self, client)


def _bind(op: Operation[Req, Rep], client: Transport) -> Bound[Req, Rep]:
    async def call(request: Req, *, correlation_id: str | None = None) -> Rep:
        reply: Rep = await client.call(op, request, correlation_id=correlation_id)
        return reply
    return call


def operations_of(cls: type) -> list[Operation[Any, Any]]:
    """The operations a client class declares (its bases' included), in declaration order."""
    found: dict[str, Operation[Any, Any]] = {}
    for klass in reversed(cls.__mro__):
        for value in vars(klass).values():
            if isinstance(value, Operation):
                found[value.name] = value
    return list(found.values())
