"""Run the gateway: ``python -m gateway`` (``LEDGERSHARE_GATEWAY_HOST`` / ``_PORT``)."""

from __future__ import annotations

import logging

import nats
import uvicorn
import uvloop

from gateway.app import VERSION, create_app
from runtime import logs
from runtime.service import ServiceHost
from runtime.settings import Settings, load_settings
from services.registry import SERVICES

log = logging.getLogger("ledgershare.gateway")


async def serve(settings: Settings) -> None:
    """Serve until SIGTERM or SIGINT (uvicorn's own handling), then drain the bus."""
    nc = await nats.connect(settings.nats_servers, max_reconnect_attempts=-1,
                            reconnect_time_wait=0.5, name="ledgershare-gateway",
                            inbox_prefix=settings.nats_inbox_prefix)
    app = create_app(nc, settings, [s.client for s in SERVICES])
    # Discoverable like the services ($SRV.PING, `ledgershare services`), serving no
    # NATS operation of its own.
    presence = ServiceHost(nc, name="gateway", version=VERSION, endpoints=[],
                           description=f"HTTP edge on {settings.gateway_host}:"
                                       f"{settings.gateway_port}: the desktop API and "
                                       "the Member Center")
    await presence.start()
    # proxy_headers off: uvicorn would take X-Forwarded-For from any local peer; only
    # gateway_trusted_proxies decides whose header names the client (gateway/limits.py).
    server = uvicorn.Server(uvicorn.Config(app, host=settings.gateway_host,
                                           port=settings.gateway_port, log_config=None,
                                           lifespan="off", server_header=False,
                                           proxy_headers=False,
                                           # past it, 503 at once rather than a queue
                                           limit_concurrency=settings.gateway_max_connections,
                                           timeout_keep_alive=5))
    log.info("gateway serving on http://%s:%d", settings.gateway_host, settings.gateway_port)
    try:
        await server.serve()
    finally:
        await presence.stop()
        await nc.drain()


def main() -> None:
    settings = load_settings()
    logs.configure(settings.log_level, json_lines=settings.log_json)
    uvloop.run(serve(settings))


if __name__ == "__main__":
    main()
