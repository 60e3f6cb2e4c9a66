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
                       budget of the boards that run the whole firmware, scaled for the 64-bit
                       binary, hil.bench.dut.DEFAULT_HEAP), MICROPY_HEAP_SIZE of the image
                       (default: that budget unscaled)
  --can-log-dir DIR    write every test's CAN traffic to DIR/<test>.blf
  --cellguard-report DIR  the test-centre report: DIR/index.html (every test's verdict, the plot
                       of each bench's run, the fault memory read out after it, its seed, links
                       to the firmware console and the CAN log; board, firmware version, DBC
                       sha256) and DIR/junit.xml (unless --junitxml names another file)

Fixtures: `bench` (16-cell NMC pack, default firmware configuration) and `bench_factory`, which
opens more benches with the keyword arguments of `hil.bench.runner.open_bench` (closed at teardown);
`inject`, a `hil.bench.inject.FaultInjector` on `bench` (docs/fault_injection.md); `diag`, a UDS
tester (`hil.bench.diag.DiagClient`) on `bench`'s BMS with that board's key; `bench_options`,
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

import json
import re
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from hil.bench.diag import DiagClient
from hil.bench.dut import DEFAULT_HEAP, BoardConsole, ProcessDut, board_unix_heap
from hil.bench.inject import FaultInjector
from hil.bench.loop import Bench
from hil.bench.provision import read_key_file
from hil.bench.report import Recorder, RunInfo
from hil.bench.runner import make_dut, open_bench
from hil.bench.testcentre import PROPERTY, TestCentre, collect_bench, run_facts, slug
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
        "--vcu-key",
        default=None,
        metavar="FILE",
        help="with --can: the board's VCU_Request key record (its storage record vcu_key, "
        "docs/security.md) the bench's VCU signs with; without it the board takes no request",
    )
    group.addoption(
        "--heap",
        default=None,
        help=f"heap size: unix port (default {DEFAULT_HEAP}) or image (default: smallest budget)",
    )
    group.addoption("--can-log-dir", default=None, help="write each test's CAN log here (.blf)")
    group.addoption(
        "--cellguard-report",
        default=None,
        metavar="DIR",
        help="write the test-centre report: DIR/index.html (verdicts, plots, fault memory, "
        "console and CAN log of every test) and DIR/junit.xml",
    )
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


_REPORT_ROOT = pytest.StashKey[Path]()


def _configure_report(config: pytest.Config) -> None:
    """--cellguard-report: the folder, the JUnit XML path, and (on the controller) the page."""
    report = config.getoption("cellguard_report")
    if not report:
        return
    root = Path(report).resolve()
    root.mkdir(parents=True, exist_ok=True)
    config.stash[_REPORT_ROOT] = root
    if hasattr(config, "workerinput"):  # an xdist worker: the controller writes the files
        return
    if not getattr(config.option, "xmlpath", None):
        config.option.xmlpath = str(root / "junit.xml")  # read by pytest's junitxml plugin
    centre = TestCentre(root, run_facts(config, _option(config, "dut") or "unix"))
    config.pluginmanager.register(centre, "cellguard-testcentre")  # gathers the test reports


@pytest.hookimpl(tryfirst=True)  # before pytest's junitxml plugin reads --junitxml
def pytest_configure(config: pytest.Config) -> None:
    """Check the DUT choice before any test runs; open a real board's console."""
    config.addinivalue_line("markers", "unix_only: needs a lock-step DUT (unix or qemu)")
    config.addinivalue_line(
        "markers", "sim_board: needs the sim board itself (real time, several bus clients)"
    )
    config.addinivalue_line("markers", "mcu: runs on the Cortex-M image in CI (--dut qemu)")
    _configure_report(config)
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
    vcu_key = config.getoption("vcu_key")
    return {
        "can": can,
        "heap": heap,
        "bundle_board": bundle_board,
        "target": target,
        "vcu_key": Path(vcu_key) if vcu_key else None,
    }


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
    report_root = config.stash.get(_REPORT_ROOT, None)
    stack = ExitStack()
    board = config.stash.get(_CONSOLE, None)
    mark = board[1].mark() if board else 0
    collected: list[dict[str, Any]] = []
    opened = 0

    def factory(**kwargs: Any) -> Bench:
        nonlocal opened
        for key, value in bench_options.items():
            kwargs.setdefault(key, value)
        folder = None
        opened += 1
        if report_root is not None:
            name = slug(request.node.nodeid) + (f"-{opened}" if opened > 1 else "")
            folder = report_root / "tests" / name
            folder.mkdir(parents=True, exist_ok=True)
        if "log_path" not in kwargs:
            if log_dir:
                name = re.sub(r"[^\w.-]", "_", request.node.name)
                kwargs["log_path"] = Path(log_dir) / f"{name}.blf"
                Path(log_dir).mkdir(parents=True, exist_ok=True)
            elif folder is not None:
                kwargs["log_path"] = folder / "can.blf"
        reporting = _reporting(open_bench(**kwargs), request)
        if folder is not None:
            assert report_root is not None
            reporting.centre = _BenchReport(folder, report_root, kwargs, collected, board, mark)
        return stack.enter_context(reporting)

    try:
        with stack:
            yield factory
    finally:
        if collected:
            request.node.user_properties.append((PROPERTY, json.dumps(collected)))
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


@dataclass
class _BenchReport:
    """One bench's part of the test-centre report: records its steps, and before it closes
    writes its artifacts (`hil.bench.testcentre.collect_bench`) into `collected`."""

    folder: Path
    root: Path
    kwargs: dict[str, Any]
    collected: list[dict[str, Any]]
    board: tuple[str, BoardConsole] | None
    mark: int
    recorder: Recorder = field(default_factory=lambda: Recorder(cell_every=10))

    def attach(self, bench: Bench) -> None:
        """Record every step of `bench`."""
        bench.listeners.append(lambda step: self.recorder.add(step, bench.pack, "test"))

    def finish(self, bench: Bench, test_name: str) -> None:
        """Stop recording and write the artifacts (the fault memory is read over CAN here); a
        report that cannot be written says why on the page instead of failing the test."""
        bench.listeners.clear()
        try:
            self._collect(bench, test_name)
        except Exception as e:  # noqa: BLE001 - the test's verdict must not depend on the report
            self.collected.append({"report_error": f"{type(e).__name__}: {e}"})

    def _collect(self, bench: Bench, test_name: str) -> None:
        if bench.dut is not None:
            console = bench.dut.console()
        elif self.board is not None:
            console = self.board[1].since(self.mark)
        else:
            console = "(no console: the bench reached the BMS over --can only)"
        info = RunInfo(
            test_name,
            bench.pack.n_cells,
            str(self.kwargs.get("chemistry", "NMC")),
            int(self.kwargs.get("seed", 0)),
        )
        log = self.kwargs.get("log_path")
        self.collected.append(
            collect_bench(
                bench,
                self.recorder,
                self.folder,
                self.root,
                info,
                console,
                Path(log) if log else None,
            )
        )


@pytest.fixture
def diag(bench: Bench) -> Iterator[DiagClient]:
    """A UDS tester on `bench`'s BMS: a second python-can connection to the sim board's bus,
    with the unix-port DUT's key."""
    import can as pycan

    if bench.dut is None:
        pytest.skip("a --can adapter is the bench's alone: use `cellguard diag` beside the run")
    bus = pycan.Bus(interface="slcan", channel=bench.dut.channel, sleep_after_open=0)
    secret = read_key_file(bench.dut.key_file)
    client = DiagClient(bus, secret=secret, cell_count=bench.pack.n_cells).open()
    try:
        try:
            client.wait_ready(3.0)
        except TimeoutError:
            if "too little heap" in bench.dut.console():
                pytest.skip("this board's heap budget leaves no room for diagnostics")
            raise
        yield client
    finally:
        client.close()
        bus.shutdown()


class _reporting(AbstractContextManager[Bench]):
    """Enter a bench; on failure attach the firmware console to the test report; with the
    test-centre report on, record the bench and collect its artifacts before it closes."""

    def __init__(self, cm: AbstractContextManager[Bench], request: pytest.FixtureRequest):
        self.cm = cm
        self.request = request
        self.bench: Bench | None = None
        self.centre: _BenchReport | None = None

    def __enter__(self) -> Bench:
        self.bench = self.cm.__enter__()
        if self.centre is not None:
            self.centre.attach(self.bench)
        return self.bench

    def __exit__(self, *exc: Any) -> bool | None:
        if self.bench is not None and self.bench.dut is not None:
            console = self.bench.dut.console()
            self.request.node.add_report_section("teardown", "firmware console", console)
        if self.centre is not None and self.bench is not None:
            self.centre.finish(self.bench, self.request.node.name)
        return self.cm.__exit__(*exc)
