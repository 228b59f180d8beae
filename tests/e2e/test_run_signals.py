"""`ledgershare run` stopped by SIGTERM, by its terminal closing (SIGHUP) and by SIGKILL:
nothing it started outlives it (every process under it, checked by pid), and a stack that
`ledgershare up` started is left running.

Each test runs the whole of `ledgershare run` (15 s or so); the terminal's, which also runs
`up` and `down`, is left to `make test-reliability`."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import signal
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import msgspec
import pytest

from tests.support import free_port, free_stack_ports

STARTED = "gateway   Member Center"  # printed once every child is up


def environment(home: Path) -> dict[str, str]:
    """The environment of a `ledgershare` command with its home and free ports."""
    ports = msgspec.structs.asdict(free_stack_ports())
    return {**os.environ, "LEDGERSHARE_HOME": str(home), "COLUMNS": "200",
            "LEDGERSHARE_GATEWAY_PORT": str(free_port()),
            **{f"LEDGERSHARE_PORT_{k.upper()}": str(v) for k, v in ports.items()}}


def ledgershare(env: dict[str, str], *args: str) -> None:
    subprocess.run([sys.executable, "-m", "cli.main", *args], env=env, check=True,
                   capture_output=True, timeout=300)


class Runner:
    """`python -m cli.main run`, its output collected as it comes."""

    def __init__(self, env: dict[str, str], *, terminal: bool) -> None:
        argv = [sys.executable, "-m", "cli.main", "run"]
        self.output = bytearray()
        self._reading = True
        self.terminal = -1
        if terminal:
            # Its own session with a terminal of its own, as in a shell window: closing
            # the terminal's other end is what closing the window does.
            self.terminal, tty = pty.openpty()
            self.proc = subprocess.Popen(argv, env=env, stdin=tty, stdout=tty, stderr=tty,
                                         start_new_session=True, preexec_fn=_take_terminal)
            os.close(tty)
            source = self.terminal
        else:
            self.proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            assert self.proc.stdout is not None
            source = self.proc.stdout.fileno()
        self._reader = threading.Thread(target=self._read, args=(source,), daemon=True)
        self._reader.start()

    def _read(self, fd: int) -> None:
        # Never blocked in a read: closing the terminal must not wait for one to return.
        while self._reading:
            if not select.select([fd], [], [], 0.1)[0]:
                continue
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # a terminal with nobody on the other side any more
                return
            if not chunk:
                return
            self.output += chunk

    def hang_up(self) -> None:
        """Close the terminal, as closing its window does: SIGHUP, then writes that fail."""
        self._reading = False
        self._reader.join()
        os.close(self.terminal)
        self.terminal = -1

    def text(self) -> str:
        return self.output.decode(errors="replace")

    def wait_for(self, marker: str, within: float = 300) -> None:
        deadline = time.monotonic() + within
        while marker not in self.text():
            assert self.proc.poll() is None, f"the runner ended early:\n{self.text()}"
            assert time.monotonic() < deadline, f"no {marker!r} in:\n{self.text()}"
            time.sleep(0.1)

    def close(self) -> None:
        """Kill it if it still runs (what it started goes with it), stop reading."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._reading = False
        self._reader.join()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        if self.terminal >= 0:
            os.close(self.terminal)


def _take_terminal() -> None:
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)  # as in a shell window, were we under nohup


Start = Callable[..., Runner]


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Start]:
    """Start runners; any left at the end are killed, and whatever they started with them."""
    runners: list[Runner] = []

    def started(env: dict[str, str] | None = None, *, terminal: bool = False) -> Runner:
        runner = Runner(env or environment(tmp_path / f"home{len(runners)}"),
                        terminal=terminal)
        runners.append(runner)
        return runner

    yield started
    for runner in runners:
        runner.close()


def descendants(pid: int) -> set[int]:
    """Every process under ``pid``, now."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def survivors(pids: set[int], within: float) -> set[int]:
    """The pids still alive after ``within`` seconds (as soon as none is, the empty set)."""
    deadline = time.monotonic() + within
    while (left := {p for p in pids if alive(p)}) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def everything_under(runner: Runner, at_least: int = 9) -> set[int]:
    """The runner's processes once all are up: the stack's four (and what they start),
    four services, the gateway."""
    runner.wait_for(STARTED)
    pids = descendants(runner.proc.pid)
    assert len(pids) >= at_least, runner.text()
    return pids


def test_sigterm_stops_everything_it_started(start: Start) -> None:
    runner = start()
    pids = everything_under(runner)
    runner.proc.terminate()
    assert runner.proc.wait(timeout=30) in (0, 128 + signal.SIGTERM), runner.text()
    assert survivors(pids, within=1) == set()
    assert "nats      stopped" in runner.text()


@pytest.mark.reliability  # the slowest: `up`, then `run`, then `down`
def test_closing_its_terminal_stops_what_it_started_and_no_more(
        start: Start, tmp_path: Path) -> None:
    env = environment(tmp_path / "home")
    ledgershare(env, "up")
    try:
        state = msgspec.json.decode((tmp_path / "home" / "stack.json").read_bytes())
        runner = start(env, terminal=True)
        pids = everything_under(runner, at_least=5)  # four services and the gateway
        runner.hang_up()
        runner.proc.wait(timeout=30)
        assert survivors(pids, within=1) == set()
        assert all(alive(pid) for pid in state["pids"].values())  # the stack of `up`
    finally:
        ledgershare(env, "down")


def test_a_sigkilled_runners_children_end_too(start: Start) -> None:
    runner = start()
    pids = everything_under(runner)
    runner.proc.kill()
    runner.proc.wait()
    assert survivors(pids, within=10) == set()
