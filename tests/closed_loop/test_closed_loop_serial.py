"""The hardware HIL path without hardware: `pytest --dut board:NAME@PORT --can slcan:PTY@500000`.

The stm32f4 bundle runs on the unix port in real time; `hil.bench.pty_bridge` gives it a serial
SLCAN port and a serial console on pseudo-terminals, so an inner pytest session reaches it through
python-can's slcan interface and pyserial exactly as it reaches a USB-CAN adapter and a board's
USB REPL port. The inner session runs two closed-loop checks and a lock-step-only test, which
must be skipped with its reason; the board's console must land in each test's report.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from hil.bench.dut import UnixPortDut
from hil.bench.pty_bridge import PtyBridge

pytest_plugins = ["pytester"]

INNER_TESTS = """
import os

import pytest


def board_prints(line):
    # Stands in for the firmware printing on its console (the log the bridge forwards).
    with open(os.environ["CELLGUARD_TEST_CONSOLE_LOG"], "a") as f:
        f.write(line + "\\n")


def test_contactors_close_after_precharge(bench):
    board_prints("hello from the precharge test")
    states = [r.status.state_name for r in bench.step_until(lambda s: s.closed, 30)]
    assert "PRECHARGE" in states and bench.status.closed


def test_stale_measurements_open_the_contactors(bench):
    board_prints("hello from the stale test")
    bench.step_until(lambda s: s.closed, 30)
    assert bench.status.closed
    bench.step_until(lambda s: not s.closed, 15, inject=False)
    assert not bench.status.closed
    # In real time BMS_Faults may arrive a cycle after the BMS_State that shows the open.
    bench.step_until(lambda s: "MeasurementStale" in s.faults, 3, inject=False)
    assert "MeasurementStale" in bench.status.faults and not bench.status.closed


@pytest.mark.unix_only
def test_needs_lock_step(bench):
    raise AssertionError("must be skipped on a real board")
"""


@pytest.fixture
def virtual_board() -> Iterator[tuple[UnixPortDut, PtyBridge]]:
    dut = UnixPortDut({"cell_count": 16}, realtime=True, bundle_board="stm32f4")
    with dut, PtyBridge(dut.port, dut.log_path) as bridge:
        yield dut, bridge


@pytest.mark.sim_board
def test_bench_reaches_a_board_over_serial_ports(
    pytester: pytest.Pytester,
    virtual_board: tuple[UnixPortDut, PtyBridge],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    dut, bridge = virtual_board
    monkeypatch.setenv("CELLGUARD_TEST_CONSOLE_LOG", str(dut.log_path))
    pytester.makepyfile(test_on_board=INNER_TESTS)
    reprec = pytester.inline_run(
        "-p",
        "no:cacheprovider",
        "--dut",
        f"board:stm32f4@{bridge.console_path}",
        "--can",
        f"slcan:{bridge.can_path}@500000",
        "--vcu-key",
        str(dut.vcu_key_file),  # the vehicle's key: the board's copy (docs/security.md)
    )
    reprec.assertoutcome(passed=2, skipped=1)
    (skipped,) = [r for r in reprec.getreports("pytest_runtest_logreport") if r.skipped]
    assert skipped.nodeid.endswith("test_needs_lock_step") and "real time" in str(skipped.longrepr)
    title = f"Captured board console stm32f4@{bridge.console_path} teardown"
    consoles = {
        r.nodeid.split("::")[-1]: dict(r.sections).get(title, "")
        for r in reprec.getreports("pytest_runtest_logreport")
        if r.when == "teardown"
    }
    # Each test's report carries what the board printed during that test, and only that.
    assert "hello from the precharge test" in consoles["test_contactors_close_after_precharge"]
    assert "hello from the stale test" not in consoles["test_contactors_close_after_precharge"]
    assert "hello from the stale test" in consoles["test_stale_measurements_open_the_contactors"]
    assert dut.alive()


def test_board_dut_needs_can(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_x="def test_x():\n    pass\n")
    result = pytester.runpytest_inprocess("--dut", "board:stm32f4@/dev/null")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*needs --can*"])
    result = pytester.runpytest_inprocess("--dut", "board:nosuch@/dev/null", "--can", "x:y")
    result.stderr.fnmatch_lines(["*no board profile 'nosuch'*"])
