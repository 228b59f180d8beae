"""Two instances of each service through each kind of restart (nats-server, PostgreSQL
with a fast shutdown, one instance of each service SIGKILLed): a member with a valid
session keeps getting right answers or `unavailable` (the client retries), never
`invalid_token`, never `internal`, never a stale answer; afterwards every read model
equals a fresh replay of the log.

`make test-reliability` runs this (it is not part of `make test`).
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
from pathlib import Path
from typing import TypeVar

import asyncpg
import pytest
from nats.aio.client import Client as NATS

from cli.operate import ask_all
from contracts.errors import LedgerError, Unavailable
from contracts.identity import (
    IdentityClient,
    Login,
    Me,
    Register,
    SetDrivePassword,
    VerifyDrivePassword,
)
from contracts.sharing import CloudSharesRequest, Grant, Revoke, SharingClient
from contracts.social import AddFriend, ListFriends, RemoveFriend, SocialClient
from contracts.storage import BeginUpload, CompleteUpload, DriveRequest, StorageClient
from contracts.transfer import upload
from deploy.stack import Stack
from runtime.eventstore import EventStore
from runtime.settings import Settings
from tests.reliability.test_faults import SERVICES, env_of, equal_to_fresh_replay
from tests.services import service_settings

pytestmark = pytest.mark.reliability
T = TypeVar("T")
INSTANCES = 2


class Instances:
    """Every service twice, as real processes."""

    def __init__(self, settings: Settings, logs: Path) -> None:
        self.env = env_of(settings.with_overrides(log_json=True))
        self.logs = logs
        self.procs: dict[tuple[str, int], subprocess.Popen[bytes]] = {}

    def start(self, name: str, n: int) -> None:
        with (self.logs / f"{name}-{n}.log").open("ab") as log:
            self.procs[name, n] = subprocess.Popen(
                [sys.executable, "-m", f"services.{name}"], env=self.env, stdout=log,
                stderr=subprocess.STDOUT)

    def kill(self, name: str, n: int) -> None:
        proc = self.procs[name, n]
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    def stop_all(self) -> None:
        for proc in self.procs.values():
            proc.terminate()
        for proc in self.procs.values():
            proc.wait(timeout=30)


async def all_answering(nc: NATS, within: float = 60) -> None:
    """Return once every instance of every service answers ``$SRV.PING``."""
    deadline = time.monotonic() + within
    while True:
        counts = Counter(p["name"] for p in await ask_all(nc, "$SRV.PING"))
        if all(counts[name] >= INSTANCES for name in SERVICES):
            return
        assert time.monotonic() < deadline, f"instances answering: {dict(counts)}"
        await asyncio.sleep(0.2)


@pytest.fixture
async def doubled(settings: Settings, nc: NATS, events: EventStore,
                  tmp_path: Path) -> AsyncIterator[Instances]:
    instances = Instances(service_settings(settings), tmp_path)
    for name in SERVICES:
        for n in range(INSTANCES):
            instances.start(name, n)
    try:
        await all_answering(nc)
        yield instances
    finally:
        instances.stop_all()


class Tally:
    """Answers by operation: right ones, and `unavailable` ones (retried)."""

    def __init__(self) -> None:
        self.right: Counter[str] = Counter()
        self.unavailable: Counter[str] = Counter()
        self.rounds = 0

    async def answer(self, operation: str, call: Callable[[], Awaitable[T]]) -> T:
        """The answer, retrying the same request while it is `unavailable`; any other
        error fails the test (the caller checks that the answer is right)."""
        deadline = time.monotonic() + 60
        while True:
            try:
                reply = await call()
            except Unavailable:
                self.unavailable[operation] += 1
                assert time.monotonic() < deadline, f"{operation} unavailable for a minute"
                await asyncio.sleep(0.2)
                continue
            except LedgerError as err:
                raise AssertionError(f"{operation} answered {err.code}: {err.message}") from err
            self.right[operation] += 1
            return reply


class Member:
    def __init__(self, nc: NATS, account: str) -> None:
        self.nc = nc
        self.identity = IdentityClient(nc, timeout=3)
        self.social = SocialClient(nc, timeout=3)
        self.storage = StorageClient(nc, timeout=5)
        self.sharing = SharingClient(nc, timeout=3)
        self.account = account
        self.member_id = self.session = self.drive = ""

    async def register(self, tally: Tally) -> None:
        reg = Register(command_id=uuid.uuid4().hex, account=self.account,
                       password="secret-1", nickname=self.account)
        self.member_id = (await tally.answer("register", lambda: self.identity.register(reg))
                          ).member_id
        login = Login(account=self.account, password="secret-1")
        self.session = (await tally.answer("login", lambda: self.identity.login(login))).session

    async def join(self, tally: Tally) -> None:
        await self.register(tally)
        setup = SetDrivePassword(command_id=uuid.uuid4().hex, session=self.session,
                                 password="drive-pw", question="q", answer="a")
        await tally.answer("drive password", lambda: self.identity.drive_password_set(setup))
        unlock = VerifyDrivePassword(command_id=uuid.uuid4().hex, session=self.session,
                                     password="drive-pw")
        self.drive = (await tally.answer(
            "unlock", lambda: self.identity.drive_password_verify(unlock))).drive_token

    async def back_up(self, tally: Tally, folder: Path) -> None:
        """One backup of set "s", so that it can be shared."""
        path = folder / f"{self.account}.bak"
        path.write_bytes(os.urandom(2048))
        begin = BeginUpload(command_id=uuid.uuid4().hex, session=self.session, set_id="s",
                            set_name="S", year=2018, period=1, size=2048,
                            sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
                            drive_token=self.drive)
        plan = await tally.answer("begin_upload", lambda: self.storage.begin_upload(begin))
        await upload(plan, path)
        done = CompleteUpload(command_id=uuid.uuid4().hex, session=self.session,
                              upload_id=plan.upload_id, drive_token=self.drive)
        await tally.answer("complete_upload", lambda: self.storage.complete_upload(done))


async def round_of(tally: Tally, alice: Member, bob: Member, carol: Member) -> None:
    """One round of a member's commands and queries across the four services, each answer
    checked against what the member did before; and a member who has just registered asks
    social, whose directory must hold them (or say `unavailable`)."""
    newcomer = Member(alice.nc, f"new{tally.rounds}")
    await newcomer.register(tally)
    await friends_are(tally, newcomer, set(), 0)
    me = await tally.answer("me", lambda: alice.identity.me(Me(session=alice.session)))
    assert me.member_id == alice.member_id
    add = AddFriend(command_id=uuid.uuid4().hex, session=alice.session,
                    account=carol.account, nickname=carol.account)
    added = await tally.answer("add_friend", lambda: alice.social.add_friend(add))
    await friends_are(tally, alice, {bob.account, carol.account}, added.seq)
    remove = RemoveFriend(command_id=uuid.uuid4().hex, session=alice.session,
                          account=carol.account)
    removed = await tally.answer("remove_friend", lambda: alice.social.remove_friend(remove))
    await friends_are(tally, alice, {bob.account}, removed.seq)
    drive = await tally.answer("drive", lambda: alice.storage.drive(
        DriveRequest(session=alice.session)))
    assert [(s.set_id, s.year) for s in drive.set_years] == [("s", 2018)]
    grant = Grant(command_id=uuid.uuid4().hex, session=alice.session, set_id="s",
                  friends=[bob.account])
    granted = await tally.answer("grant", lambda: alice.sharing.grant(grant))
    assert await sharers_of(tally, bob, granted.seq) == [alice.account]
    revoke = Revoke(command_id=uuid.uuid4().hex, session=alice.session, set_id="s",
                    friend=bob.account)
    revoked = await tally.answer("revoke", lambda: alice.sharing.revoke(revoke))
    assert await sharers_of(tally, bob, revoked.seq) == []
    tally.rounds += 1


async def friends_are(tally: Tally, member: Member, accounts: set[str], seq: int) -> None:
    listed = await tally.answer("list_friends", lambda: member.social.list_friends(
        ListFriends(session=member.session, seq=seq)))
    assert {f.account for f in listed.friends} == accounts


async def sharers_of(tally: Tally, member: Member, seq: int) -> list[str]:
    shares = await tally.answer("cloud_shares", lambda: member.sharing.cloud_shares(
        CloudSharesRequest(session=member.session, drive_token=member.drive, seq=seq)))
    return [s.account for s in shares.sharers]


class Load:
    """Rounds one after the other, which can be paused between two rounds (a restart of
    an idle system: its leaders learn of it only from their own connections)."""

    def __init__(self, tally: Tally, members: list[Member]) -> None:
        self.tally, self.members = tally, members
        self.go, self.paused = asyncio.Event(), asyncio.Event()
        self.go.set()
        self.stopping = False
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while not self.stopping:
            if not self.go.is_set():
                self.paused.set()
                await self.go.wait()
                self.paused.clear()
            await round_of(self.tally, *self.members)

    async def _until(self, done: Callable[[], bool]) -> None:
        while not done():
            if self.task.done():
                self.task.result()  # its failure, raised here
            await asyncio.sleep(0.1)

    async def two_rounds_more(self) -> None:
        """Return once two whole rounds ended after this call."""
        target = self.tally.rounds + 2
        await self._until(lambda: self.tally.rounds >= target)

    async def pause(self) -> None:
        self.go.clear()
        await self._until(self.paused.is_set)

    def resume(self) -> None:
        self.go.set()

    async def stop(self) -> None:
        self.stopping = True
        self.resume()
        await self.task


Fault = tuple[str, bool, Callable[[], Awaitable[None]]]  # what, whether idle, how


def restarts(instances: Instances, stack: Stack, nats_stack: Stack) -> list[Fault]:
    def server(st: Stack, part: str) -> Callable[[], Awaitable[None]]:
        async def inject() -> None:
            # PostgreSQL's stop signal is SIGINT: a fast shutdown, as `pg_ctl restart -m fast`.
            await asyncio.to_thread(st.restart, part, pause=0.5)
        return inject

    async def kill_first_instances() -> None:
        for name in SERVICES:
            instances.kill(name, 0)
        await asyncio.sleep(1.0)
        for name in SERVICES:
            instances.start(name, 0)

    return [("restart nats-server", False, server(nats_stack, "nats")),
            ("restart PostgreSQL (fast)", False, server(stack, "postgres")),
            ("restart PostgreSQL, idle", True, server(stack, "postgres")),
            ("SIGKILL one instance of each", False, kill_first_instances)]


async def test_two_instances_answer_right_or_unavailable_through_restarts(
        doubled: Instances, nc: NATS, pool: asyncpg.Pool, stack: Stack, nats_stack: Stack,
        tmp_path: Path) -> None:
    tally = Tally()
    members = [Member(nc, a) for a in ("alice", "bob", "carol")]
    alice, bob = members[:2]
    for member in members:
        await member.join(tally)
    add = AddFriend(command_id=uuid.uuid4().hex, session=alice.session, account=bob.account,
                    nickname=bob.account)
    await tally.answer("add_friend", lambda: alice.social.add_friend(add))
    await alice.back_up(tally, tmp_path)
    load = Load(tally, members)
    report = []
    for label, idle, inject in restarts(doubled, stack, nats_stack):
        await load.two_rounds_more()
        if idle:
            await load.pause()
        started = time.monotonic()
        await inject()
        if idle:
            await asyncio.sleep(2.0)  # the other instances take the lead meanwhile
            load.resume()
        await load.two_rounds_more()
        report.append((label, time.monotonic() - started))
    await load.stop()
    await equal_to_fresh_replay(nc, pool)
    print(f"\n{tally.rounds} rounds; right answers {dict(tally.right)}; "
          f"unavailable (retried) {dict(tally.unavailable)}")
    for label, seconds in report:
        print(f"{label:<30} two more rounds {seconds:.1f} s after it began")
