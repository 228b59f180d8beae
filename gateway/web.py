"""The pages' session, WeChat login state and CSRF tokens, all in cookies: the gateway
keeps no state of its own, so any instance answers any request.

- ``ls_session``: the member's session (from identity), HttpOnly, SameSite=Lax (a member
  arrives from WeChat's menu, a cross-site navigation), Secure over TLS.
- ``ls_state``: the OAuth ``state`` the authorize redirect carries; the callback must
  bring the same value back (a login started in another browser is refused).
- ``ls_proof``: identity's proof of an openid WeChat vouched for, between the callback and
  the bind form of a WeChat user bound to no member yet.
- ``ls_csrf``: a random key; each form carries HMAC(key, session), so a page of another
  site can neither read nor compute it, and a cookie planted by another site is useless
  without the member's session.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Final

from starlette.requests import Request
from starlette.responses import Response

from contracts.errors import Forbidden

SESSION_COOKIE: Final = "ls_session"
STATE_COOKIE: Final = "ls_state"
PROOF_COOKIE: Final = "ls_proof"
CSRF_COOKIE: Final = "ls_csrf"
STATE_TTL_S: Final = 600
CSRF_TTL_S: Final = 30 * 24 * 3600
_KEY_BYTES: Final = 32


class CsrfRefused(Forbidden):
    """A form came without the token of the page this browser was given."""

    code = "csrf"


class LoginStateRefused(Forbidden):
    """A WeChat callback whose ``state`` is not the one this browser was sent with."""

    code = "login_state"


@dataclass(frozen=True)
class Visitor:
    """What a request's cookies say about the browser that sent it."""

    session: str
    proof: str
    csrf_key: str
    new_csrf_key: bool
    secure: bool

    @property
    def csrf(self) -> str:
        """The token this browser's forms carry."""
        return _mac(self.csrf_key, f"csrf:{self.session}")

    def check_csrf(self, token: str) -> None:
        """Refuse a form whose token is not this browser's (or that came with no key)."""
        if self.new_csrf_key or not hmac.compare_digest(token.encode(), self.csrf.encode()):
            raise CsrfRefused("the form is stale or came from another site; reload the page")


def visitor(request: Request) -> Visitor:
    """The visitor behind ``request``; a browser without a CSRF key is given one."""
    key = request.cookies.get(CSRF_COOKIE, "")
    fresh = len(key) < _KEY_BYTES
    return Visitor(session=request.cookies.get(SESSION_COOKIE, ""),
                   proof=request.cookies.get(PROOF_COOKIE, ""),
                   csrf_key=secrets.token_urlsafe(_KEY_BYTES) if fresh else key,
                   new_csrf_key=fresh, secure=request.url.scheme == "https")


def new_state() -> str:
    """A fresh OAuth state (WeChat allows up to 128 characters)."""
    return secrets.token_urlsafe(24)


def check_state(request: Request, given: str) -> None:
    """The callback's ``state`` must be the one set in this browser by ``/wx/login``."""
    expected = request.cookies.get(STATE_COOKIE, "")
    if not expected or not hmac.compare_digest(given.encode(), expected.encode()):
        raise LoginStateRefused("the login did not start in this browser; start it again")


def keep(response: Response, visitor: Visitor, name: str, value: str, *,
         max_age: int) -> None:
    """Set a cookie no script can read, sent to the Member Center's paths only."""
    response.set_cookie(name, value, max_age=max_age, path="/wx", httponly=True,
                        secure=visitor.secure, samesite="lax")


def forget(response: Response, visitor: Visitor, name: str) -> None:
    response.delete_cookie(name, path="/wx", httponly=True, secure=visitor.secure,
                           samesite="lax")


def keep_csrf_key(response: Response, visitor: Visitor) -> None:
    """Give the browser its CSRF key if the page it renders is the first it sees."""
    if visitor.new_csrf_key:
        keep(response, visitor, CSRF_COOKIE, visitor.csrf_key, max_age=CSRF_TTL_S)


def _mac(key: str, message: str) -> str:
    return hmac.new(key.encode(), message.encode(), hashlib.sha256).hexdigest()
