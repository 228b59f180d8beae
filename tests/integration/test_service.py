"""The service runtime against a real nats-server: typed errors for any input, stats, drain."""

from __future__ import annotations

import asyncio
import json

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nats.aio.client import Client as NATS

from contracts.base import Reply, Request
from contracts.client import ServiceClient
from contracts.errors import BadRequest, Internal, LedgerError, NotFound, TooLarge, Unavailable
from contracts.operations import Operation
from runtime.service import Call, Endpoint, ServiceHost


class Greet(Request, frozen=True, kw_only=True):
    name: str
    times: int = 1


class Greeting(Reply, frozen=True, kw_only=True):
    text: str


class NoSuchPerson(NotFound):
    code = "no_such_person"


class DemoClient(ServiceClient):
    context = "demo"
    greet = Operation(Greet, Greeting, errors=(NoSuchPerson,))


async def greet(req: Greet, call: Call) -> Greeting:
    if req.name == "nobody":
        raise NoSuchPerson("no person called nobody")
    if req.name == "boom":
        raise RuntimeError("secret internals")
    if req.name == "slow":
        await asyncio.sleep(0.5)
    return Greeting(text=" ".join([f"hello {req.name}"] * req.times))


@pytest.fixture
async def host(nc: NATS) -> ServiceHost:
    h = ServiceHost(nc, name="demo", version="1.0.0", description="test",
                    endpoints=[Endpoint(DemoClient.greet, greet)])
    await h.start()
    return h


@pytest.fixture
def client(nc: NATS, host: ServiceHost) -> DemoClient:
    return DemoClient(nc, timeout=2.0)


async def test_a_request_gets_its_reply(client: DemoClient) -> None:
    reply = await client.greet(Greet(name="ann", times=2))
    assert reply.text == "hello ann hello ann"


async def test_a_domain_error_arrives_as_its_own_class(client: DemoClient) -> None:
    with pytest.raises(NoSuchPerson) as info:
        await client.greet(Greet(name="nobody"))
    assert info.value.code == "no_such_person" and "nobody" in info.value.message
    assert info.value.correlation_id


async def test_an_unexpected_exception_is_internal_without_details(
        client: DemoClient) -> None:
    with pytest.raises(Internal) as info:
        await client.greet(Greet(name="boom"))
    assert "secret" not in info.value.message and "Traceback" not in info.value.message
    assert info.value.correlation_id in info.value.message


@pytest.mark.parametrize("payload", [
    b"", b"null", b"[]", b"{}", b'{"name": 5}', b'{"name": "a", "extra": 1}',
    b"\xff\xfe", b'{"name": "a"', b"[" * 10000, b'{"name": "\\ud800"}',
])
async def test_malformed_payloads_get_bad_request(client: DemoClient, payload: bytes) -> None:
    with pytest.raises(BadRequest):
        await client.call_raw("greet", payload)


async def test_wrong_type_says_where(client: DemoClient) -> None:
    with pytest.raises(BadRequest, match=r"\$\.name"):
        await client.call_raw("greet", b'{"name": 5}')


async def test_oversized_payload_is_too_large(client: DemoClient) -> None:
    body = json.dumps({"name": "x" * 300_000}).encode()
    with pytest.raises(TooLarge):
        await client.call_raw("greet", body)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=st.binary(max_size=2000) | st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
    max_leaves=20).map(lambda v: json.dumps(v).encode()))
async def test_any_bytes_get_a_typed_reply_and_the_service_stays_up(
        client: DemoClient, payload: bytes) -> None:
    try:
        await client.call_raw("greet", payload)
    except LedgerError as err:
        assert err.code in {"bad_request", "too_large"}
    reply = await client.greet(Greet(name="still"))
    assert reply.text == "hello still"


async def test_requests_are_served_concurrently(client: DemoClient) -> None:
    started = asyncio.get_running_loop().time()
    await asyncio.gather(*(client.greet(Greet(name="slow")) for _ in range(8)))
    assert asyncio.get_running_loop().time() - started < 2.0


async def test_stop_drains_requests_in_flight(client: DemoClient, host: ServiceHost) -> None:
    pending = asyncio.create_task(client.greet(Greet(name="slow")))
    await asyncio.sleep(0.1)
    await host.stop()
    assert (await pending).text == "hello slow"
    with pytest.raises(Unavailable):
        await client.greet(Greet(name="late"))


async def test_discovery_and_stats_through_srv_subjects(
        nc: NATS, client: DemoClient) -> None:
    await client.greet(Greet(name="a"))
    with pytest.raises(NoSuchPerson):
        await client.greet(Greet(name="nobody"))
    info = msgspec.json.decode((await nc.request("$SRV.INFO.demo", b"", timeout=1)).data)
    assert [e["subject"] for e in info["endpoints"]] == ["demo.greet"]
    stats = msgspec.json.decode((await nc.request("$SRV.STATS.demo", b"", timeout=1)).data)
    data = stats["endpoints"][0]["data"]
    assert data["requests"] == 2 and data["errors"] == 1 and data["last_error"] == "no_such_person"


class LaxClient(ServiceClient):
    context = "lax"
    greet = Operation(Greet, Greeting)  # declares no NoSuchPerson


async def test_an_error_the_operation_does_not_declare_is_flagged(nc: NATS) -> None:
    host = ServiceHost(nc, name="lax", version="1.0.0", description="test",
                       endpoints=[Endpoint(LaxClient.greet, greet)])
    await host.start()
    try:
        with pytest.raises(LedgerError) as raised:
            await LaxClient(nc, timeout=2.0).greet(Greet(name="nobody"))
        assert type(raised.value) is LedgerError and raised.value.code == "no_such_person"
        assert host.undeclared == ["greet raised NoSuchPerson (no_such_person), undeclared"]
        await DemoClient(nc, timeout=2.0, context="lax").greet(Greet(name="ann"))
        assert len(host.undeclared) == 1
    finally:
        await host.stop()


def test_a_host_serves_every_declared_operation_once(nc: NATS) -> None:
    with pytest.raises(TypeError, match="missing \\['greet'\\]"):
        ServiceHost(nc, name="demo", version="1", description="d", endpoints=[],
                    declared=DemoClient.operations())
    with pytest.raises(TypeError, match="undeclared"):
        ServiceHost(nc, name="demo", version="1", description="d",
                    endpoints=[Endpoint(LaxClient.greet, greet)],
                    declared=DemoClient.operations())
