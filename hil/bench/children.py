"""The firmware processes the bench starts (a unix-port DUT, an emulator, a replay) end with it.

A bench that ends in order stops its DUTs itself (SIGTERM, then SIGKILL); one killed outright
(SIGKILL, an out-of-memory kill, a CI runner's timeout) would leave them running, serving a TCP
port and writing into a folder no one removes. On Linux `die_with_parent` is passed to
`subprocess.Popen(preexec_fn=...)`: the kernel sends the child SIGTERM when the process that
started it dies (prctl PR_SET_PDEATHSIG). Elsewhere it does nothing.

PR_SET_PDEATHSIG follows the thread that forked, not the process: start DUTs from a thread that
lives as long as they do (the bench's threads do; the pytest fixtures run in the main thread).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1


def _prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None
    fn: Callable[..., int] = libc.prctl
    return fn


_PRCTL = _prctl()  # loaded here: between fork and exec only async-signal-safe work is allowed


def die_with_parent() -> Callable[[], None] | None:
    """A `preexec_fn` that ends the child with SIGTERM when this process dies (None where the
    platform cannot): if it already died during the fork, the child exits at once."""
    prctl = _PRCTL
    if prctl is None:
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the prctl took effect
            os._exit(1)

    return preexec
