"""The three servers of the embedded stack: how each is launched, probed and stopped.

Each part is a plain description (argv, environment, user, stop signal) plus an async
readiness probe that really talks to the server; `deploy.stack` runs them.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from deploy.credentials import (
    LOOPBACK,
    SUPERUSER,
    Secrets,
    inbox,
    nats_url,
    nats_users,
    write_private,
)
from deploy.nats.permissions import OPERATOR, password_variable, render
from deploy.pgcluster import pg_bin, prepare_pgdata, probe_postgres, provision_postgres
from runtime.settings import Settings

PG_OS_USER = "embedded_postgres"


class StackPorts(msgspec.Struct, frozen=True, kw_only=True):
    """Every port the stack binds; all on 127.0.0.1."""

    nats: int = 4222
    pg: int = 5433
    s3: int = 8333
    weed_master: int = 9333
    weed_volume: int = 8088
    weed_filer: int = 8888
    weed_admin: int = 23646
    wechat: int = 8450
    grpc_offset: int = 10000

    def named(self) -> dict[str, int]:
        """Each bound port with the part that binds it, for clear 'port taken' errors."""
        base = {
            "nats": self.nats,
            "postgres": self.pg,
            "s3": self.s3,
            "s3 (weed master)": self.weed_master,
            "s3 (weed volume)": self.weed_volume,
            "s3 (weed filer)": self.weed_filer,
            "s3 (weed admin)": self.weed_admin,
            "wechat (stand-in)": self.wechat,
        }
        grpc = {f"{k} grpc": v + self.grpc_offset for k, v in base.items() if k.startswith("s3")}
        return base | grpc


@dataclass
class Part:
    """One server process of the stack."""

    name: str
    argv: list[str]
    probe: Callable[[], Awaitable[None]]
    stop_signal: int = signal.SIGTERM
    user: str | None = None
    prepare: Callable[[], None] = lambda: None
    env: dict[str, str] = field(default_factory=dict)
    ready: Callable[[], Coroutine[Any, Any, None]] | None = None  # once it answers


def find_binary(name: str) -> str:
    """A server binary installed by pip next to this interpreter, else on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} not found: install the project (pip install -e .)")
    return found


def nats_part(settings: Settings, ports: StackPorts, data: Path, found: Secrets | None,
              streams: bool = True) -> Part:
    """nats-server with JetStream, file store under data/nats, production's accounts and
    users; with ``streams``, the operator creates the streams once it answers."""
    conf = data / "nats" / "nats.conf"

    def prepare() -> None:
        (data / "nats").mkdir(mode=0o700, parents=True, exist_ok=True)
        write_private(conf, _nats_conf(ports.nats, data / "nats" / "jetstream").encode())

    # The passwords reach the server through its environment, which only its owner (and
    # root) can read (/proc/<pid>/environ is 0400), so the configuration holds none. Plain
    # passwords rather than bcrypt hashes: a bcrypt check costs every connection tens of
    # milliseconds (the tests open thousands), and a hash would guard only a copy of a
    # file that, like the secrets file beside it, nobody but its owner reads anyway.
    env = {} if found is None else {password_variable(u): found.nats[u] for u in nats_users()}

    async def create_streams() -> None:
        if found is not None and streams:
            await bootstrap_streams(nats_url(found, OPERATOR, ports.nats), settings)

    return Part(
        name="nats",
        argv=[find_binary("nats-server"), "-c", str(conf)],
        probe=lambda: probe_nats(settings.nats_url),
        prepare=prepare,
        env=env,
        ready=create_streams,
    )


def _nats_conf(port: int, store: Path) -> str:
    # The accounts and users are production's, rendered by the same generator: what a
    # service may do here is what it may do there. No user means no connection (there is
    # no no_auth_user); `admin` (the local superuser) is the one addition.
    return (
        "# ledgershare: the local stack's nats-server (deploy/parts.py writes it at each up)\n"
        "server_name: ledgershare_local\n"
        f"listen: {LOOPBACK}:{port}\n"
        "max_payload: 1MB\n"
        f"jetstream {{\n  store_dir: {json.dumps(str(store))}\n}}\n\n"
        + render(admin=True)
    )


async def bootstrap_streams(url: str, settings: Settings) -> None:
    """As the operator, create (or check) the log, the journal and the limits' bucket: no
    service may create a stream, as in production (deploy/bootstrap.py)."""
    import nats

    from deploy.bootstrap import create_streams

    nc = await nats.connect(url, inbox_prefix=inbox(OPERATOR), allow_reconnect=False,
                            connect_timeout=2)
    try:
        await create_streams(nc, settings)
    finally:
        await nc.close()


def postgres_part(settings: Settings, ports: StackPorts, data: Path, fast: bool,
                  found: Secrets | None) -> Part:
    """PostgreSQL from embedded-postgres, run as an unprivileged user when we are root;
    password (SCRAM) authentication only, a role per service."""
    pgdata = data / "postgres"
    password = "" if found is None else found.postgres[SUPERUSER]
    user = PG_OS_USER if os.geteuid() == 0 else None
    argv = [
        pg_bin("postgres"), "-D", str(pgdata), "-p", str(ports.pg),
        "-c", f"listen_addresses={LOOPBACK}", "-c", "unix_socket_directories=",
        "-c", "max_connections=200",
    ]
    if fast:
        # Tests trade crash durability of the *database* for speed; the log (NATS) is
        # still the source of truth and every test rebuilds from it.
        argv += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
    return Part(
        name="postgres",
        argv=argv,
        probe=lambda: probe_postgres(settings.pg_dsn),
        stop_signal=signal.SIGINT,  # "fast" shutdown: SIGTERM would wait for clients
        user=user,
        prepare=lambda: prepare_pgdata(pgdata, user, password),
        ready=None if found is None else lambda: provision_postgres(settings.pg_dsn, found),
    )


def s3_part(settings: Settings, ports: StackPorts, data: Path, found: Secrets | None) -> Part:
    """SeaweedFS `weed mini` serving S3, with one configured identity (the stack's random
    keys), every port on loopback, and writes and reads behind JWTs where weed has them."""
    root = data / "s3"
    config = root / "s3.json"

    def prepare() -> None:
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        for sub in ("data", "log"):
            (root / sub).mkdir(mode=0o700, exist_ok=True)
        write_private(config, _s3_identities(settings).encode())

    return Part(
        name="s3",
        argv=[find_binary("weed"), f"-logdir={root / 'log'}", "mini", *_weed_flags(ports, root)],
        probe=lambda: probe_s3(settings),
        prepare=prepare,
        # weed reads TMPDIR for its grpc sockets; keep them inside our folder.
        env={"TMPDIR": str(root), **_weed_security(found)},
    )


def _weed_security(found: Secrets | None) -> dict[str, str]:
    """security.toml's settings, as weed reads them from its environment (`weed scaffold
    -config=security`): the volume server takes writes and reads only with a JWT the
    master signed, the filer only with one the S3 gateway signed; no volume UI, no
    directory listings from the filer. weed's gRPC ports have no such keys (only mutual
    TLS): docs/security.md says what other local users can still reach."""
    if found is None:
        return {}
    return {**found.weed, "WEED_ACCESS_UI": "false",
            "WEED_FILER_EXPOSE_DIRECTORY_METADATA_ENABLED": "false"}


def _weed_flags(ports: StackPorts, root: Path) -> list[str]:
    off = ports.grpc_offset
    return [
        f"-dir={root / 'data'}", f"-ip={LOOPBACK}", f"-ip.bind={LOOPBACK}",
        "-master.telemetry=false", "-admin.ui=false", "-webdav=false",
        "-s3.port.iceberg=0", "-s3.port.lance=0",
        f"-s3.port={ports.s3}", f"-s3.port.grpc={ports.s3 + off}",
        f"-master.port={ports.weed_master}", f"-master.port.grpc={ports.weed_master + off}",
        f"-volume.port={ports.weed_volume}", f"-volume.port.grpc={ports.weed_volume + off}",
        f"-filer.port={ports.weed_filer}", f"-filer.port.grpc={ports.weed_filer + off}",
        f"-admin.port={ports.weed_admin}", f"-admin.port.grpc={ports.weed_admin + off}",
        f"-s3.config={root / 's3.json'}",
    ]


def _s3_identities(settings: Settings) -> str:
    identity = {
        "name": "ledgershare",
        "credentials": [{"accessKey": settings.s3_access_key, "secretKey": settings.s3_secret_key}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }
    return json.dumps({"identities": [identity]})


async def probe_nats(url: str) -> None:
    """Connect and ask JetStream for the account: fails unless JetStream is up."""
    import nats

    async def quiet(_err: Exception) -> None:
        pass

    # nats-py sleeps reconnect_time_wait after a refused first connect: knock first.
    host, _, port = url.rpartition("//")[2].rpartition("@")[2].rpartition(":")
    _reader, writer = await asyncio.open_connection(host, int(port))
    writer.close()
    nc = await nats.connect(url, connect_timeout=1, max_reconnect_attempts=0,
                            reconnect_time_wait=0.05, allow_reconnect=False, error_cb=quiet)
    try:
        await nc.jetstream().account_info()
    finally:
        await nc.close()


PROBE_KEY = ".ledgershare-probe"


def wechat_part(settings: Settings, ports: StackPorts, home: Path) -> Part:
    """The WeChat web-OAuth stand-in (deploy/wechat.py), so WeChat login works locally.
    Its openid key is derived from the home folder: openids stay the same across restarts
    of one stack, and differ between stacks."""
    key = hashlib.sha256(f"wechat-standin:{home.resolve()}".encode()).hexdigest()
    return Part(
        name="wechat",
        argv=[sys.executable, "-m", "deploy.wechat", "--host", LOOPBACK,
              "--port", str(ports.wechat), "--appid", settings.wechat_appid,
              "--secret", settings.wechat_secret, "--key", key],
        probe=lambda: probe_http(f"{settings.wechat_api_base}/healthz"),
    )


async def probe_http(url: str) -> None:
    """Any HTTP answer at all (a 404 included) means the server is up."""
    import httpx

    async with httpx.AsyncClient(timeout=1.0) as client:
        await client.get(url)


async def probe_s3(settings: Settings) -> None:
    """Create the bucket if missing, then write and read back a small object: SeaweedFS
    answers bucket calls before its volume server takes data, so heading the bucket alone
    let a just-restarted store fail the first real read."""
    from runtime.s3 import ensure_bucket, s3_client

    await ensure_bucket(settings)
    async with s3_client(settings, timeout_s=1.0) as s3:
        await s3.put_object(Bucket=settings.s3_bucket, Key=PROBE_KEY, Body=b"ok")
        reply = await s3.get_object(Bucket=settings.s3_bucket, Key=PROBE_KEY)
        async with reply["Body"] as body:
            if await body.read() != b"ok":
                raise OSError("S3 returned other bytes than were written")


def ports_from_env(env: dict[str, str] | None = None) -> StackPorts:
    """Stack ports, each overridable as ``LEDGERSHARE_PORT_<NAME>`` (e.g. _NATS, _PG, _S3)."""
    env = dict(os.environ) if env is None else env
    found: dict[str, int] = {}
    for f in msgspec.structs.fields(StackPorts):
        raw = env.get(f"LEDGERSHARE_PORT_{f.name.upper()}")
        if raw is not None:
            found[f.name] = int(raw)
    return StackPorts(**found)
