"""The whole firmware on the MicroPython unix port, read and cleared by a UDS tester (udsoncan over
can-isotp over python-can's slcan backend) beside the lock-step bench, as a workshop would:

- an over-voltage leaves a DTC with its ISO 14229 status, the freeze frame of the moment (the high
  cell's voltage and number) and its occurrences;
- clearing needs security access with the board's own key, is refused while the contactors are
  closed and never drops a fault that is still active;
- live data reads the measurements the BMS also publishes on CAN;
- the contactor test routine closes through the plant's precharge, holds and opens again.
"""

from __future__ import annotations

import pytest
from udsoncan.exceptions import NegativeResponseException

from hil.bench.diag import DiagClient
from hil.bench.loop import Bench
from sim.sensors import Measurement

pytestmark = pytest.mark.unix_only


def close(bench: Bench) -> None:
    bench.step_until(lambda s: s.closed, 40)
    assert bench.status.closed


def overvoltage(m: Measurement) -> Measurement:
    m.cell_mv[6] = 4400
    return m


def test_dtc_with_freeze_frame_status_and_clear(bench: Bench, diag: DiagClient) -> None:
    close(bench)
    assert not [d for d in diag.dtcs(mask=0x09)]  # nothing failed or confirmed
    bench.measurement_hook = overvoltage
    bench.step_until(lambda s: not s.closed, 10)
    bench.measurement_hook = None
    bench.step(0.0)
    ov = {d.name: d for d in diag.dtcs(mask=0x01)}["CellOverVoltage"]
    assert ov.code == "P1A00" and ov.active and ov.count == 1
    assert ov.status & 0x08 and ov.status & 0x80  # confirmed, warning indicator (open tier)
    assert ov.freeze["cell_max_mv"] == 4400 and ov.freeze["cell_max"] == 7
    assert 0 < ov.freeze["soc"] <= 10000
    # Latched: clearing keeps it; a fault reset that finds the condition gone ends it.
    diag.clear()
    assert "CellOverVoltage" in {d.name for d in diag.dtcs(mask=0x28)}
    bench.step(0.0, fault_reset=True, vcu_close=False)
    bench.step(0.0, vcu_close=False)
    diag.clear()
    assert "CellOverVoltage" not in {d.name for d in diag.dtcs(mask=0x28)}


def test_clear_is_refused_while_closed(bench: Bench, diag: DiagClient) -> None:
    close(bench)
    with pytest.raises(NegativeResponseException) as e:
        diag.clear()
    assert e.value.response.code == 0x22
    bench.step(0.0)
    assert bench.status.closed


def test_live_data_agrees_with_the_bms_frames(bench: Bench, diag: DiagClient) -> None:
    close(bench)
    bench.step(10.0)
    live = diag.live()
    assert live["state"] == 3  # CLOSED
    # The same measurement set BMS_Pack reported (0.1 V and 0.1 A on CAN).
    assert abs(live["pack_mv"] - 1000 * bench.status.pack_voltage_v) <= 50
    assert abs(live["current_ma"] - 1000 * bench.status.pack_current_a) <= 50
    assert live["vmax_mv"] >= live["vmin_mv"] > 3000
    assert len(diag.read("cell_mv[0]")) == 16


def test_contactor_test_closes_through_the_plants_precharge(bench: Bench, diag: DiagClient) -> None:
    for _ in range(5):
        bench.step(0.0, vcu_close=False)  # the vehicle present, asking for nothing
    diag.unlock("extended")
    started = diag.client.start_routine(0x0301, bytes([10])).service_data  # hold 1 s
    assert bytes(started.routine_status_record) == b"\x01"  # running
    seen = []
    for i in range(60):
        if i % 20 == 19:
            diag.client.tester_present()  # the session outlives S3 (5 s of board time)
        bench.step(0.0, vcu_close=False)
        s = bench.status
        seen.append((s.contactor_neg, s.contactor_pre, s.contactor_pos))
    closed = seen.index((True, False, True))
    assert (True, True, False) in seen[:closed]  # precharge first, on the plant's link voltage
    assert seen[-1] == (False, False, False)
    assert diag.routine_result("contactor_test") == b"\x02\x01"  # passed, STANDBY
