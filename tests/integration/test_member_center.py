"""The Member Center's own duties, tried as an attacker would, against the real services:
the WeChat login's state and one-time codes, cookie flags, CSRF on every form, a form
sent twice, headers, and a Chinese message for every error code."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from nats.aio.client import Client as NATS

from contracts.errors import GENERIC
from gateway import web
from gateway.app import create_app
from gateway.messages import MESSAGES
from runtime.settings import Settings
from services.registry import SERVICES
from tests.helpers import WeChat, cid

PASSWORD = "secret-1"
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')
_COMMAND = re.compile(r'name="command_id" value="([^"]+)"')


def browser(app: object, base: str = "http://member-center.test") -> httpx.AsyncClient:
    """A cookie-keeping client, like one phone's browser."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app),  # type: ignore[arg-type]
                             base_url=base)


@pytest.fixture
async def app(all_services: Settings, nc: NATS) -> AsyncIterator[object]:
    yield create_app(nc, all_services, [s.client for s in SERVICES])


async def registered(phone: httpx.AsyncClient, account: str, nickname: str) -> None:
    answer = await phone.post("/api/v1/identity/register", json={
        "command_id": cid(), "account": account, "password": PASSWORD,
        "nickname": nickname})
    assert answer.status_code == 200, answer.text


async def wechat_login(phone: httpx.AsyncClient, wechat: WeChat, user: str) -> httpx.Response:
    """Start at /wx/login and come back with a code for ``user``, as WeChat would."""
    start = await phone.get("/wx/login")
    state = parse_qs(urlsplit(start.headers["location"]).query)["state"][0]
    return await phone.get("/wx/callback", params={"code": wechat.code(user),
                                                   "state": state})


async def bound(phone: httpx.AsyncClient, wechat: WeChat, user: str, account: str,
                nickname: str) -> None:
    """``phone`` logged in as ``account``, bound to WeChat user ``user``."""
    await registered(phone, account, nickname)
    assert (await wechat_login(phone, wechat, user)).headers["location"] == "/wx/bind"
    page = await phone.get("/wx/bind")
    answer = await phone.post("/wx/bind", data={
        "csrf": token(page), "command_id": cid(), "account": account,
        "password": PASSWORD, "nickname": nickname})
    assert answer.status_code == 303 and answer.headers["location"] == "/wx?done=bound"


def token(page: httpx.Response) -> str:
    found = _CSRF.search(page.text)
    assert found, page.text
    return found.group(1)


def cookie_flags(response: httpx.Response, name: str) -> str:
    header = next(h for h in response.headers.get_list("set-cookie")
                  if h.startswith(f"{name}="))
    return header.lower()


async def test_without_a_session_the_browser_goes_to_wechat_with_a_state_it_must_bring_back(
        app: object, all_services: Settings) -> None:
    async with browser(app) as phone:
        home = await phone.get("/wx")
        assert (home.status_code, home.headers["location"]) == (303, "/wx/login")
        start = await phone.get("/wx/login")
    target = urlsplit(start.headers["location"])
    query = parse_qs(target.query)
    assert f"{target.scheme}://{target.netloc}" == all_services.wechat_open_base
    assert target.path == "/connect/oauth2/authorize" and target.fragment == "wechat_redirect"
    assert query["appid"] == [all_services.wechat_appid]
    assert query["scope"] == ["snsapi_base"]
    assert query["redirect_uri"] == ["http://member-center.test/wx/callback"]
    assert query["state"][0] == start.cookies[web.STATE_COOKIE]
    flags = cookie_flags(start, web.STATE_COOKIE)
    assert "httponly" in flags and "samesite=lax" in flags and "path=/wx" in flags
    assert "secure" not in flags  # plain HTTP here; over TLS see below


async def test_an_htmx_request_without_a_session_is_told_to_navigate_to_the_login(
        app: object) -> None:
    async with browser(app) as phone:
        answer = await phone.get("/wx/friends", headers={"HX-Request": "true"})
    assert answer.status_code == 204 and answer.headers["hx-redirect"] == "/wx/login"


async def test_over_tls_every_cookie_is_secure(app: object, wechat: WeChat) -> None:
    async with browser(app, "https://member-center.test") as phone:
        answer = await wechat_login(phone, wechat, "alice")
    assert answer.headers["location"] == "/wx/bind"
    assert "secure" in cookie_flags(answer, web.PROOF_COOKIE)


@pytest.mark.parametrize("state", ["", "somebody-elses-state"])
async def test_a_callback_with_another_state_is_refused_and_the_code_is_not_spent(
        app: object, wechat: WeChat, state: str) -> None:
    code = wechat.code("alice")
    async with browser(app) as phone:
        await phone.get("/wx/login")
        answer = await phone.get("/wx/callback", params={"code": code, "state": state})
        assert answer.status_code == 403 and MESSAGES["login_state"] in answer.text
        assert web.SESSION_COOKIE not in phone.cookies and web.PROOF_COOKIE not in phone.cookies


async def test_a_login_code_works_once_and_a_snapshot_user_is_refused(
        app: object, wechat: WeChat) -> None:
    async with browser(app) as phone:
        start = await phone.get("/wx/login")
        state = parse_qs(urlsplit(start.headers["location"]).query)["state"][0]
        code = wechat.code("alice")
        first = await phone.get("/wx/callback", params={"code": code, "state": state})
        assert first.headers["location"] == "/wx/bind"
        await phone.get("/wx/login")
        again = await phone.get("/wx/callback", params={
            "code": code, "state": phone.cookies[web.STATE_COOKIE]})
        assert again.status_code == 401 and MESSAGES["wechat_code_refused"] in again.text
        snapshot = await phone.get("/wx/callback", params={
            "code": wechat.code("bob", snapshot=True),
            "state": phone.cookies[web.STATE_COOKIE]})
        assert MESSAGES["wechat_snapshot_user"] in snapshot.text


async def test_a_bound_member_comes_back_logged_in_with_an_http_only_session(
        app: object, wechat: WeChat) -> None:
    async with browser(app) as phone:
        await bound(phone, wechat, "carol", "13800000011", "丙")
    async with browser(app) as again:
        answer = await wechat_login(again, wechat, "carol")
        assert answer.headers["location"] == "/wx"
        flags = cookie_flags(answer, web.SESSION_COOKIE)
        assert "httponly" in flags and "samesite=lax" in flags
        home = await again.get("/wx")
    assert home.status_code == 200 and "丙，您好" in home.text


@pytest.mark.parametrize("forged", ["missing", "another-browser", "another-session"])
async def test_a_form_without_this_browsers_token_changes_nothing(
        app: object, wechat: WeChat, forged: str) -> None:
    async with browser(app) as victim, browser(app) as attacker:
        await bound(victim, wechat, "alice", "13800000021", "甲")
        await registered(victim, "13800000022", "乙")
        await bound(attacker, wechat, "bob", "13800000023", "丁")  # a member too
        stolen = {"missing": "", "another-browser": token(await attacker.get("/wx/friends")),
                  "another-session": web.Visitor(
                      session="x", proof="", csrf_key=victim.cookies[web.CSRF_COOKIE],
                      new_csrf_key=False, secure=False).csrf}[forged]
        answer = await victim.post("/wx/friends/add", data={
            "csrf": stolen, "command_id": cid(), "account": "13800000022",
            "nickname": "乙"})
        assert answer.status_code == 403 and MESSAGES["csrf"] in answer.text
        friends = await victim.get("/wx/friends")
    assert "还没有好友" in friends.text


async def test_a_form_sent_twice_is_one_command(app: object, wechat: WeChat) -> None:
    async with browser(app) as phone:
        await bound(phone, wechat, "alice", "13800000031", "甲")
        await registered(phone, "13800000032", "乙")
        await registered(phone, "13800000033", "丙")
        page = await phone.get("/wx/friends")
        form = {"csrf": token(page), "command_id": _COMMAND.findall(page.text)[0],
                "account": "13800000032", "nickname": "乙"}
        first = await phone.post("/wx/friends/add", data=form)
        second = await phone.post("/wx/friends/add", data=form)
        assert first.headers["location"] == second.headers["location"]
        other = await phone.post("/wx/friends/add", data=form | {
            "account": "13800000033", "nickname": "丙"})
        assert other.status_code == 409 and MESSAGES["command_reused"] in other.text
        friends = await phone.get("/wx/friends")
    assert friends.text.count("/wx/friends/remove?account=") == 1
    assert "13800000033" not in friends.text


async def test_sharing_a_set_not_in_the_drive_and_garbage_forms_are_refused_in_chinese(
        app: object, wechat: WeChat) -> None:
    async with browser(app) as phone:
        await bound(phone, wechat, "alice", "13800000041", "甲")
        missing = await phone.get("/wx/share", params={"set": "no-such-set"})
        assert missing.status_code == 400 and MESSAGES["no_backup"] in missing.text
        page = await phone.get("/wx/friends")
        garbage = await phone.post("/wx/share", content=b"csrf=" + token(page).encode()
                                   + b"&years=MMXVIII&set_id=x",
                                   headers={"content-type": "application/x-www-form-urlencoded"})
        assert garbage.status_code == 400 and MESSAGES["bad_request"] in garbage.text
        huge = await phone.post("/wx/friends/add", content=b"a" * (1024 * 1024),
                                headers={"content-type": "application/x-www-form-urlencoded"})
        assert huge.status_code == 413


async def test_pages_allow_only_their_own_scripts_and_the_api_none(app: object) -> None:
    async with browser(app) as phone:
        page = await phone.get("/wx/login")
        api = await phone.get("/api/v1/openapi.json")
        script = await phone.get("/wx/static/vendor/htmx-2.0.11.min.js")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe" not in csp and "frame-ancestors 'none'" in csp
    assert api.headers["content-security-policy"] == "default-src 'none'; frame-ancestors 'none'"
    assert script.status_code == 200 and "htmx" in script.text


def test_every_error_code_an_operation_may_answer_has_a_chinese_message() -> None:
    codes = {cls.code for cls in GENERIC}
    for service in SERVICES:
        for operation in service.client.operations():
            codes |= set(operation.codes)
    assert codes - set(MESSAGES) == set()


async def test_guessing_a_password_through_the_bind_form_is_throttled(
        all_services: Settings, nc: NATS, wechat: WeChat) -> None:
    app = create_app(nc, all_services.with_overrides(
        gateway_limit_per_account=3, gateway_limit_window_s=86400.0),
        [s.client for s in SERVICES])
    async with browser(app) as victim, browser(app) as attacker:
        await registered(victim, "13800000051", "甲")
        assert (await wechat_login(attacker, wechat, "bob")).headers["location"] == "/wx/bind"
        page = await attacker.get("/wx/bind")
        guesses = [await attacker.post("/wx/bind", data={
            "csrf": token(page), "command_id": cid(), "account": "13800000051",
            "password": f"guess-{n}", "nickname": "甲"}) for n in range(5)]
    # The registration counted against the account too: two guesses are left of three.
    assert [g.status_code for g in guesses] == [401, 401, 429, 429, 429]
    assert MESSAGES["rate_limited"] in guesses[-1].text


async def test_leaving_the_member_center_ends_the_session_everywhere(
        app: object, wechat: WeChat) -> None:
    async with browser(app) as phone:
        await bound(phone, wechat, "carol", "13800000061", "丙")
        session = phone.cookies[web.SESSION_COOKIE]
        page = await phone.get("/wx")
        left = await phone.post("/wx/logout", data={"csrf": token(page),
                                                    "command_id": cid()})
        assert left.status_code == 200 and "本次登录已失效" in left.text
        assert web.SESSION_COOKIE not in phone.cookies
        kept = await phone.post("/api/v1/identity/me",
                                headers={"Authorization": f"Bearer {session}"})
    assert kept.status_code == 401 and kept.json()["code"] == "invalid_token"
