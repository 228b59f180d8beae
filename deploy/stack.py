"""The local stack: start, probe, report and stop NATS, PostgreSQL and S3 as child processes.

State lives in ``<home>/stack.json`` (0600): the endpoints (read by `runtime.settings`:
the operator's, by default), each user's credentials (`deploy.credentials`: a service's,
a gateway's, the operator's, ``admin``'s) and the pid of each part, so a second `up`
finds the first and `down` can stop it from another shell. The secrets themselves are
made once, at the first `up`, in ``<home>/keys/stack-secrets.json`` (0600).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import msgspec

from deploy.children import die_with_parent
from deploy.credentials import (
    LOOPBACK,
    Secrets,
    ensure_secrets,
    load_secrets,
    users_settings,
    write_private,
)
from deploy.nats.permissions import ADMIN, OPERATOR
from deploy.parts import (
    Part,
    StackPorts,
    nats_part,
    postgres_part,
    s3_part,
    wechat_part,
)
from deploy.pgcluster import run_as
from deploy.wechat import DEFAULT_APPID, DEFAULT_SECRET
from runtime.settings import Settings, key_file
from runtime.tokens import new_private_key, public_key_of

READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0


class StackError(Exception):
    """The stack cannot be brought up or down as asked; the message says why."""


class PartStatus(msgspec.Struct, frozen=True, kw_only=True):
    """One part's process and health."""

    name: str
    pid: int | None
    running: bool
    healthy: bool
    endpoint: str
    detail: str = ""


class Stack:
    """The three servers under one home folder.

    ``settings`` are the superuser's (``admin`` on NATS, ``postgres`` on PostgreSQL), as
    tests and repairs need; what each process of the system connects with is in
    `users`. ``streams``: the operator creates the streams once NATS answers, as in
    production (tests that make their own streams turn it off)."""

    def __init__(self, settings: Settings, ports: StackPorts, *, fast: bool = False,
                 only: tuple[str, ...] = ("nats", "postgres", "s3", "wechat"),
                 streams: bool = True) -> None:
        self.ports = ports
        self.home = Path(settings.home).resolve()
        self.data = self.home / "data"
        self.logs = self.home / "logs"
        self._base, self._fast, self._only, self._streams = settings, fast, only, streams
        self._configure(load_secrets(self.home))
        self._procs: dict[int, subprocess.Popen[bytes]] = {}

    def _configure(self, found: Secrets | None) -> None:
        """The superuser's settings and the parts, with the stack's secrets (none yet
        before its first `up`: then nothing connects)."""
        self.secrets = found
        self.settings = self._base if found is None else self._base.with_overrides(
            **self.users()[ADMIN], s3_access_key=found.s3_access_key,
            s3_secret_key=found.s3_secret_key)
        s, ports, data = self.settings, self.ports, self.data
        every = [
            nats_part(s, ports, data, found, self._streams),
            postgres_part(s, ports, data, self._fast, found),
            s3_part(s, ports, data, found),
            wechat_part(s, ports, self.home),
        ]
        self.parts = [p for p in every if p.name in self._only]

    @classmethod
    def local(cls, base: Settings, ports: StackPorts, *, fast: bool = False,
              only: tuple[str, ...] = ("nats", "postgres", "s3", "wechat"),
              streams: bool = True) -> Stack:
        """A stack whose settings point at the given ports on 127.0.0.1."""
        return cls(settings_for(base, ports), ports, fast=fast, only=only, streams=streams)

    @property
    def state_file(self) -> Path:
        return self.home / "stack.json"

    def users(self) -> dict[str, dict[str, str]]:
        """Each user's connection settings (none before the first `up`)."""
        if self.secrets is None:
            return {}
        return users_settings(self.secrets, self.ports.nats, self.ports.pg)

    def endpoints(self) -> dict[str, str]:
        """Where each part answers, with the operator's credentials: the fields settings
        read from stack.json by default, and what `status --json` prints."""
        s = self.settings
        return {
            "nats_url": s.nats_url, "nats_inbox_prefix": s.nats_inbox_prefix,
            "pg_dsn": s.pg_dsn, "s3_endpoint": s.s3_endpoint,
            "s3_bucket": s.s3_bucket, "s3_access_key": s.s3_access_key,
            "s3_secret_key": s.s3_secret_key, "wechat_appid": s.wechat_appid,
            "wechat_secret": s.wechat_secret, "wechat_api_base": s.wechat_api_base,
            "wechat_open_base": s.wechat_open_base, **self.users().get(OPERATOR, {}),
        }

    def pids(self) -> dict[str, int]:
        """Pids recorded by the last `up`, whether alive or not."""
        if not self.state_file.exists():
            return {}
        state: dict[str, Any] = msgspec.json.decode(self.state_file.read_bytes())
        return {str(k): int(v) for k, v in state.get("pids", {}).items()}

    def running(self) -> dict[str, int]:
        """Parts whose recorded process is still alive."""
        return {name: pid for name, pid in self.pids().items() if _alive(pid)}

    def up(self, *, detach: bool = True, progress: Any = print, tied: bool = False) -> None:
        """Start every part and wait until each answers; refuse twins and taken ports.

        ``tied``: each part also gets its stop signal from the kernel when this process
        ends, however it ends (`ledgershare run`; a stack of `ledgershare up` outlives it)."""
        alive = self.running()
        if alive:
            raise StackError(_already_running(alive))
        self._check_ports()
        # 0700 from creation (umask only removes bits); folders that exist keep their mode.
        for folder in (self.home, self.logs, self.data):
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        ensure_token_keys(self.home)
        self._configure(ensure_secrets(self.home))
        pids: dict[str, int] = {}
        try:
            for part in self.parts:
                pids[part.name] = self._start(part, detach, tied)
                self._write_state(pids)
                self._wait_ready(part, pids[part.name])
                if part.ready is not None:
                    asyncio.run(part.ready())
                progress(f"{part.name:<9} ready  {self._endpoint(part.name)}")
        except BaseException:
            self._stop_pids(pids)
            raise

    def down(self, *, progress: Any = print) -> list[str]:
        """Stop what `up` started; returns the names of the parts stopped."""
        alive = self.running()
        self._stop_pids(alive)
        for name in alive:
            progress(f"{name:<9} stopped")
        return list(alive)

    def restart(self, name: str, *, pause: float = 0.0) -> None:
        """Stop one part, wait ``pause`` seconds, start it again on the same data."""
        part = next(p for p in self.parts if p.name == name)
        pids = self.pids()
        _terminate(pids[name], part.stop_signal)
        proc = self._procs.pop(pids[name], None)
        if proc is not None:
            proc.wait()
        time.sleep(pause)
        pids[name] = self._start(part, detach=False)
        self._write_state(pids)
        self._wait_ready(part, pids[name])

    def status(self) -> list[PartStatus]:
        """Each part's pid, liveness and whether it really answers now."""
        pids = self.pids()
        return [self._part_status(part, pids.get(part.name)) for part in self.parts]

    def _part_status(self, part: Part, pid: int | None) -> PartStatus:
        running = pid is not None and _alive(pid)
        healthy, detail = False, "not running"
        if running:
            healthy, detail = _probe_once(part)
        return PartStatus(
            name=part.name, pid=pid, running=running, healthy=healthy,
            endpoint=self._endpoint(part.name), detail=detail,
        )

    def _endpoint(self, name: str) -> str:
        """Where a part answers, without credentials (this is printed)."""
        s = self.settings
        return public({"nats": s.nats_url, "postgres": s.pg_dsn, "s3": s.s3_endpoint,
                       "wechat": s.wechat_open_base}[name])

    def _check_ports(self) -> None:
        names = {p.name for p in self.parts}
        for owner, port in self.ports.named().items():
            if owner.split()[0] in names and not port_free(port):
                raise StackError(
                    f"port {port} on {LOOPBACK} is already in use (needed by {owner}); "
                    f"stop what holds it or choose another port (LEDGERSHARE_* settings)"
                )

    def _start(self, part: Part, detach: bool, tied: bool = False) -> int:
        part.prepare()
        log = open(self._log(part), "ab", opener=_private)
        proc = subprocess.Popen(
            part.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=detach, env={**os.environ, **part.env}, **run_as(part.user),
            preexec_fn=die_with_parent(part.stop_signal) if tied else None,
        )
        log.close()
        self._procs[proc.pid] = proc
        return proc.pid

    def _wait_ready(self, part: Part, pid: int) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        last = ""
        while time.monotonic() < deadline:
            if not _alive(pid):
                raise StackError(f"{part.name} exited during start-up; see {self._log(part)}")
            ok, last = _probe_once(part)
            if ok:
                return
            time.sleep(0.05)
        raise StackError(f"{part.name} did not answer within {READY_TIMEOUT_S:.0f}s ({last})")

    def _log(self, part: Part) -> Path:
        return self.logs / f"{part.name}.log"

    def _stop_pids(self, pids: dict[str, int]) -> None:
        by_name = {p.name: p for p in self.parts}
        for name, pid in reversed(list(pids.items())):
            _terminate(pid, by_name[name].stop_signal)
            proc = self._procs.pop(pid, None)
            if proc is not None:
                proc.wait()
        self.state_file.unlink(missing_ok=True)

    def _write_state(self, pids: dict[str, int]) -> None:
        state = {"endpoints": self.endpoints(), "users": self.users(), "pids": pids}
        write_private(self.state_file, msgspec.json.format(msgspec.json.encode(state)))


def _private(path: str, flags: int) -> int:
    """An `open` opener: a file created 0600."""
    return os.open(path, flags, 0o600)


def public(url: str) -> str:
    """A URL or DSN without its user and password, for printing."""
    scheme, sep, rest = url.partition("://")
    return f"{scheme}{sep}{rest.rpartition('@')[2]}" if sep else url


def ensure_token_keys(home: Path) -> None:
    """The local identity signing key pair, made once and kept under <home>/keys (0600)."""
    path = key_file(str(home))
    if path.exists():
        return
    private = new_private_key()
    doc = {"token_private_key": private, "token_public_key": public_key_of(private)}
    write_private(path, msgspec.json.encode(doc))


def settings_for(base: Settings, ports: StackPorts) -> Settings:
    """Settings whose endpoints are the stack's ports on loopback."""
    return base.with_overrides(
        nats_url=f"nats://{LOOPBACK}:{ports.nats}",
        pg_dsn=f"postgresql://postgres@{LOOPBACK}:{ports.pg}/ledgershare",
        s3_endpoint=f"http://{LOOPBACK}:{ports.s3}",
        # The local WeChat: the stand-in's own app id and secret (not secrets anywhere).
        wechat_appid=DEFAULT_APPID, wechat_secret=DEFAULT_SECRET,
        wechat_api_base=f"http://{LOOPBACK}:{ports.wechat}",
        wechat_open_base=f"http://{LOOPBACK}:{ports.wechat}",
    )


def port_free(port: int) -> bool:
    """True when nothing listens on (or holds) the port on loopback."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Like the servers themselves: connections of a stopped server in TIME_WAIT must
        # not count as "in use"; a listener must.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LOOPBACK, port))
            sock.listen(1)
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                return False
            raise
    return True


def _probe_once(part: Part) -> tuple[bool, str]:
    try:
        asyncio.run(asyncio.wait_for(part.probe(), timeout=3.0))
    except Exception as err:
        return False, f"{type(err).__name__}: {err}"[:200]
    return True, "ok"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] == "Z"


def _terminate(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while time.monotonic() < deadline:
        _reap(pid)
        if not _alive(pid):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    _reap(pid)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def _already_running(alive: dict[str, int]) -> str:
    parts = ", ".join(f"{name} (pid {pid})" for name, pid in alive.items())
    return f"the stack is already running: {parts}; use `ledgershare status` or `down`"
