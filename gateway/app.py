"""The gateway's ASGI application: the desktop program's API under ``/api/v1`` and the
WeChat Member Center's pages under ``/wx``.

Stateless: every request is answered from the services over NATS, so any number of
instances can stand behind a load balancer.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from nats.aio.client import Client as NATS
from starlette.applications import Starlette
from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from contracts.client import ServiceClient
from gateway import openapi
from gateway.api import PREFIX, Api, exposed
from gateway.limits import limiter_for
from gateway.pages import ROOT, STATIC, Pages
from runtime.settings import Settings

VERSION = "0.1.0"
# The API answers JSON only: no page of its may run a script or be framed.
HEADERS = {"Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
           "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
           "Cache-Control": "no-store"}
# The pages run the gateway's own script and style files only: no inline script or style,
# no other origin, forms posted back here; htmx's requests go to this origin alone.
PAGE_HEADERS = HEADERS | {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
                               "img-src 'self' data:; connect-src 'self'; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "Referrer-Policy": "same-origin"}
STATIC_HEADERS = PAGE_HEADERS | {"Cache-Control": "public, max-age=3600"}


def headers_for(path: str) -> dict[str, str]:
    """The security headers of the response to ``path``."""
    if path == ROOT or path.startswith(f"{ROOT}/"):
        return STATIC_HEADERS if path.startswith(f"{STATIC}/") else PAGE_HEADERS
    return HEADERS


def create_app(nc: NATS, settings: Settings, clients: list[type[ServiceClient]],
               *, lifespan: Callable[[Starlette], Any] | None = None) -> Starlette:
    """The gateway on a connected NATS client."""
    operations = exposed(nc, clients, audience="desktop", timeout=settings.request_timeout_s)
    limiter = limiter_for(nc, settings)
    api = Api(operations, max_body=settings.gateway_max_body_bytes, limiter=limiter)
    document = msgspec.json.encode(openapi.document(operations.values(), version=VERSION))

    async def spec(_request: HttpRequest) -> Response:
        return Response(document, media_type="application/json")

    async def health(_request: HttpRequest) -> Response:
        """Alive: the process serves HTTP (a NATS outage is no reason to restart it)."""
        return JSONResponse({"nats": nc.is_connected})

    async def ready(_request: HttpRequest) -> Response:
        """Ready for traffic: 503 while the bus is not reachable, so a load balancer
        sends members to a gateway that can answer them."""
        return JSONResponse({"nats": nc.is_connected},
                            status_code=200 if nc.is_connected else 503)

    pages = Pages(nc, settings, limiter)
    app = Starlette(routes=[
        Route(f"{PREFIX}/openapi.json", spec, methods=["GET"]),
        Route(f"{PREFIX}/{{context}}/{{operation}}", api.call, methods=["POST"]),
        Route("/healthz", health, methods=["GET"]),
        Route("/readyz", ready, methods=["GET"]),
        *pages.routes(),
    ], lifespan=lifespan)
    app.add_middleware(SecurityHeaders)
    app.state.limiter = limiter  # the pages' handlers count their logins with it too
    return app


class SecurityHeaders:
    """Adds `PAGE_HEADERS` to the pages' responses, `HEADERS` to every other one."""

    def __init__(self, app: Callable[..., Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Callable[..., Any],
                       send: Callable[..., Awaitable[None]]) -> None:
        async def with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = [*message.get("headers", []), *(
                    (k.lower().encode(), v.encode())
                    for k, v in headers_for(scope.get("path", "")).items()
                    if k.lower().encode() not in present)]
            await send(message)

        await self.app(scope, receive, with_headers if scope["type"] == "http" else send)
