"""The WeChat web-authorization stand-in: WeChat's parameters, replies and error codes."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from deploy.freeports import free_port
from deploy.wechat import (
    AUTHORIZE_PATH,
    CHOOSE_PATH,
    STYLE_PATH,
    TOKEN_PATH,
    WeChatStandIn,
    app,
)

APPID, SECRET = "wx1111111111111111", "secret-one"
OTHER_APPID, OTHER_SECRET = "wx2222222222222222", "secret-two"
REDIRECT = "https://gateway.example/wechat/callback?next=%2Fme"
TTL_S = 5.0


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class HiddenFields(HTMLParser):
    """The hidden inputs of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.fields: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "input" and a.get("type") == "hidden" and a.get("name"):
            self.fields[a["name"] or ""] = a.get("value") or ""


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def standin(clock: Clock) -> WeChatStandIn:
    return WeChatStandIn({APPID: SECRET, OTHER_APPID: OTHER_SECRET}, ["alice", "bob"],
                         code_ttl_s=TTL_S, clock=clock)


@pytest.fixture
async def client(standin: WeChatStandIn) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app(standin))
    async with httpx.AsyncClient(transport=transport, base_url="http://wechat.test") as c:
        yield c


def authorize_params(**changes: str) -> dict[str, str]:
    params = {"appid": APPID, "redirect_uri": REDIRECT, "response_type": "code",
              "scope": "snsapi_base", "state": "st-123"}
    return params | changes


async def choice_form(client: httpx.AsyncClient, **changes: str) -> dict[str, str]:
    """The hidden fields of the choice page for an authorize request."""
    page = await client.get(AUTHORIZE_PATH, params=authorize_params(**changes))
    assert page.status_code == 200, page.text
    parser = HiddenFields()
    parser.feed(page.text)
    return parser.fields


async def choose(client: httpx.AsyncClient, form: dict[str, str]) -> httpx.Response:
    return await client.post(CHOOSE_PATH, data=form)


async def code_for(client: httpx.AsyncClient, user: str, *, appid: str = APPID,
                   snapshot: bool = False) -> str:
    """A code for ``user``, got as a browser would: page, button, redirect."""
    form = await choice_form(client, appid=appid) | {"user": user}
    if snapshot:
        form["snapshot"] = "1"
    reply = await choose(client, form)
    assert reply.status_code == 302, reply.text
    return parse_qs(urlsplit(reply.headers["location"]).query)["code"][0]


async def exchange(client: httpx.AsyncClient, code: str, /, **changes: str) -> dict[str, Any]:
    params = {"appid": APPID, "secret": SECRET, "code": code,
              "grant_type": "authorization_code"} | changes
    reply = await client.get(TOKEN_PATH, params=params)
    assert reply.status_code == 200
    body: dict[str, Any] = reply.json()
    return body


async def openid_of(client: httpx.AsyncClient, user: str, appid: str = APPID) -> str:
    secret = SECRET if appid == APPID else OTHER_SECRET
    reply = await exchange(client, await code_for(client, user, appid=appid), appid=appid,
                           secret=secret)
    openid: str = reply["openid"]
    return openid


# ---- authorize ---------------------------------------------------------------------------


async def test_the_authorize_page_offers_the_users_and_is_locked_down(
        client: httpx.AsyncClient) -> None:
    page = await client.get(AUTHORIZE_PATH, params=authorize_params())

    assert page.status_code == 200
    for text in ("微信授权（本地模拟）", 'lang="zh-CN"', 'value="alice"', 'value="bob"',
                 'name="other"', "快照页模式 (is_snapshotuser)"):
        assert text in page.text
    assert "<script" not in page.text and "style=" not in page.text
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "form-action 'self' https://gateway.example" in csp
    assert f'<link rel="stylesheet" href="{STYLE_PATH}">' in page.text
    style = await client.get(STYLE_PATH)
    assert style.status_code == 200 and style.headers["content-type"].startswith("text/css")


@pytest.mark.parametrize(("changes", "complaint"), [
    ({"appid": "wx-unknown"}, "appid 参数错误"),
    ({"scope": "snsapi_login"}, "Scope 参数错误或没有 Scope 权限"),
    ({"scope": ""}, "Scope 参数错误或没有 Scope 权限"),
    ({"response_type": "token"}, "response_type 参数错误"),
    ({"redirect_uri": "/wechat/callback"}, "redirect_uri 参数错误"),
    ({"redirect_uri": "javascript:alert(1)"}, "redirect_uri 参数错误"),
    ({"redirect_uri": "ftp://gateway.example/"}, "redirect_uri 参数错误"),
    ({"redirect_uri": "https://user@evil.example/"}, "redirect_uri 参数错误"),
    ({"redirect_uri": "https://gateway.example/a b"}, "redirect_uri 参数错误"),
    ({"state": "x" * 129}, "state 参数错误"),
])
async def test_a_bad_authorize_request_gets_an_error_page(
        client: httpx.AsyncClient, changes: dict[str, str], complaint: str) -> None:
    page = await client.get(AUTHORIZE_PATH, params=authorize_params(**changes))

    assert page.status_code == 400
    assert complaint in page.text
    assert "default-src 'none'" in page.headers["content-security-policy"]


async def test_a_choice_redirects_with_code_and_state_keeping_the_query(
        client: httpx.AsyncClient) -> None:
    reply = await choose(client, await choice_form(client) | {"user": "alice"})

    assert reply.status_code == 302
    target = urlsplit(reply.headers["location"])
    assert (target.scheme, target.netloc, target.path) == ("https", "gateway.example",
                                                           "/wechat/callback")
    query = parse_qs(target.query)
    assert query["next"] == ["/me"] and query["state"] == ["st-123"]
    assert len(query["code"][0]) >= 20


async def test_a_choice_keeps_the_fragment_after_the_query(client: httpx.AsyncClient) -> None:
    form = await choice_form(client, redirect_uri="http://127.0.0.1:8080/cb#/me")
    location = (await choose(client, form | {"user": "alice"})).headers["location"]

    assert location.startswith("http://127.0.0.1:8080/cb?code=")
    assert location.endswith("&state=st-123#/me")


@pytest.mark.parametrize("changes", [
    {"redirect_uri": "https://evil.example/steal"},
    {"state": "another"},
    {"appid": OTHER_APPID},
    {"seal": "forged"},
    {"redirect_uri": "not a url"},
])
async def test_the_choice_form_cannot_be_pointed_elsewhere(
        client: httpx.AsyncClient, changes: dict[str, str]) -> None:
    reply = await choose(client, await choice_form(client) | {"user": "alice"} | changes)

    assert reply.status_code == 400
    assert "location" not in reply.headers


async def test_a_choice_needs_a_user(client: httpx.AsyncClient) -> None:
    reply = await choose(client, await choice_form(client) | {"user": "", "other": "  "})

    assert reply.status_code == 400


async def test_a_typed_name_is_a_user_too(client: httpx.AsyncClient,
                                          standin: WeChatStandIn) -> None:
    # The blank button (and Enter in the name field) submits the typed name.
    form = await choice_form(client) | {"user": "", "other": " dave "}
    reply = await choose(client, form)
    code = parse_qs(urlsplit(reply.headers["location"]).query)["code"][0]

    assert (await exchange(client, code))["openid"] == standin.openid(APPID, "dave")


# ---- code exchange -----------------------------------------------------------------------


async def test_the_exchange_answers_as_wechat_does(client: httpx.AsyncClient) -> None:
    reply = await exchange(client, await code_for(client, "alice"))

    assert set(reply) == {"access_token", "expires_in", "refresh_token", "openid", "scope"}
    assert reply["expires_in"] == 7200 and reply["scope"] == "snsapi_base"
    assert reply["openid"].startswith("o") and len(reply["openid"]) == 28


async def test_the_openid_is_stable_per_app_and_user(client: httpx.AsyncClient) -> None:
    alice = await openid_of(client, "alice")

    assert await openid_of(client, "alice") == alice
    assert await openid_of(client, "bob") != alice
    assert await openid_of(client, "alice", OTHER_APPID) != alice
    assert "alice" not in alice


async def test_a_second_exchange_is_code_been_used(client: httpx.AsyncClient) -> None:
    code = await code_for(client, "alice")
    await exchange(client, code)

    reply = await exchange(client, code)

    assert reply["errcode"] == 40163 and reply["errmsg"].startswith("code been used")


async def test_an_expired_code_is_invalid(client: httpx.AsyncClient, clock: Clock) -> None:
    code = await code_for(client, "alice")
    clock.now += TTL_S

    assert (await exchange(client, code))["errcode"] == 40029


async def test_a_code_just_before_expiry_is_good(client: httpx.AsyncClient,
                                                 clock: Clock) -> None:
    code = await code_for(client, "alice")
    clock.now += TTL_S - 0.01

    assert "openid" in await exchange(client, code)


@pytest.mark.parametrize(("changes", "errcode"), [
    ({"secret": "wrong"}, 40125),
    ({"secret": OTHER_SECRET}, 40125),
    ({"appid": "wx-unknown"}, 40013),
    ({"appid": ""}, 41002),
    ({"secret": ""}, 41004),
    ({"code": ""}, 41008),
    ({"code": "no-such-code"}, 40029),
    ({"grant_type": "client_credential"}, 40002),
    ({"appid": OTHER_APPID, "secret": OTHER_SECRET}, 40029),  # a code of another app
])
async def test_a_bad_exchange_gets_wechat_s_errcode(
        client: httpx.AsyncClient, changes: dict[str, str], errcode: int) -> None:
    code = await code_for(client, "alice")

    reply = await exchange(client, code, **changes)

    assert set(reply) == {"errcode", "errmsg"} and reply["errcode"] == errcode
    assert "openid" in await exchange(client, code)  # a refused exchange spends nothing


async def test_snapshot_mode_marks_the_user(client: httpx.AsyncClient) -> None:
    reply = await exchange(client, await code_for(client, "alice", snapshot=True))

    assert reply["is_snapshotuser"] == 1


async def test_the_scope_asked_is_the_scope_granted(client: httpx.AsyncClient) -> None:
    form = await choice_form(client, scope="snsapi_userinfo") | {"user": "alice"}
    location = (await choose(client, form)).headers["location"]
    code = parse_qs(urlsplit(location).query)["code"][0]

    assert (await exchange(client, code))["scope"] == "snsapi_userinfo"


# ---- the real process --------------------------------------------------------------------


async def test_the_runner_serves_the_whole_flow_over_http(tmp_path: Path) -> None:
    port = free_port()
    log = (tmp_path / "wechat.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "deploy.wechat", "--port", str(port), "--appid", APPID,
        "--secret", SECRET, "--user", "alice", stdout=log, stderr=log)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            await wait_until_up(client)
            first = await openid_of(client, "alice")
            assert await openid_of(client, "alice") == first
    finally:
        proc.terminate()
        await proc.wait()
        log.close()
    # uvicorn shuts down cleanly, then re-raises the signal it caught.
    output = (tmp_path / "wechat.log").read_text()
    assert proc.returncode in (0, -signal.SIGTERM) and "Traceback" not in output, output


async def wait_until_up(client: httpx.AsyncClient, timeout_s: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        try:
            await client.get(TOKEN_PATH)
            return
        except httpx.TransportError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.05)
