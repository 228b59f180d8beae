"""The WeChat OAuth stand-in's page on a phone in WeChat: a member picks a user and is sent
back to the site with a code (a smoke test for the browser fixtures)."""

from __future__ import annotations

import html
from collections.abc import AsyncIterator
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest_asyncio
from playwright.async_api import BrowserContext, expect
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from deploy.wechat import AUTHORIZE_PATH, DEFAULT_APPID, DEFAULT_SECRET, WeChatStandIn, app
from tests.browser.conftest import PHONE_WIDTH, Shots, serving

STATE = "st-123"
CALLBACK_PATH = "/wechat/callback"


async def callback(request: Request) -> HTMLResponse:
    """The site's end of the redirect: a page that shows what it was sent."""
    return HTMLResponse("<!doctype html><html lang='zh-CN'><meta charset='utf-8'>"
                        "<meta name='viewport' content='width=device-width'>"
                        "<title>回到网站</title><h1>已回到网站</h1>"
                        "<p style='word-break:break-all'>"
                        f"{html.escape(str(request.query_params))}</p></html>")


@pytest_asyncio.fixture
async def standin_url() -> AsyncIterator[str]:
    """A fresh stand-in with the default app and users."""
    async with serving(app(WeChatStandIn({DEFAULT_APPID: DEFAULT_SECRET}))) as url:
        yield url


@pytest_asyncio.fixture
async def site_url() -> AsyncIterator[str]:
    """The site WeChat sends the member back to."""
    async with serving(Starlette(routes=[Route(CALLBACK_PATH, callback)])) as url:
        yield url


def authorize_url(standin_url: str, redirect_uri: str) -> str:
    query = urlencode({"appid": DEFAULT_APPID, "redirect_uri": redirect_uri,
                       "response_type": "code", "scope": "snsapi_base", "state": STATE})
    return f"{standin_url}{AUTHORIZE_PATH}?{query}#wechat_redirect"


async def test_a_member_picks_a_user_and_lands_back_with_a_code(
        standin_url: str, site_url: str, phone: BrowserContext, shots: Shots) -> None:
    page = await phone.new_page()
    await page.goto(authorize_url(standin_url, f"{site_url}{CALLBACK_PATH}?next=%2Fme"))
    await shots(page, "authorize")

    assert await page.evaluate("document.documentElement.scrollWidth") <= PHONE_WIDTH
    await expect(page).to_have_title("微信授权（本地模拟）")
    await expect(page.get_by_role("heading", name="选择模拟用户")).to_be_visible()
    await expect(page.locator(".users button")).to_have_text(["alice", "bob", "carol"])

    await page.get_by_role("button", name="bob", exact=True).tap()
    await page.wait_for_url(f"{site_url}{CALLBACK_PATH}?**")
    await shots(page, "landed")

    query = parse_qs(urlsplit(page.url).query)
    assert query["next"] == ["/me"] and query["state"] == [STATE]
    assert query["code"][0]
