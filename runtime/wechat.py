"""The server side of WeChat's web OAuth (公众号网页授权, snsapi_base): a login code
for the openid of the WeChat user who authorized. Only identity holds the app secret."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import msgspec

from contracts.identity import SnapshotUser, WechatCodeRefused, WechatUnavailable

TOKEN_PATH = "/sns/oauth2/access_token"
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
        self.http = httpx.AsyncClient(base_url=api_base, timeout=timeout, transport=transport)

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
            answer = await self.http.get(TOKEN_PATH, params=params)
            return _reply.decode(answer.content)
        except (httpx.HTTPError, msgspec.DecodeError) as err:
            log.warning("WeChat code exchange failed: %s", err)
            raise WechatUnavailable("WeChat did not answer; try again later") from None

    async def close(self) -> None:
        await self.http.aclose()
