"""identity's side of WeChat's code exchange, against WeChat's possible answers (an httpx
transport stands in for the network; the real stand-in server is in the integration
tests): every failure is a typed error, quickly, and the app secret is never logged."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import httpx
import pytest

from contracts.identity import SnapshotUser, WechatCodeRefused, WechatUnavailable
from runtime.wechat import MAX_REPLY, WeChatOAuth


def oauth(answer: httpx.Response | None = None, *, delay: float = 0.0,
          timeout: float = 1.0) -> WeChatOAuth:
    async def handler(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(delay)
        assert request.url.params["secret"] == "s3cret"
        return answer or httpx.Response(200, json={"openid": "o-1"})

    return WeChatOAuth("https://api.wechat.test", "wx1", "s3cret", timeout=timeout,
                       transport=httpx.MockTransport(handler))


async def test_a_good_code_is_the_openid() -> None:
    assert await oauth().openid("code-1") == "o-1"


@pytest.mark.parametrize(("answer", "error"), [
    (httpx.Response(200, json={"errcode": 40029, "errmsg": "invalid code"}), WechatCodeRefused),
    (httpx.Response(200, json={"errcode": 40163, "errmsg": "code been used"}),
     WechatCodeRefused),
    (httpx.Response(200, json={"errcode": 40125, "errmsg": "invalid appsecret"}),
     WechatUnavailable),
    (httpx.Response(200, json={"errcode": -1, "errmsg": "system error"}), WechatUnavailable),
    (httpx.Response(200, json={"openid": "o-1", "is_snapshotuser": 1}), SnapshotUser),
    (httpx.Response(200, json={}), WechatUnavailable),
    (httpx.Response(502, text="<html>bad gateway</html>"), WechatUnavailable),
    (httpx.Response(200, content=b"{" * 10), WechatUnavailable),
    (httpx.Response(200, content=b" " * (MAX_REPLY + 1)), WechatUnavailable),
])
async def test_each_other_answer_is_a_typed_error(answer: httpx.Response,
                                                  error: type[Exception]) -> None:
    with pytest.raises(error):
        await oauth(answer).openid("code-1")


async def test_a_slow_wechat_fails_within_the_deadline() -> None:
    started = time.monotonic()
    with pytest.raises(WechatUnavailable):
        await oauth(delay=30, timeout=1.0).openid("code-1")
    assert time.monotonic() - started < 2


async def test_without_an_app_id_and_secret_nothing_is_asked() -> None:
    with pytest.raises(WechatUnavailable, match="not configured"):
        await WeChatOAuth("https://api.wechat.test", "", "").openid("code-1")


def test_the_app_secret_and_the_code_never_reach_the_log() -> None:
    script = """
import asyncio, httpx
from runtime import logs
from runtime.wechat import WeChatOAuth
logs.configure("DEBUG", json_lines=True)
ok = httpx.MockTransport(lambda request: httpx.Response(200, json={"openid": "o-1"}))
asyncio.run(WeChatOAuth("https://api.wechat.test", "wx1", "s3cret-XYZ",
                        transport=ok).openid("code-ABC"))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, check=True)
    assert "s3cret-XYZ" not in done.stderr and "code-ABC" not in done.stderr
