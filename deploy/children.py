"""Child processes that end with the process that started them, however it ends.

`ledgershare run` starts its children in sessions of their own, so a Ctrl-C in its terminal
reaches the runner alone and it stops them in order. That also means nothing stops them
if the runner is killed outright: they live on and reconnect to whatever stack comes up
next on the same ports. Linux's parent-death signal closes that gap: the kernel sends the
child a signal when its parent ends, SIGKILL included. (One process group would not: a
SIGKILL to the runner reaches the runner only.)
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Callable

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent(signum: int) -> Callable[[], None] | None:
    """A ``preexec_fn`` for `subprocess.Popen`: the child gets ``signum`` when the process
    starting it ends; None where the kernel has no such thing (not Linux).

    The kernel sends the signal when the *thread* that started the child ends, so start
    such children from a thread that lives as long as the process (the main thread). The
    function runs in the child between fork and exec and calls nothing but ``prctl``,
    ``getppid`` and ``kill``, so it takes no lock another thread could hold."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def arm() -> None:
        if prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        if os.getppid() != parent:  # it ended before the signal was armed
            os.kill(os.getpid(), signum)

    return arm
