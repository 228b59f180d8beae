"""The typed clients through the gateway (`contracts.http`), against the real gateway app
in-process on the real services: the same replies and the same typed errors as over
NATS, and a gateway that is not there is one clear `Unavailable`."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from nats.aio.client import Client as NATS
from starlette.applications import Starlette
from starlette.responses import HTMLResponse
from starlette.routing import Route

from contracts.errors import LedgerError, NotFound, Unavailable
from contracts.http import IdentityOverHttp, SharingOverHttp, gateway_http
from contracts.identity import (
    AccountTaken,
    InvalidCredentials,
    InvalidToken,
    Login,
    LoginWechat,
    Me,
    Register,
)
from contracts.sharing import Check
from gateway.app import create_app
from runtime.settings import Settings
from services.registry import SERVICES
from tests.helpers import cid
from tests.support import free_port


@pytest.fixture
async def web(all_services: Settings, nc: NATS) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of the gateway app, served in this process."""
    app = create_app(nc, all_services, [s.client for s in SERVICES])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://gateway.test") as client:
        yield client


async def test_a_member_registers_logs_in_and_reads_their_info_through_the_gateway(
        web: httpx.AsyncClient) -> None:
    identity = IdentityOverHttp(web)
    registered = await identity.register(Register(
        command_id=cid(), account="carol", password="secret-1", nickname="Carol"))
    session = await identity.login(Login(account="carol", password="secret-1"))
    info = await identity.me(Me(session=session.session), correlation_id=cid())
    assert (info.member_id, info.account, info.nickname) == (
        registered.member_id, "carol", "Carol")
    assert session.member_id == registered.member_id and registered.seq > 0


async def test_each_error_reply_is_raised_as_the_typed_error_the_operation_declares(
        web: httpx.AsyncClient) -> None:
    identity = IdentityOverHttp(web)
    with pytest.raises(InvalidCredentials) as wrong:  # 401
        await identity.login(Login(account="nobody", password="wrong-1"))
    assert wrong.value.code == "invalid_credentials" and wrong.value.correlation_id
    await identity.register(Register(command_id=cid(), account="taken", password="secret-1",
                                     nickname="T"))
    with pytest.raises(AccountTaken, match="account_taken"):  # 409
        await identity.register(Register(command_id=cid(), account="TAKEN",
                                         password="secret-1", nickname="T"))
    with pytest.raises(InvalidToken):  # 401, another code of the same status
        await identity.me(Me(session="x.y"))


async def test_an_operation_the_gateway_does_not_serve_is_not_found_with_its_own_code(
        web: httpx.AsyncClient) -> None:
    # WeChat's edge and the services call these over NATS; the desktop API has no path.
    with pytest.raises(NotFound) as wechat:
        await IdentityOverHttp(web).login_wechat(LoginWechat(code="c"))
    assert wechat.value.code == "no_such_operation"
    assert "/api/v1/identity/login_wechat" in wechat.value.message
    with pytest.raises(NotFound, match="no_such_operation"):
        await SharingOverHttp(web).check(Check(member_id="m" * 32, owner_id="o" * 32,
                                               set_id="s1", year=2018, access="read"))


async def test_a_gateway_that_is_not_there_is_unavailable_naming_its_url() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    async with gateway_http(url, timeout=2) as client:
        with pytest.raises(Unavailable, match=rf"the gateway at {url}.* is not reachable"):
            await IdentityOverHttp(client).login(Login(account="a", password="secret-1"))


async def test_a_page_that_is_not_the_gateways_says_what_answered() -> None:
    async def proxy_page(_request: object) -> HTMLResponse:
        return HTMLResponse("<h1>502 Bad Gateway</h1>", status_code=502)

    async def not_here(_request: object) -> HTMLResponse:
        return HTMLResponse("<h1>Not Found</h1>", status_code=404)

    app = Starlette(routes=[Route("/proxy/api/v1/identity/login", proxy_page, methods=["POST"]),
                            Route("/other/api/v1/identity/login", not_here, methods=["POST"])])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://edge.test/proxy") as client:
        with pytest.raises(Unavailable, match="HTTP 502 Bad Gateway, not an error reply"):
            await IdentityOverHttp(client).login(Login(account="a", password="secret-1"),
                                                 correlation_id=None)
        client.base_url = httpx.URL("http://edge.test/other")
        with pytest.raises(LedgerError, match=r"HTTP 404 Not Found.*is that a ledgershare"):
            await IdentityOverHttp(client).login(Login(account="a", password="secret-1"))
