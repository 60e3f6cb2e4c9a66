"""Reference-trace generation: resampling, sensor errors, vehicle scaling; one short PyBaMM run
when the optional `[bench]` extra is installed (CI does not install it)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from benchmarks import reference_pybamm as ref
from hil.cellmodel.traces import read_trace


def test_resample_keeps_the_new_step_at_a_boundary() -> None:
    """PyBaMM ends a step and starts the next at the same time: the whole-second sample there
    must carry the new step's current (the trace format holds a current until the next sample)."""
    t = np.array([0.0, 0.5, 1.0, 1.0, 2.0, 2.4])
    i = np.array([0.0, 0.0, 0.0, 5.0, 5.0, 5.0])
    grid, cur = ref.resample_1hz(t, i)
    assert grid.tolist() == [0.0, 1.0, 2.0]
    assert cur.tolist() == [0.0, 5.0, 5.0]


def test_sensor_errors_are_the_stated_ones() -> None:
    """Voltage: 2 mV noise on 1 mV steps; current: the constant offset and noise as fractions
    of 1C; temperature on 0.1 degC steps; a fixed seed reproduces them."""
    n = 200_000
    one_c = 5.0
    volts = np.full(n, 3.7)
    amps, v, temps = ref.add_sensor_errors(
        np.zeros(n), volts, np.full(n, 25.0), one_c, ref.BMS_SENSORS, seed=1
    )
    assert np.allclose(v * 1000, np.round(v * 1000))
    assert np.std(v - volts) == pytest.approx(np.sqrt(0.002**2 + 0.001**2 / 12), rel=0.02)
    assert np.mean(amps) == pytest.approx(0.003 * one_c, abs=1e-4)
    assert np.std(amps) == pytest.approx(0.002 * one_c, rel=0.02)
    assert np.allclose(temps * 10, np.round(temps * 10))
    again = ref.add_sensor_errors(
        np.zeros(n), volts, np.full(n, 25.0), one_c, ref.BMS_SENSORS, seed=1
    )
    assert np.array_equal(again[0], amps)


def test_drive_is_the_vehicle_scaled_to_one_cell() -> None:
    """The cell sees the 60 kWh reference car's power scaled by its energy share, so the
    cycle's mean C-rate is that of the car; the repeats take it from 95 % to about 10 %."""
    cell = ref.CELLS["NMC"]
    power = ref.drive_power_w(cell, "wltc")
    assert len(power) == 1800
    energy_share = cell.capacity_ah * cell.nominal_v / 60_000.0
    from sim.vehicle import Vehicle, load_drive_cycle

    car = Vehicle().battery_power_w(load_drive_cycle("wltc"))
    assert np.allclose(power, car * energy_share)
    n = ref.drive_repeats(cell, "wltc")
    used = n * np.sum(power) / cell.nominal_v / 3600.0 / cell.capacity_ah
    assert 0.75 < used <= 0.85


@pytest.mark.skipif(
    importlib.util.find_spec("pybamm") is None,
    reason="PyBaMM (the optional [bench] extra) is not installed",
)
def test_short_pybamm_drive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One NEDC repeat through PyBaMM: a 1 Hz trace in the trace format and a truth that falls
    by the charge the (true) current moved over the C/20 capacity."""
    monkeypatch.setattr(ref, "BUILD_DIR", tmp_path / "build")
    monkeypatch.setattr(ref, "experiment_steps", _short(ref.experiment_steps))
    cell = ref.CELLS["LFP"]
    trace_path, truth_path = ref.write_drive(cell, "nedc", 25.0, tmp_path, repeats=1)
    trace = read_trace(trace_path)
    truth = np.loadtxt(truth_path, delimiter=",", skiprows=1)
    assert np.array_equal(np.diff(trace.time_s), np.ones(len(trace.time_s) - 1))
    assert np.array_equal(truth[:, 0], trace.time_s)
    assert truth[0, 1] == pytest.approx(100.0)
    # it starts full at the maximum voltage; 10 mV is five sigma of the voltage noise
    noise = 0.01
    assert cell.voltage_min_v < trace.voltage_v.min()
    assert trace.voltage_v.max() < cell.voltage_max_v + noise
    moved_ah = np.sum(trace.current_a[:-1]) / 3600.0
    offset_ah = ref.BMS_SENSORS.current_offset_c * cell.capacity_ah * len(trace.time_s) / 3600.0
    capacity = ref.c20_capacity_ah(cell)
    assert 100.0 - truth[-1, 1] == pytest.approx(100.0 * (moved_ah - offset_ah) / capacity, abs=0.2)


def _short(steps_of):
    """C/20 with a 1-minute rest and only the C/20 discharge: fast enough for a test."""

    def steps(cell, kind, cycle="", repeats=0):
        if kind == "c20":
            return ["Rest for 1 minute", f"Discharge at C/20 until {cell.voltage_min_v} V"]
        return steps_of(cell, kind, cycle, repeats)

    return steps
