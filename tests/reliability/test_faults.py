"""Faults under a mixed load (each service SIGKILLed, NATS and PostgreSQL restarted, S3
down for a while), and a check that nothing acknowledged was lost or doubled.

`make test-reliability` runs this (it is not part of `make test`). It prints, per fault:
commands sent, acknowledged, lost (must be 0), doubled (must be 0), time to recover.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import asyncpg
import msgspec
import pytest
from nats.aio.client import Client as NATS

from contracts.errors import LedgerError
from contracts.identity import (
    DrivePasswordAlreadySet,
    IdentityClient,
    Login,
    Register,
    SetDrivePassword,
    VerifyDrivePassword,
)
from contracts.sharing import Grant, NotShared, Revoke, SharingClient
from contracts.social import AddFriend, AlreadyFriends, SocialClient
from contracts.storage import (
    MB,
    AnyStorageEvent,
    BeginUpload,
    CompleteUpload,
    DownloadRequest,
    StorageClient,
    drive_subjects,
)
from contracts.subjects import all_events
from contracts.transfer import download, upload
from deploy.stack import Stack
from runtime.eventstore import EventStore
from runtime.replay import compare, rebuild
from runtime.settings import Settings
from services.registry import names
from services.storage import domain as storage_domain
from tests.services import read_models, service_settings

pytestmark = pytest.mark.reliability
T = TypeVar("T")
SERVICES = names()
# What a client retries. Never `invalid_token` for a valid session, nor `internal`: a
# restart or a kill is `unavailable` (tests/reliability/test_two_instances.py).
RETRYABLE = {"unavailable", "storage_unavailable", "conflict", "command_in_progress"}
CLIENTS = 6


def env_of(settings: Settings) -> dict[str, str]:
    fields = msgspec.structs.asdict(settings)
    return {**os.environ, **{f"LEDGERSHARE_{k.upper()}": str(v) for k, v in fields.items()}}


class Services:
    """The four services as real processes, killed and restarted for real."""

    def __init__(self, settings: Settings, logs: Path) -> None:
        self.env = env_of(settings.with_overrides(log_json=True))
        self.logs = logs
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str) -> None:
        log = (self.logs / f"{name}.log").open("ab")
        self.procs[name] = subprocess.Popen([sys.executable, "-m", f"services.{name}"],
                                            env=self.env, stdout=log, stderr=subprocess.STDOUT)
        log.close()

    def kill(self, name: str) -> None:
        proc = self.procs[name]
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    def stop_all(self) -> None:
        for proc in self.procs.values():
            proc.terminate()
        for proc in self.procs.values():
            proc.wait(timeout=30)


@dataclass
class Ledger:
    """What the clients sent and what was acknowledged to them."""

    sent: int = 0
    acked: Counter[str] = field(default_factory=Counter)
    members: list[str] = field(default_factory=list)
    versions: list[str] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def ack(self, kind: str) -> None:
        self.acked[kind] += 1
        self.changed.set()

    async def progress(self, target: int) -> None:
        """Return once that many commands in all were acknowledged."""
        while sum(self.acked.values()) < target:
            self.changed.clear()
            await self.changed.wait()


async def retrying(ledger: Ledger, kind: str, call: Callable[[], Awaitable[T]],
                   *, done_if: tuple[type[Exception], ...] = ()) -> T | None:
    """A client that retries the same command (same id) until it is answered."""
    ledger.sent += 1
    for _ in range(120):
        try:
            result = await call()
        except done_if:
            result = None  # an earlier attempt landed and this retry found its effect
        except LedgerError as err:
            if err.code not in RETRYABLE:
                raise
            await asyncio.sleep(0.25)
            continue
        ledger.ack(kind)
        return result
    raise AssertionError(f"{kind} never got through")


class Member:
    def __init__(self, nc: NATS, i: int, folder: Path) -> None:
        self.identity = IdentityClient(nc, timeout=3)
        self.social = SocialClient(nc, timeout=3)
        self.storage = StorageClient(nc, timeout=5)
        self.sharing = SharingClient(nc, timeout=3)
        self.account = f"load{i}"
        self.folder = folder
        self.session = ""
        self.member_id = ""
        self.drive = ""

    async def join(self, ledger: Ledger) -> None:
        reg = Register(command_id=uuid.uuid4().hex, account=self.account, password="secret-1",
                       nickname=self.account)
        reply = await retrying(ledger, "register", lambda: self.identity.register(reg))
        assert reply is not None
        self.member_id = reply.member_id
        ledger.members.append(reply.member_id)
        login = Login(account=self.account, password="secret-1")
        session = await retrying(ledger, "login", lambda: self.identity.login(login))
        assert session is not None
        self.session = session.session
        setup = SetDrivePassword(command_id=uuid.uuid4().hex, session=self.session,
                                 password="drive-pw", question="q", answer="a")
        await retrying(ledger, "drive password", lambda: self.identity.drive_password_set(setup),
                       done_if=(DrivePasswordAlreadySet,))
        unlock = VerifyDrivePassword(command_id=uuid.uuid4().hex, session=self.session,
                                     password="drive-pw")
        drive = await retrying(ledger, "unlock",
                               lambda: self.identity.drive_password_verify(unlock))
        assert drive is not None
        self.drive = drive.drive_token

    async def befriend(self, ledger: Ledger, other: Member) -> None:
        req = AddFriend(command_id=uuid.uuid4().hex, session=self.session,
                        account=other.account, nickname=other.account)
        await retrying(ledger, "friend", lambda: self.social.add_friend(req),
                       done_if=(AlreadyFriends,))

    async def work(self, ledger: Ledger, friend: Member, stop: asyncio.Event) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            await self.upload(ledger, n)
            await self.share_round(ledger, friend)

    async def share_round(self, ledger: Ledger, friend: Member) -> None:
        """Grant; the friend downloads and uploads back into our drive; revoke."""
        grant = Grant(command_id=uuid.uuid4().hex, session=self.session, set_id="s",
                      friends=[friend.account])
        granted = await retrying(ledger, "grant", lambda: self.sharing.grant(grant))
        assert granted is not None
        await friend.download(ledger, self, granted.seq)
        await friend.upload(ledger, 1, owner=self, seq=granted.seq)
        revoke = Revoke(command_id=uuid.uuid4().hex, session=self.session, set_id="s",
                        friend=friend.account)
        await retrying(ledger, "revoke", lambda: self.sharing.revoke(revoke),
                       done_if=(NotShared,))

    async def download(self, ledger: Ledger, owner: Member, seq: int) -> None:
        """One fiscal year of the owner's set, as a sharee (drive token, consistency token)."""
        ask = DownloadRequest(command_id=uuid.uuid4().hex, session=self.session,
                              owner_id=owner.member_id, set_id="s", year=2018,
                              drive_token=self.drive, seq=seq)
        ticket = await retrying(ledger, "download", lambda: self.storage.download(ask))
        assert ticket is not None
        into = self.folder / f"{uuid.uuid4().hex}.got"
        size = await retrying(ledger, "get", lambda: download(ticket.url, into))
        assert size == 2048

    async def upload(self, ledger: Ledger, n: int, *, owner: Member | None = None,
                     seq: int = 0) -> None:
        # A file of this upload's own: a member uploads for itself and, as a sharee, for a
        # friend at the same time.
        path = self.folder / f"{uuid.uuid4().hex}.bak"
        path.write_bytes(os.urandom(2048))
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        owner_id = owner.member_id if owner else None
        begin = BeginUpload(command_id=uuid.uuid4().hex, session=self.session, set_id="s",
                            set_name="S", year=2018, period=1 + n % 12, size=2048, sha256=digest,
                            owner_id=owner_id, drive_token=self.drive, seq=seq)
        plan = await retrying(ledger, "begin", lambda: self.storage.begin_upload(begin))
        assert plan is not None
        await retrying(ledger, "put", lambda: upload(plan, path))
        complete = CompleteUpload(command_id=uuid.uuid4().hex, session=self.session,
                                  upload_id=plan.upload_id, owner_id=owner_id,
                                  drive_token=self.drive, seq=seq)
        done = await retrying(ledger, "upload", lambda: self.storage.complete_upload(complete))
        assert done is not None
        ledger.versions.append(done.version.version_id)


@pytest.fixture
async def system(settings: Settings, tmp_path: Path) -> AsyncIterator[Services]:
    configured = service_settings(settings)
    services = Services(configured, tmp_path)
    for name in SERVICES:
        services.start(name)
    await asyncio.sleep(3)
    try:
        yield services
    finally:
        services.stop_all()


async def test_faults_mid_load_lose_and_double_nothing(
        system: Services, nc: NATS, events: EventStore, pool: asyncpg.Pool,
        stack: Stack, nats_stack: Stack, tmp_path: Path) -> None:
    await under_load(nc, events, pool, tmp_path, faults(system, stack, nats_stack))


async def under_load(nc: NATS, events: EventStore, pool: asyncpg.Pool, folder: Path,
                     injected: list[Fault]) -> None:
    """Drive the mixed load through each fault; print the figures; check the log."""
    ledger = Ledger()
    members = [Member(nc, i, folder) for i in range(CLIENTS)]
    await asyncio.gather(*(m.join(ledger) for m in members))
    await asyncio.gather(*(m.befriend(ledger, members[(i + 1) % CLIENTS])
                           for i, m in enumerate(members)))
    stop = asyncio.Event()
    load = asyncio.gather(*(m.work(ledger, members[(i + 1) % CLIENTS], stop)
                            for i, m in enumerate(members)))
    report = []
    for label, inject in injected:
        before = ledger.sent, sum(ledger.acked.values())
        await asyncio.sleep(1.5)
        started = time.monotonic()
        await inject()
        await ledger.progress(sum(ledger.acked.values()) + CLIENTS)
        recover = time.monotonic() - started
        report.append((label, ledger.sent - before[0], sum(ledger.acked.values()) - before[1],
                       recover))
    stop.set()
    await load
    lost, doubled = await audit(events, ledger)
    await quota_held(events, [m.member_id for m in members])
    await equal_to_fresh_replay(nc, pool)
    print("\nfault                      sent  acknowledged  lost  doubled  recovered after")
    for label, sent, acked, recover in report:
        print(f"{label:<24} {sent:>6} {acked:>13} {lost:>5} {doubled:>8}  {recover:.1f} s")
    assert (lost, doubled) == (0, 0)


Fault = tuple[str, Callable[[], Awaitable[None]]]


def faults(system: Services, stack: Stack, nats_stack: Stack) -> list[Fault]:
    """Each fault, injected for real: a kill, a server restart, an outage."""
    def kill(name: str) -> Callable[[], Awaitable[None]]:
        async def inject() -> None:
            system.kill(name)
            await asyncio.sleep(1.0)
            system.start(name)
        return inject

    def restart(st: Stack, part: str, pause: float) -> Callable[[], Awaitable[None]]:
        async def inject() -> None:
            await asyncio.to_thread(st.restart, part, pause=pause)
        return inject

    return [*((f"SIGKILL {name}", kill(name)) for name in SERVICES),
            ("restart nats-server", restart(nats_stack, "nats", 0.5)),
            ("restart PostgreSQL", restart(stack, "postgres", 0.5)),
            ("S3 down for 3 s", restart(stack, "s3", 3.0))]


async def audit(events: EventStore, ledger: Ledger) -> tuple[int, int]:
    """Acknowledged effects missing from the log, and effects the log holds twice."""
    logged = await events.load(all_events())
    by_type = Counter((e.type, e.subject.split(".")[3]) for e in logged)
    registered = {e.subject.split(".")[3] for e in logged if e.type == "MemberRegistered"}
    uploaded = Counter(msgspec.json.decode(e.data)["version_id"] for e in logged
                       if e.type == "BackupUploaded")
    lost = (len(set(ledger.members) - registered)
            + sum(1 for v in ledger.versions if uploaded[v] == 0))
    doubled = (sum(n - 1 for (t, _), n in by_type.items() if t == "MemberRegistered" and n > 1)
               + sum(n - 1 for n in uploaded.values() if n > 1)
               + sum(n - 1 for n in Counter(e.msg_id for e in logged).values() if n > 1))
    return lost, doubled


async def quota_held(events: EventStore, owners: list[str]) -> None:
    """No drive ever holds more than its quota (folded from the log)."""
    decoder = msgspec.json.Decoder(AnyStorageEvent)
    now = datetime.now(UTC)
    for owner in owners:
        history, _ = await events.history(drive_subjects(owner), decoder)
        drive = storage_domain.fold(history)
        assert drive.versions, f"{owner} has no version"
        assert drive.used(now) <= drive.quota_or(400 * MB)


async def equal_to_fresh_replay(nc: NATS, pool: asyncpg.Pool) -> None:
    for model in read_models():
        schema, projection, tables = model.schema, model.projection(), model.tables
        for _ in range(60):  # the live projections catch up with the end of the load
            await rebuild(nc, pool, projection, f"{schema}_fresh")
            if await compare(pool, schema, f"{schema}_fresh", tables) == []:
                break
            await asyncio.sleep(0.5)
        assert await compare(pool, schema, f"{schema}_fresh", tables) == []
