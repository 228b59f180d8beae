"""The probe of a service that answers only over NATS: ``python -m deploy.probe <service>``.

Kubernetes runs it in the service's container (an exec probe), so it connects with the
service's own settings (``LEDGERSHARE_NATS_URL`` with its user, its inbox prefix, the CA
in ``SSL_CERT_FILE``), sends ``$SRV.PING.<service>`` and exits 0 once an instance answers
under that name, 1 otherwise, saying why on stderr (the pod's events show it).

Any instance's answer counts, unless the answers name their host (a ``host`` entry in
the service's metadata): then only this pod's does. Without it the probe tells that the
service answers, not that this pod does.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec
import nats
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from runtime.settings import Settings, load_settings

WITHIN_S = 2.0


def healthy(answers: Sequence[Mapping[str, Any]], name: str, host: str) -> bool:
    """Whether the ping answers show ``name`` alive (on ``host``, when they say hosts)."""
    mine = [a for a in answers if a.get("name") == name]
    hosts = [(a.get("metadata") or {}).get("host") for a in mine]
    if any(hosts):
        return host in hosts
    return bool(mine)


async def ping(nc: NATS, name: str, host: str, within: float) -> list[dict[str, Any]]:
    """The answers to ``$SRV.PING.<name>`` until a healthy one or ``within`` seconds."""
    answers: list[dict[str, Any]] = []
    done = asyncio.Event()

    async def take(msg: Msg) -> None:
        try:
            answers.append(msgspec.json.decode(msg.data))
        except msgspec.DecodeError:
            return
        if healthy(answers, name, host):
            done.set()

    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox, cb=take)
    try:
        await nc.publish(f"$SRV.PING.{name}", b"", reply=inbox)
        try:
            await asyncio.wait_for(done.wait(), within)
        except TimeoutError:
            pass
        return answers
    finally:
        await sub.unsubscribe()


async def probe(settings: Settings, name: str, *, host: str, within: float) -> str | None:
    """None when ``name`` answers, else what went wrong."""
    async def quiet(_err: Exception) -> None:
        pass

    try:
        # nats-py retries a refused first connection forever unless attempts are bounded.
        nc = await asyncio.wait_for(nats.connect(
            settings.nats_servers, inbox_prefix=settings.nats_inbox_prefix,
            name=f"probe-{name}", connect_timeout=within, allow_reconnect=False,
            max_reconnect_attempts=1, reconnect_time_wait=0.1, error_cb=quiet), within)
    except Exception as err:  # every way a connection fails is one answer: unhealthy
        return f"cannot reach NATS: {err!r}"
    try:
        answers = await ping(nc, name, host, within)
    finally:
        await nc.close()
    if healthy(answers, name, host):
        return None
    return f"{name} did not answer $SRV.PING.{name} within {within:g}s ({len(answers)} answers)"


def main(argv: list[str] | None = None) -> int:
    """Probe once; 0 healthy, 1 not."""
    parser = argparse.ArgumentParser(prog="python -m deploy.probe", description=__doc__)
    parser.add_argument("service", help="the service's name (its $SRV name)")
    parser.add_argument("--within", type=float, default=WITHIN_S, help="seconds to wait")
    args = parser.parse_args(argv)
    problem = asyncio.run(probe(load_settings(), args.service, host=socket.gethostname(),
                                within=args.within))
    if problem is not None:
        print(problem, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
