"""How a `cellguard` command fails: one line on stderr, and an exit code that says whose fault.

- `UsageError` (exit 2): an option, file or key the user gave is wrong; found before anything runs.
- `Failure` (exit 1): the run itself failed (the firmware stopped, a device did not answer).
- `Interrupted` (exit 128 + signal number: 130 for Ctrl-C, 143 for SIGTERM): SIGINT or SIGTERM
  arrived; every child process was ended and every file closed first.

The message names the option, file or key at fault, and the line where there is one. A command
raises these; `hil.cli.main` prints them. `deferred_interrupts()` lets a loop finish the step it is
in (a CAN log stays complete up to the last step) and stop at its next check.

Usage:
    raise UsageError(f"--heap {value!r}: not a heap size")
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType


class CliError(Exception):
    """An error a command reports in one line; `code` is the exit status."""

    code = 1


class UsageError(CliError):
    """An option, file or key given on the command line is wrong (exit 2)."""

    code = 2


class Failure(CliError):
    """The command ran and failed (exit 1)."""

    code = 1


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived; `detail` says what was kept (e.g. how far the CAN log goes)."""

    def __init__(self, signum: int, detail: str = "") -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.detail = detail

    @property
    def code(self) -> int:
        """The shell's convention: 128 + the signal number."""
        return 128 + self.signum

    def __str__(self) -> str:
        name = signal.Signals(self.signum).name
        return f"interrupted ({name})" + (f": {self.detail}" if self.detail else "")


_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _raise(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(signum)


@contextmanager
def interrupts_raise() -> Iterator[None]:
    """While active, SIGINT and SIGTERM raise Interrupted (so `with` blocks end child processes
    and close files on the way out); the previous handlers come back afterwards."""
    old = {s: signal.signal(s, _raise) for s in _SIGNALS}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


class PendingSignal:
    """What `deferred_interrupts` caught: `signum` (None until a signal arrived)."""

    signum: int | None = None


@contextmanager
def deferred_interrupts() -> Iterator[PendingSignal]:
    """While active, the first SIGINT or SIGTERM only sets `pending.signum`: the loop checks it
    between steps and stops cleanly; a second one raises at once. On leaving the block a caught
    signal is raised as Interrupted."""
    pending = PendingSignal()

    def record(signum: int, frame: FrameType | None) -> None:
        if pending.signum is not None:
            raise Interrupted(signum)
        pending.signum = signum

    old = {s: signal.signal(s, record) for s in _SIGNALS}
    try:
        yield pending
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
