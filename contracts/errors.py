"""The error tree shared by every service and client.

Each error has a stable ``code`` (what programs match on) and a human message. Services
raise these; the runtime sends them as `ErrorReply`; the client raises the same class
again on the other side.
"""

from __future__ import annotations

from typing import ClassVar

import msgspec


class ErrorReply(msgspec.Struct, frozen=True, kw_only=True):
    """What a failed request answers."""

    code: str
    message: str
    correlation_id: str = ""
    details: dict[str, str] = {}


class LedgerError(Exception):
    """Root of every error that crosses the wire."""

    code: ClassVar[str] = "error"

    def __init__(self, message: str, *, details: dict[str, str] | None = None,
                 correlation_id: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}
        self.correlation_id = correlation_id

    def reply(self, correlation_id: str) -> ErrorReply:
        """The wire form of this error."""
        return ErrorReply(code=self.code, message=self.message,
                          correlation_id=correlation_id, details=self.details)

    def __str__(self) -> str:
        return f"{self.message} [{self.code}]"


class BadRequest(LedgerError):
    """The request could not be decoded or failed validation."""

    code = "bad_request"


class TooLarge(BadRequest):
    """The request payload is larger than the endpoint accepts."""

    code = "too_large"


class Unauthenticated(LedgerError):
    """No valid session token."""

    code = "unauthenticated"


class Forbidden(LedgerError):
    """Authenticated, but not allowed."""

    code = "forbidden"


class NotFound(LedgerError):
    """The thing asked for does not exist (or is not visible to the caller)."""

    code = "not_found"


class Conflict(LedgerError):
    """Someone else changed the same thing first, and retries did not resolve it."""

    code = "conflict"


class CommandReused(Conflict):
    """A command id came back with other content than it was first used with."""

    code = "command_reused"


class Unavailable(LedgerError):
    """A part the service needs did not answer in time; retrying later may work."""

    code = "unavailable"


class CommandInProgress(Unavailable):
    """The same command is being run right now by another request; ask again shortly."""

    code = "command_in_progress"


class RateLimited(LedgerError):
    """Too many attempts from one address or at one account; retry after `retry_after_s`.

    A gateway refuses them itself, asking no service; ``details["retry_after_s"]`` (and
    the HTTP ``Retry-After`` header) says how many seconds to wait."""

    code = "rate_limited"


class Internal(LedgerError):
    """Something unexpected; the correlation id finds it in the service's log."""

    code = "internal"


# The errors any operation may answer, whatever it declares.
GENERIC: tuple[type[LedgerError], ...] = (
    BadRequest, TooLarge, Unauthenticated, Forbidden, NotFound, Conflict, CommandReused,
    Unavailable, CommandInProgress, RateLimited, Internal)


def code_table(errors: tuple[type[LedgerError], ...]) -> dict[str, type[LedgerError]]:
    """Code -> class for these errors; a code given to two classes is a programming error."""
    table: dict[str, type[LedgerError]] = {}
    for cls in errors:
        if table.setdefault(cls.code, cls) is not cls:
            raise TypeError(f"error code {cls.code!r} is used by {table[cls.code].__name__} "
                            f"and {cls.__name__}")
    return table


def from_reply(reply: ErrorReply, codes: dict[str, type[LedgerError]]) -> LedgerError:
    """Rebuild the typed error from its wire form, by the caller's table of codes; a code
    the table does not know comes back as a LedgerError carrying that code."""
    cls = codes.get(reply.code, LedgerError)
    err = cls(reply.message, details=dict(reply.details), correlation_id=reply.correlation_id)
    if cls is LedgerError:
        err.code = reply.code  # type: ignore[misc]
    return err
