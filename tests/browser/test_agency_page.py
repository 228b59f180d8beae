"""The Member Center's agency pages (代账公司), on phones in WeChat, in Chinese: an
administrator creates an agency and invites a supervisor-to-be and two accountants, who
each accept on their own phone; the administrator changes a role, assigns supervision,
turns on "主管可上传更正版本", hands a set an accountant marked (through the desktop API)
to the other accountant, and removes a member after a confirm step; a member who is not
the administrator sees the same tables read-only, is refused the administrator's page,
and leaves after a confirm step. Refusals show their Chinese message. Every page visited
is saved under tests/browser/screenshots/."""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import parse_qs, urlsplit

import pytest_asyncio
from nats.aio.client import Client as NATS
from playwright.async_api import Browser, BrowserContext, Locator, Page, expect

from gateway.app import create_app
from gateway.messages import MESSAGES
from runtime.settings import Settings
from services.registry import SERVICES
from tests.browser.conftest import Shots, new_phone, serving
from tests.browser.test_member_center import PASSWORD, api, bind, fits, register, watch
from tests.helpers import cid

SET_ID = "7d1c3f52-6a0e-4b8e-9f21-3c5a0d9e4b17"
ADMIN, SUPERVISOR, ACCOUNTANT, OTHER = (
    ("13800000001", "张三"), ("13900000002", "李四"), ("13700000003", "王五"),
    ("13600000004", "赵六"))


@pytest_asyncio.fixture
async def gateway(all_services: Settings, nc: NATS) -> AsyncIterator[str]:
    """The gateway on a real port, on the test's running services."""
    async with serving(create_app(nc, all_services, [s.client for s in SERVICES])) as url:
        yield url


async def member(browser: Browser, gateway: str, user: str, who: tuple[str, str],
                 shots: Shots) -> tuple[BrowserContext, Page]:
    """A phone whose WeChat user (a listed one, or a name typed on the stand-in's page)
    is bound to ``who``, at the Member Center's home."""
    context = await new_phone(browser)
    page = await context.new_page()
    await page.goto(f"{gateway}/wx")
    await expect(page.get_by_role("heading", name="选择模拟用户")).to_be_visible()
    listed = page.get_by_role("button", name=user, exact=True)
    if await listed.count():
        await listed.tap()
    else:
        await page.get_by_label("其他用户名").fill(user)
        await page.get_by_role("button", name="以此身份授权").tap()
    await expect(page.get_by_role("heading", name="绑定会员账号")).to_be_visible()
    await bind(page, *who)
    await expect(page.get_by_role("status")).to_have_text("绑定成功，欢迎使用会员中心。")
    return context, page


def row(page: Page, table: str, text: str) -> Locator:
    """The row of the ``members`` or ``sets`` table that mentions ``text`` (an account or
    a set id: a nickname may also stand in a supervisor's row)."""
    return page.locator(f"table.{table} tbody tr").filter(has_text=text)


def form(page: Page, action: str) -> Locator:
    return page.locator(f"form[action$='/wx/agency/{action}']")


async def refused(page: Page, action: str, code: str) -> None:
    await expect(page.get_by_role("alert")).to_have_text(f"{action}未成功：{MESSAGES[code]}")


async def invite(page: Page, who: tuple[str, str], nickname: str = "") -> None:
    invitation = form(page, "invite")
    await invitation.get_by_label("会员账号").fill(who[0])
    await invitation.get_by_label("昵称").fill(nickname or who[1])
    await invitation.get_by_role("button", name="邀请").tap()


async def accept(page: Page, shots: Shots, label: str) -> None:
    """From the home menu to the invitation, accepted: the agency page, read-only."""
    await page.get_by_role("link", name="代账公司").tap()
    invitations = page.locator(".invitations li")
    await expect(invitations).to_have_count(1)
    await expect(invitations).to_contain_text(f"诚信代账邀请您担任会计 · 管理员 {ADMIN[0]}")
    await fits(page)
    await shots(page, f"invitation-{label}")
    await invitations.get_by_role("button", name="接受邀请").tap()
    await expect(page.get_by_role("status")).to_have_text("已加入代账公司。")
    await expect(page.get_by_role("heading", name="诚信代账")).to_be_visible()
    await expect(page.locator("main form")).to_have_count(0)
    await expect(page.get_by_role("link", name="退出代账公司")).to_be_visible()


async def test_an_administrator_runs_an_agency_and_its_members_see_it_read_only(
        gateway: str, browser: Browser, shots: Shots) -> None:
    for account, nickname in (ADMIN, SUPERVISOR, ACCOUNTANT, OTHER):
        await register(gateway, account, nickname)
    admin, page = await member(browser, gateway, "alice", ADMIN, shots)
    complaints = watch(page)

    # The agencies page: nothing yet; create one, and land on it as its administrator.
    await page.get_by_role("link", name="代账公司").tap()
    await expect(page.get_by_text("您还没有加入代账公司")).to_be_visible()
    await fits(page)
    await shots(page, "agencies-empty")
    await page.get_by_label("公司名称").fill("诚信代账")
    await page.get_by_role("button", name="创建代账公司").tap()
    await expect(page.get_by_role("status")).to_have_text("代账公司已创建，您是它的管理员。")
    await expect(page.get_by_role("heading", name="诚信代账")).to_be_visible()
    agency_id = parse_qs(urlsplit(page.url).query)["id"][0]
    agency_url = f"{gateway}/wx/agency?id={agency_id}"
    await expect(page.locator("table.members tbody tr")).to_have_count(1)
    await expect(row(page, "members", ADMIN[0])).to_contain_text("管理员")
    await expect(page.locator(".facts")).to_contain_text("主管只能下载查看")
    await fits(page)
    await shots(page, "agency-created")

    # Invitations: the nickname must match, nobody twice, never oneself.
    await invite(page, SUPERVISOR, nickname="李五")
    await refused(page, "邀请成员", "no_such_member")
    await expect(form(page, "invite").get_by_label("会员账号")).to_have_value(SUPERVISOR[0])
    await fits(page)
    await shots(page, "invite-wrong-nickname")
    for invited, who in enumerate((SUPERVISOR, ACCOUNTANT, OTHER), start=1):
        await invite(page, who)
        await expect(page.get_by_role("status")).to_contain_text("邀请已发出")
        await expect(page.locator("table.members tr.invited")).to_have_count(invited)
    await invite(page, ACCOUNTANT)
    await refused(page, "邀请成员", "already_in_agency")
    await invite(page, ADMIN)
    await refused(page, "邀请成员", "cannot_invite_self")
    await page.goto(agency_url)
    await expect(page.locator("table.members tbody tr")).to_have_count(4)
    await expect(page.locator("table.members tr.invited")).to_have_count(3)
    await expect(row(page, "members", SUPERVISOR[0])).to_contain_text("会计已邀请，未加入")
    await shots(page, "invited")

    # Each invited member accepts on their own phone and sees the agency read-only.
    phones: dict[tuple[str, str], BrowserContext] = {}
    for user, who in (("bob", SUPERVISOR), ("carol", ACCOUNTANT), ("dave", OTHER)):
        phones[who], their_page = await member(browser, gateway, user, who, shots)
        await accept(their_page, shots, user)
        await shots(their_page, f"joined-{user}")
    await page.goto(agency_url)
    await expect(page.locator("table.members tr.invited")).to_have_count(0)

    # Change a role: 李四 becomes a supervisor.
    change = form(page, "role")
    await change.get_by_label("成员").select_option(label=f"李四（{SUPERVISOR[0]}）· 会计")
    await change.get_by_label("新角色").select_option(label="主管会计")
    await change.get_by_role("button", name="修改角色").tap()
    await expect(page.get_by_role("status")).to_have_text("角色已修改。")
    await expect(row(page, "members", SUPERVISOR[0])).to_contain_text("主管会计")

    # Supervision: 李四 oversees 王五; the same again is refused.
    for attempt in range(2):
        supervise = form(page, "supervise")
        await supervise.get_by_label("主管会计").select_option(SUPERVISOR[0])
        await supervise.get_by_label("督导的会计").select_option(ACCOUNTANT[0])
        await supervise.get_by_role("button", name="安排督导").tap()
        if attempt == 0:
            await expect(page.get_by_role("status")).to_have_text("督导关系已安排。")
    await refused(page, "安排督导", "supervision_exists")
    await expect(row(page, "members", SUPERVISOR[0]).locator("td").nth(2)).to_have_text(
        ACCOUNTANT[1])
    await expect(page.locator(".supervision li")).to_contain_text(["李四 督导 王五"])
    await expect(row(page, "members", ACCOUNTANT[0]).locator("td").nth(2)).to_have_text(
        "由李四督导")

    # The setting: supervisors may upload corrected versions.
    settings = form(page, "settings")
    await settings.get_by_label("主管可上传更正版本").check()
    await settings.get_by_role("button", name="保存设置").tap()
    await expect(page.get_by_role("status")).to_have_text("设置已保存。")
    await expect(page.locator(".facts .supervisors-write")).to_have_text("主管可上传更正版本")
    await expect(form(page, "settings").get_by_label("主管可上传更正版本")).to_be_checked()

    # 王五 marks one of his sets as agency work (the desktop program does that).
    session = (await api(gateway, "identity/login", {"account": ACCOUNTANT[0],
                                                     "password": PASSWORD}))["session"]
    await api(gateway, "social/mark_agency_set", {
        "command_id": cid(), "agency_id": agency_id, "set_id": SET_ID}, session)
    await page.goto(agency_url)
    await expect(row(page, "sets", SET_ID).locator("td")).to_have_text(
        [SET_ID, f"王五 {ACCOUNTANT[0]}", f"王五 {ACCOUNTANT[0]}"])
    await fits(page)
    await shots(page, "agency-admin")

    # Hand it over to 赵六.
    hand = form(page, "hand_over")
    await hand.get_by_label("账套").select_option(f"{ACCOUNTANT[0]}/{SET_ID}")
    await hand.get_by_label("移交给").select_option(OTHER[0])
    await hand.get_by_role("button", name="移交").tap()
    await expect(page.get_by_role("status")).to_have_text("账套已移交。")
    await expect(row(page, "sets", SET_ID).locator("td").nth(2)).to_have_text(
        f"赵六 {OTHER[0]}")
    await shots(page, "handed-over")

    # Remove 王五, after a confirm step: his supervision ends, the set stays with its keeper.
    await row(page, "members", ACCOUNTANT[0]).get_by_role("link", name="移除").tap()
    await expect(page.locator(".warn")).to_contain_text("所有账套权限")
    await expect(page.locator(".warn")).to_contain_text(f"王五（{ACCOUNTANT[0]}，会计）")
    await fits(page)
    await shots(page, "remove-member-confirm")
    await page.get_by_role("button", name="确定移除").tap()
    await expect(page.get_by_role("status")).to_contain_text("已移除该成员")
    await expect(row(page, "members", ACCOUNTANT[0])).to_have_count(0)
    await expect(page.locator("table.members tbody tr")).to_have_count(3)
    await expect(page.get_by_text("还没有督导关系")).to_be_visible()
    await expect(row(page, "sets", SET_ID).locator("td")).to_have_text(
        [SET_ID, f"{ACCOUNTANT[0]} 已不在本公司", f"赵六 {OTHER[0]}"])
    await fits(page)
    await shots(page, "member-removed")

    # A member who is not the administrator: the same tables, no forms, no way in to the
    # administrator's pages.
    supervisor_page = phones[SUPERVISOR].pages[0]
    seen = watch(supervisor_page)
    await supervisor_page.goto(agency_url)
    await expect(row(supervisor_page, "members", SUPERVISOR[0])).to_contain_text("主管会计")
    await expect(supervisor_page.locator(".facts .supervisors-write")).to_have_text(
        "主管可上传更正版本")
    await expect(row(supervisor_page, "sets", SET_ID)).to_contain_text("赵六")
    await expect(supervisor_page.locator("main form")).to_have_count(0)
    await expect(supervisor_page.get_by_role("link", name="移除")).to_have_count(0)
    await expect(supervisor_page.get_by_role("heading", name="管理")).to_have_count(0)
    await fits(supervisor_page)
    await shots(supervisor_page, "agency-read-only")
    await supervisor_page.goto(f"{gateway}/wx/agency/remove?id={agency_id}"
                               f"&account={OTHER[0]}")
    await expect(supervisor_page.get_by_role("alert")).to_have_text(
        MESSAGES["not_agency_admin"])
    await shots(supervisor_page, "not-the-administrator")
    assert seen == ["403 /wx/agency/remove"], "\n".join(seen)

    # 赵六 leaves, after a confirm step: the set he kept waits for a keeper.
    other_page = phones[OTHER].pages[0]
    await other_page.goto(agency_url)
    await other_page.get_by_role("link", name="退出代账公司").tap()
    await expect(other_page.locator(".warn")).to_contain_text("所有账套权限")
    await fits(other_page)
    await shots(other_page, "leave-confirm")
    await other_page.get_by_role("button", name="确定退出").tap()
    await expect(other_page.get_by_role("status")).to_contain_text("您已退出该代账公司")
    await expect(other_page.get_by_text("您还没有加入代账公司")).to_be_visible()
    await shots(other_page, "left")
    await page.goto(agency_url)
    await expect(page.locator("table.members tbody tr")).to_have_count(2)
    await expect(row(page, "sets", SET_ID).locator("td").nth(2)).to_have_text("无人经手")
    await expect(page.get_by_text("有公司账套和已加入的会计后，才能移交账套。")).to_be_visible()
    await fits(page)
    await shots(page, "after-leaving")

    for context in phones.values():
        await context.close()
    await admin.close()
    assert complaints == ["404 /wx/agency/invite", "409 /wx/agency/invite",
                          "400 /wx/agency/invite", "409 /wx/agency/supervise"], (
        "\n".join(complaints))
