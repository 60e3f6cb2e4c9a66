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
from hil.bench.dut import WDT_EXIT_CODE, ProcessDut, UnixPortDut
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


@pytest.mark.sim_board
def test_a_cycle_stalled_in_real_time_is_reset_at_the_timeout() -> None:
    """A control cycle stalled 3 s in real time (SIM_Stall) with a 2 s watchdog: the board
    resets during the stall, at the timeout, as a hardware watchdog would, not after the cycle
    (whose late feed would otherwise restart the count) and not never."""
    wdt_ms = 2000
    with UnixPortDut({"cell_count": CELLS, "temp_count": CELLS}, realtime=True) as dut:
        bench = Bench(
            SlcanSocketTransport("127.0.0.1", dut.port),
            Pack(PackConfig(n_cells=CELLS)),
            SensorModel(),
            lockstep=False,
        )
        bench.attach_dut(dut)
        try:
            bench.step_until(lambda s: s.closed, 100)
            assert bench.status.closed
            buf = bytearray(8)
            codec.encode_sim_stall(buf, 1, 3 * wdt_ms // 2)
            bench.transport.send_many([(codec.SIM_STALL_ID, bytes(buf))])
            t0 = time.monotonic()
            while dut.alive() and time.monotonic() - t0 < 6:
                time.sleep(0.01)
            elapsed = time.monotonic() - t0
            assert dut.exit_code == WDT_EXIT_CODE, f"no watchdog reset within {elapsed:.1f} s"
            assert "watchdog expired" in dut.console()
            # The stall starts with the next cycle (<= 0.1 s) and lasts 3 s: the reset comes
            # within the timeout plus that cycle and a loaded host's scheduling delay.
            assert elapsed < (wdt_ms + 600) / 1000, elapsed
        finally:
            bench.close()
