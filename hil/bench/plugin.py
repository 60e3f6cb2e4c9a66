"""pytest plugin: the cellguard bench as fixtures and command-line options.

Options (each also settable in the ini file):
  --dut unix           the firmware on the MicroPython unix port (default; what CI runs)
  --dut unix:BOARD     that board's flashed bundle on the unix port, under its heap budget
  --dut qemu[:IMAGE]   the firmware frozen into the Cortex-M image on QEMU (`hil.bench.qemu`;
                       IMAGE an385, the default, or an500), in lock-step like the unix port
  --dut board:NAME@PORT  a real board flashed with `cellguard flash --board NAME`, its serial
                       console on PORT (captured into each test's report); needs --can
  --can DESCRIPTION    a python-can bus to a real board, e.g. slcan:/dev/ttyACM0@500000; the bench
                       then runs in real time and does not start any firmware
  --heap SIZE          MicroPython heap: -X heapsize of the unix port (default: the smallest
                       board budget scaled for the 64-bit binary), MICROPY_HEAP_SIZE of the
                       image (default: the smallest board budget)
  --can-log-dir DIR    write every test's CAN traffic to DIR/<test>.blf

Fixtures: `bench` (16-cell NMC pack, default firmware configuration) and `bench_factory`, which
opens more benches with the keyword arguments of `hil.bench.runner.open_bench` (closed at teardown);
`inject`, a `hil.bench.inject.FaultInjector` on `bench` (docs/fault_injection.md); `bench_options`,
the `open_bench` keywords the options select (for tests that open and close benches themselves, such
as hypothesis state machines that need a fresh firmware per example); `dut_factory`, which makes
(unstarted) DUTs of the selected kind for tests that start, stop and restart the firmware
themselves (`hil.bench.runner.make_dut` keywords).

Markers: `unix_only` (needs a lock-step DUT: skipped with --can), `sim_board` (needs the sim board
itself: real time or several clients on its bus; skipped with --dut qemu), `mcu` (runs on the
Cortex-M image in CI: `make test` runs `-m mcu --dut qemu`).

Usage in a test:
    def test_stale_opens(bench):
        for _ in range(20):
            bench.step(0.0)
        assert bench.status.closed
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack
from pathlib import Path
from typing import Any

import pytest

from hil.bench.dut import DEFAULT_HEAP, BoardConsole, ProcessDut, board_unix_heap
from hil.bench.inject import FaultInjector
from hil.bench.loop import Bench
from hil.bench.runner import make_dut, open_bench
from hil.toolchain import image
from hil.toolchain.build import heap_bytes, profiled_boards

BenchFactory = Callable[..., Bench]


def pytest_addoption(parser: pytest.Parser) -> None:
    """Register the bench options."""
    group = parser.getgroup("cellguard", "cellguard HIL bench")
    group.addoption(
        "--dut",
        default=None,
        help="device under test: unix (default), unix:BOARD (that board's flashed bundle on the "
        "unix port under its heap budget), qemu[:IMAGE] (the Cortex-M image, IMAGE an385 or "
        "an500) or board:NAME@SERIALPORT",
    )
    group.addoption("--can", default=None, help="python-can bus INTERFACE:CHANNEL[@BITRATE]")
    group.addoption(
        "--heap",
        default=None,
        help=f"heap size: unix port (default {DEFAULT_HEAP}) or image (default: smallest budget)",
    )
    group.addoption("--can-log-dir", default=None, help="write each test's CAN log here (.blf)")
    parser.addini("cellguard_dut", "default --dut", default="unix")
    parser.addini("cellguard_heap", "default --heap", default=DEFAULT_HEAP)


def _option(config: pytest.Config, name: str) -> str | None:
    value = config.getoption(name)
    return value if value is not None else config.getini(f"cellguard_{name}") or None


_CONSOLE = pytest.StashKey[tuple[str, BoardConsole]]()


def parse_board_dut(dut: str) -> tuple[str, str]:
    """`board:NAME@PORT` -> (NAME, PORT); UsageError when malformed or NAME has no profile."""
    name, _, port = dut[len("board:") :].partition("@")
    if not name or not port:
        raise pytest.UsageError(f"--dut {dut!r}: expected board:NAME@SERIALPORT")
    if name not in profiled_boards():
        known = ", ".join(profiled_boards())
        raise pytest.UsageError(f"--dut {dut!r}: no board profile {name!r} (known: {known})")
    return name, port


def pytest_configure(config: pytest.Config) -> None:
    """Check the DUT choice before any test runs; open a real board's console."""
    config.addinivalue_line("markers", "unix_only: needs a lock-step DUT (unix or qemu)")
    config.addinivalue_line(
        "markers", "sim_board: needs the sim board itself (real time, several bus clients)"
    )
    config.addinivalue_line("markers", "mcu: runs on the Cortex-M image in CI (--dut qemu)")
    dut = _option(config, "dut")
    if dut in (None, "unix"):
        return
    if dut.startswith("qemu"):
        _configure_qemu(config, dut)
        return
    if dut.startswith("unix:"):
        if dut[5:] not in profiled_boards():
            known = ", ".join(profiled_boards())
            raise pytest.UsageError(f"--dut {dut!r}: no board profile {dut[5:]!r} (known: {known})")
        return
    if not dut.startswith("board:"):
        raise pytest.UsageError(f"--dut {dut!r}: use unix, qemu or board:NAME@SERIALPORT")
    name, port = parse_board_dut(dut)
    if not config.getoption("can"):
        raise pytest.UsageError(f"--dut {dut}: a real board needs --can INTERFACE:CHANNEL[@RATE]")
    console = BoardConsole(port)
    console.start()
    config.stash[_CONSOLE] = (f"{name}@{port}", console)


def _configure_qemu(config: pytest.Config, dut: str) -> None:
    """Check the image can be built (one clear line if not) and build it once, before any
    worker starts, so parallel workers find it cached."""
    from hil.bench.qemu import parse_target

    if config.getoption("can"):
        raise pytest.UsageError(f"--dut {dut}: the emulator is started by the bench; drop --can")
    try:
        name = parse_target(dut)
    except image.ImageError as e:
        raise pytest.UsageError(f"--dut {dut}: {e}") from None
    reason = image.unavailable()
    if reason:
        raise pytest.UsageError(f"--dut {dut}: {reason}")
    if not hasattr(config, "workerinput"):  # the xdist controller, or a run without xdist
        heap = config.getoption("heap")
        try:
            image.build_image(name, heap_bytes(heap) if heap else None)
        except image.ImageError as e:
            raise pytest.UsageError(f"--dut {dut}: {e}") from None


def pytest_unconfigure(config: pytest.Config) -> None:
    """Close a real board's console."""
    entry = config.stash.get(_CONSOLE, None)
    if entry is not None:
        entry[1].close()


def _target(config: pytest.Config) -> str:
    dut = _option(config, "dut") or "unix"
    return dut if dut.startswith("qemu") else "unix"


@pytest.fixture(autouse=True)
def _sim_board_only(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("sim_board") and _target(request.config) != "unix":
        pytest.skip("needs the sim board on the unix port (real time, several bus clients)")


@pytest.fixture
def bench_options(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The `open_bench` keywords (can, heap, bundle_board, target) that the command-line options
    select."""
    config = request.config
    can = config.getoption("can")
    if can and request.node.get_closest_marker("unix_only"):
        pytest.skip("needs the firmware in lock-step (unix port or image); --can runs in real time")
    dut = _option(config, "dut") or "unix"
    target = _target(config)
    bundle_board = dut[5:] if dut.startswith("unix:") else "sim"
    if target != "unix":
        heap = config.getoption("heap")  # None: the image's default, the smallest budget
    else:
        heap = config.getoption("heap") or (
            board_unix_heap(bundle_board) if bundle_board != "sim" else _option(config, "heap")
        )
    return {"can": can, "heap": heap, "bundle_board": bundle_board, "target": target}


@pytest.fixture
def dut_factory(bench_options: dict[str, Any]) -> Callable[..., ProcessDut]:
    """Make an unstarted DUT of the selected kind: `dut_factory(config, workdir=..., port=...,
    wdt_ms=...)`; the test starts and stops it."""
    if bench_options["can"]:
        pytest.skip("starts its own firmware; --can reaches a board that is already running")

    def factory(config: dict[str, Any], **kwargs: Any) -> ProcessDut:
        kwargs.setdefault("heap", bench_options["heap"])
        kwargs.setdefault("bundle_board", bench_options["bundle_board"])
        return make_dut(bench_options["target"], config, **kwargs)

    return factory


@pytest.fixture
def bench_factory(
    request: pytest.FixtureRequest, bench_options: dict[str, Any]
) -> Iterator[BenchFactory]:
    """Open benches with custom cells, chemistry, seed or configuration; all closed at teardown."""
    config = request.config
    log_dir = config.getoption("can_log_dir")
    stack = ExitStack()

    def factory(**kwargs: Any) -> Bench:
        for key, value in bench_options.items():
            kwargs.setdefault(key, value)
        if log_dir and "log_path" not in kwargs:
            name = re.sub(r"[^\w.-]", "_", request.node.name)
            kwargs["log_path"] = Path(log_dir) / f"{name}.blf"
            Path(log_dir).mkdir(parents=True, exist_ok=True)
        return stack.enter_context(_reporting(open_bench(**kwargs), request))

    board = config.stash.get(_CONSOLE, None)
    mark = board[1].mark() if board else 0
    with stack:
        yield factory
    if board is not None:
        name, console = board
        request.node.add_report_section("teardown", f"board console {name}", console.since(mark))


@pytest.fixture
def bench(bench_factory: BenchFactory) -> Bench:
    """A 16-cell NMC bench with the firmware's default configuration."""
    return bench_factory()


@pytest.fixture
def inject(bench: Bench) -> FaultInjector:
    """A fault injector on `bench`: `inject.open_wire(4)`, `inject.can_drop(p=0.5)`, ..."""
    return FaultInjector(bench)


class _reporting(AbstractContextManager[Bench]):
    """Enter a bench; on failure attach the firmware console to the test report."""

    def __init__(self, cm: AbstractContextManager[Bench], request: pytest.FixtureRequest):
        self.cm = cm
        self.request = request
        self.bench: Bench | None = None

    def __enter__(self) -> Bench:
        self.bench = self.cm.__enter__()
        return self.bench

    def __exit__(self, *exc: Any) -> bool | None:
        if self.bench is not None and self.bench.dut is not None:
            console = self.bench.dut.console()
            self.request.node.add_report_section("teardown", "firmware console", console)
        return self.cm.__exit__(*exc)
