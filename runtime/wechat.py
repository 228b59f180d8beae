"""The server side of WeChat's web OAuth (公众号网页授权, snsapi_base): a login code
for the openid of the WeChat user who authorized. Only identity holds the app secret."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx
import msgspec

from contracts.identity import SnapshotUser, WechatCodeRefused, WechatUnavailable

TOKEN_PATH = "/sns/oauth2/access_token"
MAX_REPLY = 16 * 1024
# WeChat's errcodes for a code that is no good: invalid (unknown, expired), used.
REFUSED_CODES = frozenset({40029, 40163})
log = logging.getLogger("ledgershare.wechat")


class CodeExchange(msgspec.Struct, kw_only=True):
    """The parts of WeChat's access_token reply identity uses."""

    openid: str = ""
    is_snapshotuser: int = 0
    errcode: int = 0
    errmsg: str = ""


_reply = msgspec.json.Decoder(CodeExchange)


class WeChatOAuth:
    """Exchanges login codes at WeChat's API (or the local stand-in, deploy/wechat.py)."""

    def __init__(self, api_base: str, appid: str, secret: str, *, timeout: float = 5.0,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.appid, self.secret = appid, secret
        # One deadline for the whole exchange, under the caller's own: httpx's timeout is
        # per phase, so a server dripping bytes would otherwise hold the request forever.
        self.deadline = max(0.5, timeout * 0.6)
        self.http = httpx.AsyncClient(
            base_url=api_base, timeout=self.deadline, transport=transport,
            limits=httpx.Limits(max_connections=32, max_keepalive_connections=8))

    async def openid(self, code: str) -> str:
        """The openid of the user who authorized with ``code`` (each code works once)."""
        if not (self.appid and self.secret):
            raise WechatUnavailable("WeChat login is not configured on this system")
        reply = await self._exchange(code)
        if reply.errcode in REFUSED_CODES:
            raise WechatCodeRefused("WeChat did not accept the login code; open the "
                                    "Member Center from the official account again")
        if reply.errcode or not reply.openid:
            log.error("WeChat refused the code exchange: %s %s", reply.errcode, reply.errmsg)
            raise WechatUnavailable("WeChat login is not available now; try again later")
        if reply.is_snapshotuser:
            raise SnapshotUser("please tap 使用完整服务 to open the Member Center for real")
        return reply.openid

    async def _exchange(self, code: str) -> CodeExchange:
        params: dict[str, Any] = {"appid": self.appid, "secret": self.secret, "code": code,
                                  "grant_type": "authorization_code"}
        try:
            async with asyncio.timeout(self.deadline):
                return _reply.decode(await self._body(params))
        except (httpx.HTTPError, msgspec.DecodeError, TimeoutError, OverflowError) as err:
            log.warning("WeChat code exchange failed: %s", type(err).__name__)
            raise WechatUnavailable("WeChat did not answer; try again later") from None

    async def _body(self, params: dict[str, Any]) -> bytes:
        """The reply's body, refused past MAX_REPLY bytes (WeChat's is a few hundred)."""
        body = bytearray()
        async with self.http.stream("GET", TOKEN_PATH, params=params) as answer:
            async for chunk in answer.aiter_bytes():
                body += chunk
                if len(body) > MAX_REPLY:
                    raise OverflowError("the reply is too large")
        return bytes(body)

    async def close(self) -> None:
        await self.http.aclose()
