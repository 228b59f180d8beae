"""The guide's steps 1-3 in the WeChat Member Center, on a phone in WeChat, in Chinese:
WeChat login through the stand-in, bind, member info, friends (and the wrong-nickname
refusal), the drive list before and after a backup uploaded through the desktop API,
share with a friend, "shared since", cancel, and removing the friend. A second browser
context is the friend. Every page visited is saved under tests/browser/screenshots/."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import msgspec
import pytest_asyncio
from nats.aio.client import Client as NATS
from playwright.async_api import Browser, BrowserContext, ConsoleMessage, Page, expect

from contracts.storage import UploadPlan
from contracts.transfer import sha256_file, upload
from gateway.app import create_app
from gateway.views import cn_date
from runtime.settings import Settings
from services.registry import SERVICES
from tests.browser.conftest import PHONE_WIDTH, Shots, new_phone, serving
from tests.helpers import cid

PASSWORD = "secret-1"
SET_ID = "0f897626-027a-4768-9934-abdfb8ba0ebe"


@pytest_asyncio.fixture
async def gateway(all_services: Settings, nc: NATS) -> AsyncIterator[str]:
    """The gateway on a real port, on the test's running services."""
    async with serving(create_app(nc, all_services, [s.client for s in SERVICES])) as url:
        yield url


async def api(gateway: str, path: str, body: dict[str, Any], session: str = "") -> Any:
    """A desktop API call that must succeed; its reply as JSON."""
    headers = {"Authorization": f"Bearer {session}"} if session else {}
    async with httpx.AsyncClient(base_url=gateway) as http:
        answer = await http.post(f"/api/v1/{path}", json=body, headers=headers)
    assert answer.status_code == 200, answer.text
    return answer.json()


async def register(gateway: str, account: str, nickname: str) -> None:
    await api(gateway, "identity/register", {"command_id": cid(), "account": account,
                                             "password": PASSWORD, "nickname": nickname})


async def upload_backup(gateway: str, account: str, tmp_path: Path) -> None:
    """What the desktop program does for a cloud backup: begin, PUT the parts, complete."""
    session = (await api(gateway, "identity/login", {"account": account,
                                                     "password": PASSWORD}))["session"]
    book = tmp_path / "123-2018.db"
    book.write_bytes(b"account set 123, fiscal year 2018\n" * 4096)
    plan = await api(gateway, "storage/begin_upload", {
        "command_id": cid(), "set_id": SET_ID, "set_name": "123", "year": 2018,
        "period": 1, "remark": "2018年1期", "size": book.stat().st_size,
        "sha256": sha256_file(book)}, session)
    await upload(msgspec.convert(plan, UploadPlan), book)
    await api(gateway, "storage/complete_upload", {
        "command_id": cid(), "upload_id": plan["upload_id"]}, session)


def watch(page: Page) -> list[str]:
    """Every console error and uncaught script error of ``page`` (a CSP refusal is one);
    a response with an error status is noted as "<status> <path>"."""
    seen: list[str] = []

    def console(message: ConsoleMessage) -> None:
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            seen.append(f"{message.text} {message.location}")

    page.on("console", console)
    page.on("pageerror", lambda e: seen.append(str(e)))
    page.on("response", lambda r: seen.append(f"{r.status} {urlsplit(r.url).path}")
            if r.status >= 400 else None)
    return seen


async def fits(page: Page) -> None:
    """The page is usable at 375 px: nothing wider than the phone."""
    assert await page.evaluate("document.documentElement.scrollWidth") <= PHONE_WIDTH


async def log_in_with_wechat(page: Page, gateway: str, user: str, shots: Shots) -> None:
    """From the official account's menu to the stand-in's authorize page, as ``user``."""
    await page.goto(f"{gateway}/wx")
    await expect(page.get_by_role("heading", name="选择模拟用户")).to_be_visible()
    await shots(page, f"wechat-authorize-{user}")
    await page.get_by_role("button", name=user, exact=True).tap()


async def bind(page: Page, account: str, nickname: str, password: str = PASSWORD) -> None:
    await page.get_by_label("会员账号").fill(account)
    await page.get_by_label("密码").fill(password)
    await page.get_by_label("昵称").fill(nickname)
    await page.get_by_role("button", name="绑定").tap()


async def bound_member(browser: Browser, gateway: str, user: str, account: str,
                       nickname: str, shots: Shots) -> tuple[BrowserContext, Page]:
    """A phone whose WeChat user is bound to ``account``, at the Member Center's home."""
    context = await new_phone(browser)
    page = await context.new_page()
    await log_in_with_wechat(page, gateway, user, shots)
    await expect(page.get_by_role("heading", name="绑定会员账号")).to_be_visible()
    await bind(page, account, nickname)
    await expect(page.get_by_role("status")).to_have_text("绑定成功，欢迎使用会员中心。")
    return context, page


async def test_the_guides_steps_one_to_three_on_a_phone(
        gateway: str, browser: Browser, phone: BrowserContext, shots: Shots,
        tmp_path: Path) -> None:
    await register(gateway, "13800000001", "张三")
    await register(gateway, "13900000002", "李四")
    page = await phone.new_page()
    complaints = watch(page)
    boosted: list[str] = []  # requests htmx made (links and forms, without a page load)
    page.on("request", lambda r: boosted.append(r.url) if r.headers.get("hx-request")
            else None)

    # 1. Bind: WeChat login, the bind form, a wrong password refused, then bound.
    await log_in_with_wechat(page, gateway, "alice", shots)
    await expect(page.get_by_role("heading", name="绑定会员账号")).to_be_visible()
    await fits(page)
    await shots(page, "bind")
    await bind(page, "13800000001", "张三", password="wrong-password")
    await expect(page.get_by_role("alert")).to_have_text("会员账号或密码不正确。")
    await expect(page.get_by_label("会员账号")).to_have_value("13800000001")
    await shots(page, "bind-refused")
    await bind(page, "13800000001", "张三")
    await expect(page.get_by_role("status")).to_have_text("绑定成功，欢迎使用会员中心。")
    await expect(page.get_by_text("张三，您好")).to_be_visible()
    await fits(page)
    await shots(page, "home")

    # Member info: what a friend needs to add this member.
    await page.get_by_role("link", name="会员信息").tap()
    facts = page.locator("dl.facts")
    await expect(facts).to_contain_text("13800000001")
    await expect(facts).to_contain_text("已绑定")
    await fits(page)
    await shots(page, "member-info")

    # The friend binds on their own phone.
    friend, friend_page = await bound_member(browser, gateway, "bob", "13900000002", "李四",
                                             shots)

    # 2. Friends: the nickname must match the account.
    await page.goto(f"{gateway}/wx/friends")
    await expect(page.get_by_text("还没有好友")).to_be_visible()
    await page.get_by_label("好友会员账号").fill("13900000002")
    await page.get_by_label("好友昵称").fill("王五")
    await page.get_by_role("button", name="添加好友").tap()
    await expect(page.get_by_role("alert")).to_contain_text("账号和昵称，两者都要一致")
    await fits(page)
    await shots(page, "friend-wrong-nickname")
    await page.get_by_label("好友昵称").fill("李四")
    await page.get_by_role("button", name="添加好友").tap()
    await expect(page.get_by_role("status")).to_have_text("已添加好友。")
    await expect(page.locator(".rows li")).to_contain_text(["李四"])
    await shots(page, "friends")

    # 3. The drive list: empty until a cloud backup comes from the desktop program.
    await page.goto(f"{gateway}/wx/drive")
    await expect(page.locator(".empty")).to_contain_text("您还没有上传过云备份")
    await expect(page.locator(".quota")).to_contain_text("网盘空间 400.00MB")
    await fits(page)
    await shots(page, "drive-empty")
    await upload_backup(gateway, "13800000001", tmp_path)
    await page.reload()
    await expect(page.locator(".set h2")).to_have_text("123")
    await expect(page.locator(".set")).to_contain_text("2018年度 结账到1期 2018年1期")
    await expect(page.locator(".set")).to_contain_text("我 于")
    await fits(page)
    await shots(page, "drive-list")

    # Share with the friend, read-only, and read "shared since".
    await page.get_by_role("link", name="分享操作").tap()
    await page.get_by_label("李四").check()
    await page.get_by_label("只读").check()
    await fits(page)
    await shots(page, "share")
    await page.get_by_role("button", name="确定").tap()
    await expect(page.get_by_role("status")).to_have_text("共享成功。")
    await expect(page.locator(".summary")).to_have_text("您共享了 1 个账套给 1 位好友")
    since = cn_date(datetime.now(UTC))
    await expect(page.locator(".set li")).to_contain_text(
        f"于{since}开始共享给 李四（只读，全部年度）")
    await fits(page)
    await shots(page, "share-list")

    # The friend sees the sharer among their friends.
    await friend_page.goto(f"{gateway}/wx/friends")
    await expect(friend_page.locator(".rows li")).to_contain_text(["张三"])
    await shots(friend_page, "friend-sees-sharer")

    # Cancel the share.
    await page.get_by_role("button", name="取消共享").tap()
    await expect(page.get_by_role("status")).to_have_text("已取消共享。")
    await expect(page.locator(".summary")).to_have_text("您共享了 0 个账套给 0 位好友")
    await shots(page, "share-cancelled")

    # Removing the friend says every share between the two ends, and asks first.
    await page.goto(f"{gateway}/wx/friends")
    await page.get_by_role("link", name="删除").tap()
    await expect(page.locator(".warn")).to_contain_text("所有共享")
    await fits(page)
    await shots(page, "remove-friend-confirm")
    await page.get_by_role("button", name="确定删除").tap()
    await expect(page.get_by_role("status")).to_contain_text("已删除好友")
    await expect(page.get_by_text("还没有好友")).to_be_visible()
    await shots(page, "friend-removed")
    await friend.close()
    # No page broke its own CSP, htmx ran without a script error, and the only errors
    # were the two refusals asked for.
    assert complaints == ["401 /wx/bind", "404 /wx/friends/add"], "\n".join(complaints)
    assert any(url.endswith("/wx/friends/add") for url in boosted), boosted
