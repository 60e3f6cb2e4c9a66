"""The watchdog: a firmware that stops running its cycles is reset, and says so after the reset.

The sim board's watchdog counts board time and is fed only after a completed control cycle. A
SIM_Tick that advances the clock by more than the watchdog timeout without a cycle in between is a
stalled firmware as far as the watchdog can tell: the board opens its outputs, records the reset
cause in storage and exits with the reset code; the next start reports ResetCause WATCHDOG and the
WatchdogReset warning, and still closes the contactors only through a normal precharge.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from firmware import can_codec as codec
from hil.bench.dut import WDT_EXIT_CODE, ProcessDut
from hil.bench.loop import Bench
from hil.bench.transport import SlcanSocketTransport
from sim.pack import Pack, PackConfig
from sim.sensors import SensorModel

CELLS = 8
WDT_MS = 300


def _bench(dut: ProcessDut) -> Bench:
    bench = Bench(
        SlcanSocketTransport("127.0.0.1", dut.port), Pack(PackConfig(n_cells=CELLS)), SensorModel()
    )
    bench.attach_dut(dut)
    return bench


@pytest.mark.mcu
def test_stalled_firmware_is_reset_by_the_watchdog_and_reports_it(
    tmp_path: Path, dut_factory: Callable[..., ProcessDut]
) -> None:
    config = {"cell_count": CELLS, "temp_count": CELLS}
    dut = dut_factory(config, workdir=tmp_path, wdt_ms=WDT_MS)
    dut.start()
    bench = _bench(dut)
    try:
        for _ in range(15):
            bench.step(0.0)
        assert bench.status.closed and bench.status.reset_cause == 0
        buf = bytearray(8)
        codec.encode_sim_tick(buf, 0xFFFF, 2 * WDT_MS)  # the clock jumps past the timeout
        bench.transport.send_many([(codec.SIM_TICK_ID, bytes(buf))])
        deadline = time.monotonic() + 5
        while dut.alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert dut.exit_code == WDT_EXIT_CODE
        assert "watchdog expired" in dut.console()
    finally:
        bench.close()
        dut.stop()

    again = dut_factory(config, workdir=tmp_path, wdt_ms=WDT_MS, port=dut.port)
    again.start()
    bench = _bench(again)
    try:
        states = []
        for _ in range(15):
            bench.step(0.0)
            states.append(bench.status.state_name)
        assert bench.status.reset_cause == 1  # WATCHDOG
        assert "WatchdogReset" in bench.status.faults
        assert "PRECHARGE" in states and bench.status.closed  # a warning: it may close again
    finally:
        bench.close()
        again.stop()
