"""Closed-loop safety behaviour: the firmware on the micropython binary against the plant.

Each test states the rule it checks. Times are in control cycles of 100 ms (lock-step), so the
limits below are exact: a fault qualifies after its qualification time and the contactors open in
the same cycle; the bench sees the command one cycle later at most.
"""

from __future__ import annotations

import math

import pytest

from hil.bench.loop import Bench
from sim.sensors import Measurement

CYCLE_MS = 100
V_QUALIFY_MS = 300  # firmware default (firmware/config.py)
MEAS_STALE_MS = 500
VCU_STALE_MS = 500


def close_contactors(bench: Bench, max_steps: int = 30) -> int:
    """Step at rest until the BMS closes; returns the steps it took."""
    n = len(bench.step_until(lambda s: s.closed, max_steps))
    assert bench.status.closed, f"contactors not closed after {max_steps} cycles: {bench.status}"
    return n


def steps_until_open(bench: Bench, limit: int, load_a: float = 0.0, **step_kwargs: bool) -> int:
    """Step until the contactors open; returns the number of steps."""
    n = len(bench.step_until(lambda s: not s.closed, limit, load_a, **step_kwargs))
    assert not bench.status.closed, f"contactors still closed after {limit} cycles: {bench.status}"
    return n


@pytest.mark.mcu
def test_contactors_close_only_after_precharge(bench: Bench) -> None:
    """Main contactor closes only once the link voltage reached 95 % of the pack voltage."""
    states = []
    for _ in range(30):
        rec = bench.step(0.0)
        states.append(rec.status.state_name)
        if rec.status.contactor_pos:
            # The plant's link voltage when the BMS commanded pos: measured before this step.
            assert rec.measurement.link_mv >= 0.95 * rec.measurement.pack_mv
            break
    assert "PRECHARGE" in states
    assert states.index("PRECHARGE") < len(states) - 1
    assert bench.status.closed
    assert not bench.status.contactor_pre


@pytest.mark.mcu
def test_soc_follows_plant_under_load(bench: Bench) -> None:
    """Coulomb counting: BMS SOC tracks the plant's mean SOC within 0.5 %-points over 60 s."""
    close_contactors(bench)
    start = 100 * bench.pack.mean_soc
    for _ in range(600):
        bench.step(10.0)
    assert 100 * bench.pack.mean_soc < start - 3.0  # the load really moved the SOC
    assert math.isclose(bench.status.soc_pct, 100 * bench.pack.mean_soc, abs_tol=0.5)


@pytest.mark.mcu
def test_cell_overvoltage_opens_within_qualification_and_latches(bench: Bench) -> None:
    """An over-voltage opens the contactors within its qualification time plus one cycle and
    stays latched until a FaultReset request once the condition is gone."""
    close_contactors(bench)

    def overvoltage(m: Measurement) -> Measurement:
        m.cell_mv[3] = 4400
        return m

    bench.measurement_hook = overvoltage
    n = steps_until_open(bench, 20)
    assert n <= V_QUALIFY_MS // CYCLE_MS + 1
    assert "CellOverVoltage" in bench.status.faults
    assert bench.status.state_name == "FAULT"

    bench.measurement_hook = None
    for _ in range(10):
        bench.step(0.0)
    assert not bench.status.closed, "a latched fault must not clear by itself"
    assert "CellOverVoltage" in bench.status.faults

    bench.step(0.0, fault_reset=True)
    assert "CellOverVoltage" not in bench.status.faults
    close_contactors(bench)


@pytest.mark.mcu
def test_stale_measurements_open_the_contactors(bench: Bench) -> None:
    """No measurement for longer than meas_stale_ms is a fault that opens the contactors."""
    close_contactors(bench)
    n = steps_until_open(bench, 20, inject=False)
    assert n <= MEAS_STALE_MS // CYCLE_MS + 1
    assert "MeasurementStale" in bench.status.faults
    close_contactors(bench)  # fresh data again: the stale fault clears by itself


def test_missing_vehicle_request_keeps_contactors_open(bench: Bench) -> None:
    """A missing VCU request opens the contactors and never closes them."""
    close_contactors(bench)
    n = steps_until_open(bench, 20, vcu=False)
    assert n <= VCU_STALE_MS // CYCLE_MS + 1
    for _ in range(20):
        bench.step(0.0, vcu=False)
        assert not bench.status.closed
    assert "VcuRequestStale" in bench.status.faults


def test_implausible_cell_voltage_never_closes(bench: Bench) -> None:
    """A cell voltage outside its physical range keeps the contactors open from the start."""

    def broken_sense_wire(m: Measurement) -> Measurement:
        m.cell_mv[0] = 0
        return m

    bench.measurement_hook = broken_sense_wire
    for _ in range(30):
        bench.step(0.0)
        assert not bench.status.contactor_pos
    assert "MeasurementImplausible" in bench.status.faults


@pytest.mark.mcu
def test_balancing_bleeds_high_cells_not_the_lowest(bench_factory) -> None:  # type: ignore[no-untyped-def]
    """Voltage strategy at rest: cells 15 mV or more above the lowest are bled; the lowest never
    is. (Fake voltages: the SOC strategy would take them for true SOC differences.)"""
    bench = bench_factory(firmware_config={"balance_strategy": 1})

    def spread(m: Measurement) -> Measurement:
        base = int(m.cell_mv.min())
        m.cell_mv[:] = base
        m.cell_mv[2] = base + 40
        m.cell_mv[7] = base + 25
        m.cell_mv[0] = base - 5
        return m

    bench.measurement_hook = spread
    for _ in range(330):  # 30 s settling at rest (balance_settle_ms), the window, the decision
        bench.step(0.0)
    bleeding = set(map(int, bench.status.balancing.nonzero()[0]))
    assert bleeding == {2, 7}
    assert (bench.pack.bleed_current_a[[2, 7]] > 0).all()
    assert bench.pack.bleed_current_a[0] == 0


def test_overcurrent_opens(bench_factory) -> None:  # type: ignore[no-untyped-def]
    """A discharge current above the over-current threshold opens within its qualification
    time plus one cycle, counted from the moment the plant's current crosses it."""
    bench = bench_factory(firmware_config={"oc_discharge_ma": 20000, "max_discharge_ma": 15000})
    close_contactors(bench)
    bench.step(30.0)  # the plant's current crosses the threshold at the end of this step
    assert bench.pack.current_a == 30.0
    n = steps_until_open(bench, 20, load_a=30.0)
    assert n <= 500 // CYCLE_MS + 1
    assert "OverCurrentDischarge" in bench.status.faults
