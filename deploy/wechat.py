"""A local stand-in for WeChat's web authorization (公众号网页授权), so the login runs offline.

It answers the two calls a gateway makes, at WeChat's paths, with WeChat's parameters and
error codes: ``GET /connect/oauth2/authorize`` (here a page where the tester picks a
simulated user, since there is no phone to ask) and ``GET /sns/oauth2/access_token`` (a
one-time code for the user's openid). Point the gateway's two base URLs
(https://open.weixin.qq.com and https://api.weixin.qq.com) at one running stand-in.

Run: ``python -m deploy.wechat --port 8090 [--appid A --secret S] [--user NAME ...]``.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final
from urllib.parse import urlencode, urlsplit, urlunsplit

import jinja2
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

AUTHORIZE_PATH: Final = "/connect/oauth2/authorize"
CHOOSE_PATH: Final = "/connect/oauth2/authorize/choose"
TOKEN_PATH: Final = "/sns/oauth2/access_token"
STYLE_PATH: Final = "/connect/oauth2/standin.css"
SCOPES: Final = frozenset({"snsapi_base", "snsapi_userinfo"})
TOKEN_TTL_S: Final = 7200
DEFAULT_APPID: Final = "wx0123456789abcdef"
DEFAULT_SECRET: Final = "standin0123456789abcdef012345678"
DEFAULT_USERS: Final = ("alice", "bob", "carol")
MAX_STATE: Final = 128  # WeChat documents state as at most 128 bytes
MAX_USER: Final = 64

# The exchange's errors, with WeChat's codes and messages (one table, the only one).
ERRORS: Final[Mapping[int, str]] = {
    40002: "invalid grant_type",
    40013: "invalid appid",
    40029: "invalid code",
    40125: "invalid appsecret",
    40163: "code been used",
    41002: "appid missing",
    41004: "appsecret missing",
    41008: "missing code",
}

# A host[:port] or [v6]:port that is safe to copy into a CSP header as it stands.
_NETLOC = re.compile(r"(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")
_URL_CHARS = re.compile(r"[\x21-\x7e]+")

CSS: Final = """\
body{margin:0;font:16px/1.5 system-ui,-apple-system,"PingFang SC","Microsoft YaHei",sans-serif;
background:#ededed;color:#111}
main{max-width:28rem;margin:0 auto;padding:1rem}
h1{font-size:1.25rem;text-align:center}h2{font-size:1rem;margin:1.25rem 0 .5rem}
.note{color:#555;font-size:.875rem}.uri{word-break:break-all}
.error{background:#fff;border-left:4px solid #fa5151;padding:.75rem}
.users{list-style:none;margin:0;padding:0}.users li{margin:.5rem 0}
button{width:100%;padding:.75rem;border:0;border-radius:.5rem;background:#07c160;color:#fff;
font-size:1rem}
.other{display:flex;gap:.5rem}.other input{flex:1;min-width:0;padding:.75rem;font-size:1rem}
.other button{width:auto}
.check{display:block;margin:1rem 0}
.default{position:absolute;left:-10000px;width:1px;height:1px;overflow:hidden}
"""

_pages = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)


class AuthorizeError(Exception):
    """An authorize request WeChat would stop at with an error page; the message says why."""


class ExchangeError(Exception):
    """A code exchange WeChat would refuse; ``code`` is its errcode."""

    def __init__(self, code: int) -> None:
        super().__init__(ERRORS[code])
        self.code = code


@dataclass(frozen=True, kw_only=True)
class AuthRequest:
    """A checked authorize request."""

    appid: str
    redirect_uri: str
    scope: str
    state: str


@dataclass(kw_only=True)
class Grant:
    """What a code stands for until it is exchanged or expires."""

    appid: str
    openid: str
    scope: str
    snapshot: bool
    expires_at: float
    used: bool = False


class WeChatStandIn:
    """The stand-in's state: apps (appid to secret), simulated users, and the codes issued."""

    def __init__(self, apps: Mapping[str, str], users: Sequence[str] = DEFAULT_USERS, *,
                 code_ttl_s: float = 300.0, key: bytes | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.apps = dict(apps)
        self.users = list(users)
        self.code_ttl_s = code_ttl_s
        self.clock = clock
        self.codes: dict[str, Grant] = {}
        self._key = key or secrets.token_bytes(32)

    def openid(self, appid: str, user: str) -> str:
        """The user's openid under that app: stable, and not reversible without the key."""
        mac = self._mac(f"openid\0{appid}\0{user}")
        return "o" + base64.urlsafe_b64encode(mac).decode()[:27]

    def check(self, params: Mapping[str, str]) -> AuthRequest:
        """The authorize request in ``params``, or AuthorizeError with WeChat's complaint."""
        if params.get("appid", "") not in self.apps:
            raise AuthorizeError("appid 参数错误")
        redirect_uri = _checked_redirect_uri(params.get("redirect_uri", ""))
        if params.get("response_type") != "code":
            raise AuthorizeError("response_type 参数错误")
        if params.get("scope") not in SCOPES:
            raise AuthorizeError("Scope 参数错误或没有 Scope 权限")
        state = params.get("state", "")
        if len(state.encode()) > MAX_STATE or not state.isprintable():
            raise AuthorizeError("state 参数错误")
        return AuthRequest(appid=params["appid"], redirect_uri=redirect_uri,
                           scope=params["scope"], state=state)

    def seal(self, auth: AuthRequest) -> str:
        """A MAC over the checked request, so the choice form cannot be pointed elsewhere."""
        fields = (auth.appid, auth.redirect_uri, auth.scope, auth.state)
        return base64.urlsafe_b64encode(self._mac("form\0" + "\0".join(fields))).decode()

    def check_sealed(self, params: Mapping[str, str]) -> AuthRequest:
        """The request a choice form carries, checked again and matched against its seal."""
        auth = self.check(params)
        if not hmac.compare_digest(params.get("seal", ""), self.seal(auth)):
            raise AuthorizeError("授权请求已被修改，请重新发起授权")
        return auth

    def issue(self, auth: AuthRequest, user: str, *, snapshot: bool = False) -> str:
        """A fresh one-time code saying that ``user`` authorized ``auth``."""
        now = self.clock()
        self._forget_expired(now)
        code = secrets.token_urlsafe(24)
        self.codes[code] = Grant(appid=auth.appid, openid=self.openid(auth.appid, user),
                                 scope=auth.scope, snapshot=snapshot,
                                 expires_at=now + self.code_ttl_s)
        return code

    def exchange(self, params: Mapping[str, str]) -> dict[str, str | int]:
        """WeChat's access_token reply for a code, or ExchangeError with its errcode."""
        appid = self._authenticated_app(params)
        if params.get("grant_type") != "authorization_code":
            raise ExchangeError(40002)
        return _token_reply(self._redeem(appid, params.get("code", "")))

    def _authenticated_app(self, params: Mapping[str, str]) -> str:
        appid, secret = params.get("appid", ""), params.get("secret", "")
        if not appid:
            raise ExchangeError(41002)
        if appid not in self.apps:
            raise ExchangeError(40013)
        if not secret:
            raise ExchangeError(41004)
        if not hmac.compare_digest(secret.encode(), self.apps[appid].encode()):
            raise ExchangeError(40125)
        return appid

    def _redeem(self, appid: str, code: str) -> Grant:
        if not code:
            raise ExchangeError(41008)
        grant = self.codes.get(code)
        if grant is None or grant.appid != appid or grant.expires_at <= self.clock():
            raise ExchangeError(40029)
        if grant.used:
            raise ExchangeError(40163)
        grant.used = True
        return grant

    def _forget_expired(self, now: float) -> None:
        for code in [c for c, grant in self.codes.items() if grant.expires_at <= now]:
            del self.codes[code]

    def _mac(self, message: str) -> bytes:
        return hmac.new(self._key, message.encode(), hashlib.sha256).digest()


def _checked_redirect_uri(value: str) -> str:
    """An absolute http(s) URL with a plain host, or AuthorizeError."""
    try:
        parts = urlsplit(value)
        _ = parts.port  # raises ValueError when out of range
    except ValueError:
        parts = None
    if (parts is None or parts.scheme not in ("http", "https")
            or not _URL_CHARS.fullmatch(value) or not _NETLOC.fullmatch(parts.netloc)):
        raise AuthorizeError("redirect_uri 参数错误")
    return value


def _token_reply(grant: Grant) -> dict[str, str | int]:
    reply: dict[str, str | int] = {
        "access_token": secrets.token_urlsafe(64), "expires_in": TOKEN_TTL_S,
        "refresh_token": secrets.token_urlsafe(64), "openid": grant.openid,
        "scope": grant.scope,
    }
    if grant.snapshot:
        reply["is_snapshotuser"] = 1
    return reply


def _with_code(redirect_uri: str, code: str, state: str) -> str:
    """``redirect_uri`` with code and state added to the query it already has."""
    parts = urlsplit(redirect_uri)
    added = urlencode({"code": code, "state": state})
    return urlunsplit(parts._replace(query=f"{parts.query}&{added}" if parts.query else added))


def _chosen_user(form: Mapping[str, str]) -> str:
    """The user a button names, else the typed name (a blank button value means typed)."""
    user = (form.get("user") or form.get("other", "")).strip()
    if not user or len(user) > MAX_USER or not user.isprintable():
        raise AuthorizeError(f"请选择一个模拟用户，或填写 1 到 {MAX_USER} 个字符的用户名")
    return user


def _security_headers(form_target: str = "") -> dict[str, str]:
    # Browsers apply form-action to the redirect after a POST too, so the choice page
    # allows the origin its 302 goes to.
    form_action = f"'self' {form_target}".strip()
    return {
        "Content-Security-Policy": (f"default-src 'none'; style-src 'self'; form-action "
                                    f"{form_action}; frame-ancestors 'none'; base-uri 'none'"),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
    }


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _error_page(error: AuthorizeError) -> HTMLResponse:
    html = _pages.get_template("wechat_choose.html").render(error=str(error), style=STYLE_PATH)
    return HTMLResponse(html, status_code=400, headers=_security_headers())


def _choice_page(standin: WeChatStandIn, auth: AuthRequest) -> HTMLResponse:
    hidden = [("appid", auth.appid), ("redirect_uri", auth.redirect_uri),
              ("response_type", "code"), ("scope", auth.scope), ("state", auth.state),
              ("seal", standin.seal(auth))]
    html = _pages.get_template("wechat_choose.html").render(
        error="", auth=auth, hidden=hidden, users=standin.users, action=CHOOSE_PATH,
        style=STYLE_PATH, max_user=MAX_USER)
    return HTMLResponse(html, headers=_security_headers(_origin(auth.redirect_uri)))


def _exchange_reply(standin: WeChatStandIn, params: Mapping[str, str]) -> JSONResponse:
    """WeChat answers errors with HTTP 200 and an errcode, so this does too."""
    try:
        return JSONResponse(standin.exchange(params))
    except ExchangeError as e:
        rid = "-".join(secrets.token_hex(4) for _ in range(3))
        return JSONResponse({"errcode": e.code, "errmsg": f"{e}, rid: {rid}"})


def app(standin: WeChatStandIn) -> Starlette:
    """The stand-in's HTTP endpoints, at WeChat's paths, over ``standin``."""

    async def authorize(request: Request) -> Response:
        try:
            return _choice_page(standin, standin.check(request.query_params))
        except AuthorizeError as e:
            return _error_page(e)

    async def choose(request: Request) -> Response:
        async with request.form(max_files=0, max_fields=20) as form:
            fields = {k: v for k, v in form.items() if isinstance(v, str)}
        try:
            auth, user = standin.check_sealed(fields), _chosen_user(fields)
        except AuthorizeError as e:
            return _error_page(e)
        code = standin.issue(auth, user, snapshot=fields.get("snapshot") == "1")
        return RedirectResponse(_with_code(auth.redirect_uri, code, auth.state), status_code=302,
                                headers={"Cache-Control": "no-store"})

    async def access_token(request: Request) -> Response:
        return _exchange_reply(standin, request.query_params)

    async def style(request: Request) -> Response:
        return Response(CSS, media_type="text/css", headers={"X-Content-Type-Options": "nosniff"})

    return Starlette(routes=[
        Route(AUTHORIZE_PATH, authorize, methods=["GET"]),
        Route(CHOOSE_PATH, choose, methods=["POST"]),
        Route(TOKEN_PATH, access_token, methods=["GET"]),
        Route(STYLE_PATH, style, methods=["GET"]),
    ])


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m deploy.wechat",
                                description="A local stand-in for WeChat web authorization.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--appid", default=DEFAULT_APPID)
    p.add_argument("--secret", default=DEFAULT_SECRET)
    p.add_argument("--user", action="append", help="a simulated user (repeat; default "
                   f"{', '.join(DEFAULT_USERS)})")
    p.add_argument("--code-ttl", type=float, default=300.0, help="seconds a code lives")
    p.add_argument("--key", help="the openid key (default: random, so openids change "
                   "with each start)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """Serve the stand-in until SIGINT or SIGTERM."""
    args = _arguments(argv)
    standin = WeChatStandIn({args.appid: args.secret}, args.user or DEFAULT_USERS,
                            code_ttl_s=args.code_ttl,
                            key=args.key.encode() if args.key else None)
    print(f"WeChat stand-in on http://{args.host}:{args.port} (appid {args.appid})", flush=True)
    uvicorn.run(app(standin), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
