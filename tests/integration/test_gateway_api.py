"""The desktop API of the gateway, against the real services on real servers: each
operation members may call is served from its declaration, typed errors keep their code
and get the status of their class, and nothing internal is reachable."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import nats
import pytest
from nats.aio.client import Client as NATS

from gateway.app import HEADERS, create_app
from runtime.settings import Settings
from services.registry import SERVICES
from tests.helpers import cid


@pytest.fixture
async def api(all_services: Settings, nc: NATS) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(nc, all_services.with_overrides(gateway_max_body_bytes=4096),
                     [s.client for s in SERVICES])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://gateway.test") as client:
        yield client


async def call(api: httpx.AsyncClient, path: str, body: Any = None, *,
               session: str = "") -> httpx.Response:
    headers = {"Authorization": f"Bearer {session}"} if session else {}
    return await api.post(f"/api/v1/{path}", json={} if body is None else body,
                          headers=headers)


async def member(api: httpx.AsyncClient, account: str, nickname: str) -> str:
    registered = await call(api, "identity/register", {
        "command_id": cid(), "account": account, "password": "secret-1",
        "nickname": nickname})
    assert registered.status_code == 200, registered.text
    login = await call(api, "identity/login", {"account": account, "password": "secret-1"})
    assert login.status_code == 200, login.text
    session: str = login.json()["session"]
    return session


async def test_a_member_registers_logs_in_and_reads_their_info_with_a_bearer_session(
        api: httpx.AsyncClient) -> None:
    session = await member(api, "13800000001", "张三")
    me = await call(api, "identity/me", session=session)
    assert me.status_code == 200
    assert me.json()["account"] == "13800000001" and me.json()["nickname"] == "张三"
    assert me.headers["content-type"] == "application/json"
    for name, value in HEADERS.items():
        assert me.headers[name] == value


@pytest.mark.parametrize(("path", "body", "status", "code"), [
    ("identity/me", {}, 400, "bad_request"),  # no session anywhere: the request is invalid
    ("identity/me", {"session": "x.y"}, 401, "invalid_token"),
    ("identity/me", [1, 2], 400, "bad_request"),
    ("identity/login", {"account": "nobody", "password": "wrong-1"}, 401,
     "invalid_credentials"),
    ("identity/register", {"command_id": "short", "account": "a", "password": "p",
                           "nickname": "n"}, 400, "bad_request"),
    ("identity/nothing", {}, 404, "no_such_operation"),
    ("sharing/check", {}, 404, "no_such_operation"),  # for services only
    ("storage/set_quota", {}, 404, "no_such_operation"),  # for operators only
    ("identity/login_wechat", {"code": "c"}, 404, "no_such_operation"),  # WeChat's edge
    ("admin/replay", {}, 404, "no_such_operation"),
])
async def test_each_refusal_is_a_typed_error_with_the_status_of_its_class(
        api: httpx.AsyncClient, path: str, body: Any, status: int, code: str) -> None:
    answer = await call(api, path, body)
    assert (answer.status_code, answer.json()["code"]) == (status, code), answer.text
    assert answer.json()["message"] and answer.json()["correlation_id"]


async def test_a_taken_account_is_a_conflict_and_a_body_past_the_limit_is_refused_unread(
        api: httpx.AsyncClient) -> None:
    await member(api, "taken", "T")
    again = await call(api, "identity/register", {
        "command_id": cid(), "account": "TAKEN", "password": "secret-1", "nickname": "T"})
    assert (again.status_code, again.json()["code"]) == (409, "account_taken")
    huge = await api.post("/api/v1/identity/login", content=b"{" + b" " * 5000 + b"}",
                          headers={"content-type": "application/json"})
    assert (huge.status_code, huge.json()["code"]) == (413, "too_large")
    not_json = await api.post("/api/v1/identity/login", content=b"{nope")
    assert (not_json.status_code, not_json.json()["code"]) == (400, "bad_request")


async def test_another_members_session_reaches_only_what_that_member_may_see(
        api: httpx.AsyncClient) -> None:
    alice = await member(api, "alice", "Alice")
    bob = await member(api, "bob", "Bob")
    drive = await call(api, "storage/drive", session=alice)
    assert drive.status_code == 200 and drive.json()["set_years"] == []
    # Bob, his cloud drive unlocked, asks for a year of Alice's set: not shared with him.
    alice_id = (await call(api, "identity/me", session=alice)).json()["member_id"]
    asked = {"owner_id": alice_id, "set_id": "s1", "year": 2018}
    locked = await call(api, "storage/versions", asked, session=bob)
    assert (locked.status_code, locked.json()["code"]) == (401, "invalid_token")
    assert (await call(api, "identity/drive_password_set", {
        "command_id": cid(), "password": "drive-pw", "question": "q?", "answer": "a"},
        session=bob)).status_code == 200
    unlocked = await call(api, "identity/drive_password_verify", {
        "command_id": cid(), "password": "drive-pw"}, session=bob)
    refused = await call(api, "storage/versions",
                         {**asked, "drive_token": unlocked.json()["drive_token"]}, session=bob)
    assert (refused.status_code, refused.json()["code"]) == (403, "no_access"), refused.text


async def test_the_openapi_document_describes_exactly_the_operations_served(
        api: httpx.AsyncClient) -> None:
    doc = (await api.get("/api/v1/openapi.json")).json()
    served = {f"/api/v1/{s.name}/{op.name}" for s in SERVICES
              for op in s.client.operations() if "desktop" in op.audience}
    assert set(doc["paths"]) == served
    assert "/api/v1/sharing/check" not in doc["paths"]
    for path, item in doc["paths"].items():
        request = item["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert request["$ref"].split("/")[-1] in doc["components"]["schemas"], path
    me = doc["paths"]["/api/v1/identity/me"]["post"]
    assert me["security"] == [{"session": []}]
    assert "`invalid_token`" in me["responses"]["401"]["description"]
    assert "/api/v1/identity/register" in doc["paths"]
    assert "security" not in doc["paths"]["/api/v1/identity/register"]["post"]


@pytest.mark.parametrize("body", [b"\xff\xfe{}", b"[" * 3000, b'{"account": "a"'])
async def test_a_body_that_is_not_json_text_is_a_bad_request(api: httpx.AsyncClient,
                                                             body: bytes) -> None:
    answer = await api.post("/api/v1/identity/login", content=body,
                            headers={"content-type": "application/json"})
    assert (answer.status_code, answer.json()["code"]) == (400, "bad_request")
    assert answer.headers["x-content-type-options"] == "nosniff"


async def test_two_different_sessions_are_refused_and_a_forged_correlation_id_replaced(
        api: httpx.AsyncClient) -> None:
    alice = await member(api, "alice2", "Alice")
    bob = await member(api, "bob2", "Bob")
    both = await call(api, "identity/me", {"session": bob}, session=alice)
    assert (both.status_code, both.json()["code"]) == (400, "bad_request")
    same = await call(api, "identity/me", {"session": alice}, session=alice)
    assert same.json()["account"] == "alice2"
    for forged in ("x" * 5000, "a b c d e f", "short"):
        answer = await api.post("/api/v1/identity/me", json={"session": alice},
                                headers={"x-correlation-id": forged})
        assert answer.headers["ledger-correlation-id"] != forged
    kept = await api.post("/api/v1/identity/me", json={"session": alice},
                          headers={"x-correlation-id": "trace-0123456789"})
    assert kept.headers["ledger-correlation-id"] == "trace-0123456789"


async def test_with_a_service_down_the_client_learns_nothing_of_the_inside(
        nc: NATS, settings: Settings) -> None:
    app = create_app(nc, settings, [s.client for s in SERVICES])  # no service is running
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://gateway.test") as client:
        answer = await call(client, "identity/me", {"session": "x.y"})
    assert (answer.status_code, answer.json()["code"]) == (503, "unavailable")
    assert answer.headers["retry-after"] == "1"
    message = answer.json()["message"]
    assert "identity" not in message and "nats" not in message.lower() and "." not in message


async def test_a_gateway_without_its_bus_is_alive_but_not_ready(all_services: Settings,
                                                                 nc: NATS) -> None:
    own = await nats.connect(all_services.nats_servers)
    app = create_app(own, all_services, [s.client for s in SERVICES])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://gateway.test") as client:
        assert (await client.get("/readyz")).status_code == 200
        await own.close()
        assert (await client.get("/readyz")).status_code == 503
        assert (await client.get("/healthz")).status_code == 200
