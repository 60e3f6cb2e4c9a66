"""Every injectable fault against the firmware on the micropython binary, a few lines each.

Each test states what today's firmware does about the fault (the reaction, and how fast in
100 ms lock-step cycles). The injector's API and models: docs/fault_injection.md.
"""

from __future__ import annotations

import pytest

from hil.bench.inject import BITRATE, FRAME_BITS, SIM_IDS, VCU_ID, FaultInjector
from hil.bench.loop import Bench

CYCLE_MS = 100
V_QUALIFY = 300 // CYCLE_MS  # firmware defaults (firmware/config.py), in cycles
T_QUALIFY = 1000 // CYCLE_MS
I_QUALIFY = 500 // CYCLE_MS
STALE = 500 // CYCLE_MS

pytestmark = pytest.mark.unix_only


def closed(bench: Bench) -> None:
    bench.step_until(lambda s: s.closed, 30)
    assert bench.status.closed


def cycles_to_open(bench: Bench, limit: int, load_a: float = 0.0) -> int:
    n = len(bench.step_until(lambda s: not s.closed, limit, load_a))
    assert not bench.status.closed, f"still closed after {limit} cycles: {bench.status}"
    return n


def test_stuck_cell_over_threshold_opens_within_qualification(
    bench: Bench, inject: FaultInjector
) -> None:
    closed(bench)
    inject.stuck_cell(5, mv=4400)
    assert cycles_to_open(bench, 20) <= V_QUALIFY + 1
    assert "CellOverVoltage" in bench.status.faults


def test_cell_stuck_at_its_value_goes_unnoticed_today(bench: Bench, inject: FaultInjector) -> None:
    """A reading frozen at a healthy value is invisible to a limit check (no stuck-sensor rule)."""
    closed(bench)
    inject.stuck_cell(5)
    for _ in range(50):
        bench.step(5.0)
    assert bench.status.closed and not bench.status.faults


def test_noisy_cell_trips_a_voltage_fault(bench: Bench, inject: FaultInjector) -> None:
    """400 mV of noise on a 4.1 V cell: over 4.25 V for four samples in a row comes soon."""
    closed(bench)
    inject.noisy_cell(2, sigma_mv=400)
    cycles_to_open(bench, 300)
    assert bench.status.faults & {"CellOverVoltage", "CellUnderVoltage", "MeasurementImplausible"}


@pytest.mark.parametrize("line", [0, 7, 16])
def test_open_sense_wire_opens_in_the_same_cycle(
    bench: Bench, inject: FaultInjector, line: int
) -> None:
    """The cell below the open line reads about 0 V, outside the physical range."""
    closed(bench)
    inject.open_wire(line)
    assert cycles_to_open(bench, 5) == 1
    assert "MeasurementImplausible" in bench.status.faults


@pytest.mark.parametrize("mode", ["open", "short"])
def test_failed_thermistor_opens_in_the_same_cycle(
    bench: Bench, inject: FaultInjector, mode: str
) -> None:
    closed(bench)
    inject.thermistor(3, mode)
    assert cycles_to_open(bench, 5) == 1
    assert "MeasurementImplausible" in bench.status.faults


def test_internal_short_heats_the_cell_until_over_temperature(
    bench: Bench, inject: FaultInjector
) -> None:
    closed(bench)
    inject.internal_short(4, ohm=0.05)
    cycles_to_open(bench, 300)
    assert "OverTempDischarge" in bench.status.faults
    assert int(bench.pack.temperature_c.argmax()) == 4


def test_thermal_runaway_opens_on_temperature(bench: Bench, inject: FaultInjector) -> None:
    closed(bench)
    start = inject.thermal_runaway(9).start_s
    cycles_to_open(bench, 300, load_a=5.0)
    assert "OverTempDischarge" in bench.status.faults
    assert bench.t_s - start < 10.0


def test_runaway_behind_a_stuck_thermistor_is_caught_through_its_neighbours(
    bench: Bench, inject: FaultInjector
) -> None:
    """The sensor of the burning cell is stuck at 25 degC; its neighbours warm through the
    chain and trip over-temperature, later than the cell's own sensor would have."""
    closed(bench)
    inject.thermistor(9, "stuck")
    inject.thermal_runaway(9)
    cycles_to_open(bench, 600, load_a=5.0)
    assert "OverTempDischarge" in bench.status.faults
    assert bench.pack.temperature_c[[8, 10]].max() > 60.0


def test_current_sensor_offset_reads_as_over_current(bench: Bench, inject: FaultInjector) -> None:
    closed(bench)
    inject.current_offset(30.0)  # over the 25 A (5 C) discharge threshold with no load
    assert cycles_to_open(bench, 20) <= I_QUALIFY + 1
    assert "OverCurrentDischarge" in bench.status.faults


def test_dropped_measurement_frames_open_within_stale_time(
    bench: Bench, inject: FaultInjector
) -> None:
    closed(bench)
    inject.can_drop(SIM_IDS)
    assert cycles_to_open(bench, 20) <= STALE + 1
    assert "MeasurementStale" in bench.status.faults
    inject.clear()
    closed(bench)  # a stale fault clears by itself once data flows


def test_dropped_vehicle_requests_open_within_stale_time(
    bench: Bench, inject: FaultInjector
) -> None:
    closed(bench)
    inject.can_drop(VCU_ID)
    assert cycles_to_open(bench, 20) <= STALE + 1
    assert "VcuRequestStale" in bench.status.faults


@pytest.mark.parametrize(("ms", "opens"), [(300, False), (600, True)])
def test_delayed_measurements_open_only_beyond_the_stale_time(
    bench: Bench, inject: FaultInjector, ms: int, opens: bool
) -> None:
    closed(bench)
    inject.can_delay(SIM_IDS, ms=ms)
    bench.step_until(lambda s: not s.closed, 30)
    assert bench.status.closed is not opens
    assert ("MeasurementStale" in bench.status.faults) is opens


def test_corrupted_measurement_frames_open(bench: Bench, inject: FaultInjector) -> None:
    """Three flipped bits per measurement frame soon hit a high bit: out of range or over a
    threshold. The open is fail-safe whichever rule catches it."""
    closed(bench)
    inject.can_corrupt(SIM_IDS, p=1.0, bits=3)
    cycles_to_open(bench, 30)
    assert bench.status.fault_tier == 3


def test_babbling_node_starves_the_bench_and_the_bms_opens(
    bench: Bench, inject: FaultInjector
) -> None:
    closed(bench)
    inject.can_flood(rate=BITRATE / FRAME_BITS)  # the whole bus at top priority
    assert cycles_to_open(bench, 20) <= STALE + 1
    assert {"MeasurementStale", "VcuRequestStale"} <= bench.status.faults
    assert bench.status.cycle_time_us > 0  # the firmware kept running through the flood


def test_welded_contactor_stays_closed_but_the_pack_is_disconnected(
    bench: Bench, inject: FaultInjector
) -> None:
    """Today's firmware has no weld detection; opening the negative side still stops current."""
    closed(bench)
    inject.weld("pos")
    inject.stuck_cell(0, mv=4400)
    cycles_to_open(bench, 20, load_a=5.0)
    bench.step(5.0)
    assert bench.pack.contactors == (False, False, True)
    assert bench.pack.current_a == 0.0


def test_loop_overrun_is_a_warning_and_keeps_the_contactors(
    bench: Bench, inject: FaultInjector
) -> None:
    closed(bench)
    inject.loop_overrun(ms=150, cycles=2)
    bench.step(0.0)
    assert bench.status.cycle_time_us >= 150_000
    bench.step(0.0)  # the overrun is known once the cycle ended: reported with the next one
    assert "LoopOverrun" in bench.status.faults and bench.status.fault_tier == 1
    for _ in range(3):
        bench.step(0.0)
    assert bench.status.closed
    assert bench.status.cycle_time_us < 100_000
