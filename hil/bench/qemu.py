"""The emulated Cortex-M as a device under test: the frozen image (`hil.toolchain.image`) on QEMU.

`QemuDut` starts `qemu-system-arm -machine mps2-an385|mps2-an500 -icount shift=0` on the image
in the DUT's work folder, with UART0 (MicroPython's console) on the process's stdin/stdout and
UART1 (the qemu board's SLCAN link, `boards/qemu.py`) on a TCP server at 127.0.0.1:`port`, so the
bench and python-can reach it as they reach the sim board. The host starts the firmware through
the raw REPL: `import main` with the qemu board's arguments; what the firmware prints goes to the
console log, apart from the CAN frames. Storage and the configuration are files in the work folder
(the board reaches them through semihosting), so a restarted emulator finds its records.

`-icount shift=0` makes the emulated clock count instructions: one microsecond of the board's
`ticks_us` is 1000 instructions, so cycle times on the image are instruction counts, and runs are
repeatable (a lock-step run does not depend on the host's speed).

`run_on_image(code)` runs a script on the image (no CAN), for the firmware's unit tests and the
estimator replay.

Usage:
    with QemuDut({"cell_count": 16}, variant="an500") as dut:
        bus = can.Bus(interface="slcan", channel=dut.channel, sleep_after_open=0)
"""

from __future__ import annotations

import os
import select
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from hil.bench.children import die_with_parent
from hil.bench.dut import DutError, ProcessDut, firmware_message
from hil.toolchain.image import DEFAULT_VARIANT, ImageError, build_image, variant

RAW_REPL = b"\x01"
END = b"\x04"
READY = b"cellguard qemu board:"
TARGET_PREFIX = "qemu"


def parse_target(target: str) -> str:
    """`qemu` -> the default image, `qemu:an500` -> an500; ImageError for an unknown one."""
    if target == TARGET_PREFIX:
        return DEFAULT_VARIANT
    if not target.startswith(TARGET_PREFIX + ":"):
        raise ImageError(f"{target!r} is not qemu or qemu:IMAGE")
    return variant(target[len(TARGET_PREFIX) + 1 :]).name


def qemu_command(elf: Path, name: str, *serial: str) -> list[str]:
    """qemu-system-arm on `elf` for image `name`, UART0 on stdio, UARTs 1.. on `serial`."""
    v = variant(name)
    cmd = ["qemu-system-arm", "-machine", v.machine, "-display", "none", "-monitor", "null"]
    cmd += ["-semihosting", "-icount", "shift=0", "-serial", "stdio"]
    for s in serial:
        cmd += ["-serial", s]
    return cmd + ["-kernel", str(elf)]


def _repl_script(code: str) -> bytes:
    return RAW_REPL + code.encode() + END


class QemuDut(ProcessDut):
    """The cellguard firmware frozen into the Cortex-M image, on QEMU with the qemu board.

    `preamble` is MicroPython code run before the firmware starts (a benchmark's instruments)."""

    # The emulator runs some 30 times slower than the unix port and hands the UART one byte at a
    # time: a 192-cell tick takes a few hundred ms on a loaded host, so allow far more.
    reply_timeout_s = 60.0

    def __init__(
        self,
        config: dict[str, Any] | None = None,
        *,
        variant: str = DEFAULT_VARIANT,
        heap: int | None = None,
        port: int | None = None,
        workdir: Path | None = None,
        wdt_ms: int = 2000,
        preamble: str = "",
    ) -> None:
        super().__init__(config, port=port, workdir=workdir, wdt_ms=wdt_ms)
        self.variant = variant
        self.heap = heap
        self.preamble = preamble
        self._stdin: IO[bytes] | None = None
        self._log_start = 0

    def command(self) -> list[str]:
        """The QEMU command line (builds the image if needed)."""
        elf = build_image(self.variant, self.heap)
        # nodelay: each SLCAN frame goes out at once (Nagle would hold it for the peer's ACK).
        link = f"tcp:127.0.0.1:{self.port},server=on,wait=off,nodelay=on"
        return qemu_command(elf, self.variant, link)

    def _popen(self, log: IO[bytes]) -> subprocess.Popen[bytes]:
        self._log_start = log.tell()  # a restart appends: look for this run's banner only
        # A session of its own, as the unix DUT: a Ctrl-C reaches the bench first.
        proc = subprocess.Popen(
            self.command(),
            stdin=subprocess.PIPE,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            start_new_session=True,
            preexec_fn=die_with_parent(),
        )
        assert proc.stdin is not None
        args = ["main.py", "qemu", "--config", "/config.json", "--storage", "/storage"]
        args += ["--wdt-ms", str(self.wdt_ms)]
        start = f"{self.preamble}\nimport sys\nsys.argv[:] = {args!r}\nimport main\n"
        proc.stdin.write(_repl_script(start))
        proc.stdin.flush()
        self._stdin = proc.stdin  # kept open: QEMU reads its console from it
        return proc

    def _wait_ready(self, deadline: float) -> bool:
        # QEMU listens on the port from its start; the board's banner says the firmware runs.
        while time.monotonic() < deadline:
            self.raise_if_stopped(wait_s=0)
            text = self.console()[self._log_start :]
            if READY.decode() in text:
                return True
            if "Traceback" in text:
                raise DutError(
                    "the firmware failed to start on the image: " + firmware_message(text), text
                )
            time.sleep(0.02)
        return False

    def stop(self) -> int | None:
        """Stop the emulator; returns its exit code."""
        code = super().stop()
        if self._stdin is not None:
            self._stdin.close()
            self._stdin = None
        return code


def run_on_image(
    code: str,
    *,
    name: str = DEFAULT_VARIANT,
    heap: int | None = None,
    cwd: Path,
    timeout_s: float = 600.0,
    stdin_lines: Iterator[bytes] | None = None,
    on_output: Callable[[bytes], None] | None = None,
) -> tuple[int, str]:
    """Run `code` on the image in a fresh emulator whose semihosting folder is `cwd`; returns
    (exit status, console output after the raw REPL's OK).

    The code runs in the raw REPL with the host folder mounted at "/"; it ends the emulator with
    `boards.semihost.exit(status)` (a SystemExit does so with its code; an uncaught exception
    exits 1 after its traceback). `stdin_lines` are sent to the console after the start (the
    script reads them with sys.stdin); `on_output` gets the console bytes as they come."""
    elf = build_image(name, heap)
    wrapped = (
        "import boards.semihost as _sh\n_sh.mount()\n"
        "def _run():\n"
        + "".join("    " + line + "\n" for line in code.splitlines())
        + "try:\n    _run()\n    _sh.exit(0)\n"
        "except SystemExit as e:\n    _sh.exit(e.args[0] if e.args else 0)\n"
        "except BaseException as e:\n    import sys\n    sys.print_exception(e)\n    _sh.exit(1)\n"
    )
    proc = subprocess.Popen(
        qemu_command(elf, name),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=cwd,
        preexec_fn=die_with_parent(),
    )
    assert proc.stdin is not None and proc.stdout is not None
    # The console takes a byte at a time while the script runs: feed it from a thread so that
    # reading its output never waits on writing its input.
    feeder = threading.Thread(
        target=_feed, args=(proc.stdin, _repl_script(wrapped), stdin_lines), daemon=True
    )
    feeder.start()
    out = bytearray()
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DutError(f"the script on the image did not end in {timeout_s:.0f} s")
            ready, _, _ = select.select([proc.stdout], [], [], min(remaining, 1.0))
            if ready:
                chunk = os.read(proc.stdout.fileno(), 65536)
                if not chunk:
                    break
                out += chunk
                if on_output is not None:
                    on_output(chunk)
        status = proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        feeder.join(timeout=5)
        proc.stdout.close()
    text = out.decode(errors="replace").replace("\r\n", "\n")
    _, _, after = text.partition("raw REPL; CTRL-B to exit\n>OK")
    return status, after


def _feed(sink: IO[bytes], script: bytes, lines: Iterator[bytes] | None) -> None:
    try:
        sink.write(script)
        sink.flush()
        for line in lines or ():
            sink.write(line)
        sink.close()
    except (BrokenPipeError, ValueError):  # the emulator ended first: its output says why
        pass
