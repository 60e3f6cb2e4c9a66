"""Reference traces from an independent physics model (PyBaMM), for the SOC accuracy benchmark.

PyBaMM is an optional extra (`pip install -e '.[bench]'`), never a runtime dependency. For each
chemistry (NMC: Chen2020, LG M50 NMC811 21700 5 Ah; LFP: Prada2013, A123 26650 2.3 Ah) and
test temperature, a DFN model (isothermal at the test temperature: the cell's own heating is
left out) runs:

- `c20`: 1 h rest, C/20 discharge to the minimum voltage, 1 h rest, C/20 charge to the maximum
  voltage and a constant-voltage hold down to C/50; split into a discharge and a charge trace;
- `hppc`: from full, 1 h rest, 5 % at 1C, 30 min rest, then ten SOC steps of {1C discharge
  pulse 10 s, 40 s rest, 0.75C charge pulse 10 s, 40 s rest, 10 % at 1C, 30 min rest};
- `drive`: from full, 10 min rest, 5 % at C/3, 10 min rest, then a drive cycle (WLTC class 3b or
  NEDC from `sim/data`) through `sim.vehicle.Vehicle` scaled to one cell's energy, as a power
  profile, repeated down to about 10 % SOC with a 30 min park after every fourth repeat.

Traces are resampled to 1 Hz (the sample at a step boundary carries the new step's current) and
written in the trace format, with sensor errors (`SensorErrors`, fixed seeds); a drive also gets a
truth file `time_s,soc_true`: 100 % minus PyBaMM's discharge capacity over the 25 degC C/20
discharge capacity. Solutions are cached under `build/reference/cache`, keyed by everything that
shapes them, so reruns are fast.
"""

from __future__ import annotations

import hashlib
import json
import os
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from hil import REPO_ROOT
from hil.cellmodel.traces import write_trace
from sim.vehicle import Vehicle, load_drive_cycle

os.environ.setdefault("PYBAMM_DISABLE_TELEMETRY", "true")

BUILD_DIR = REPO_ROOT / "build" / "reference"
MODEL = "DFN"
TEMPERATURES_C = (10.0, 25.0, 40.0)
DRIVE_CYCLES = ("wltc", "nedc")
PARK_EVERY = 4
"""A 30 min park after every this many drive-cycle repeats."""
FINAL_SOC = 0.10
"""Drives repeat their cycle until about this SOC is left."""
KELVIN = 273.15


@dataclass(frozen=True)
class ReferenceCell:
    """A PyBaMM parameter set and what the profile needs to know about it."""

    chemistry: str
    parameter_set: str
    description: str
    capacity_ah: float
    voltage_min_v: float
    voltage_max_v: float
    nominal_v: float
    """Used only to scale the vehicle to one cell's energy."""


CELLS = {
    "NMC": ReferenceCell(
        "NMC", "Chen2020", "LG M50 (NMC811/graphite-SiOx 21700, 5 Ah)", 5.0, 2.5, 4.2, 3.63
    ),
    "LFP": ReferenceCell(
        "LFP", "Prada2013", "A123 ANR26650m1 (LFP/graphite 26650, 2.3 Ah)", 2.3, 2.0, 3.6, 3.3
    ),
}


@dataclass(frozen=True)
class SensorErrors:
    """Measurement errors added to a PyBaMM trace; currents as fractions of the 1C current."""

    voltage_noise_v: float = 0.002
    voltage_step_v: float = 0.001
    current_noise_c: float = 0.002
    current_offset_c: float = 0.003
    temperature_noise_c: float = 0.5
    temperature_step_c: float = 0.1


BMS_SENSORS = SensorErrors()
"""A BMS's sensors (issue #3): 2 mV noise, 1 mV steps, current offset 0.3 % of 1C."""
LAB_SENSORS = SensorErrors(current_noise_c=0.0002, current_offset_c=0.0001)
"""A cell cycler: same voltage channel, current ten to thirty times better than a BMS shunt
(a 0.3 %-of-1C offset would be 6 % of a C/20 current and bias the capacity by as much)."""


def add_sensor_errors(
    current_a: NDArray[np.float64],
    voltage_v: NDArray[np.float64],
    temperature_c: NDArray[np.float64],
    one_c_a: float,
    errors: SensorErrors,
    seed: int,
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Noisy, offset and quantised copies of the true signals (fixed `seed`)."""
    rng = np.random.default_rng(seed)
    n = len(current_a)
    volts = voltage_v + rng.normal(0.0, errors.voltage_noise_v, n)
    volts = np.round(volts / errors.voltage_step_v) * errors.voltage_step_v
    amps = current_a + one_c_a * (
        errors.current_offset_c + rng.normal(0.0, errors.current_noise_c, n)
    )
    temps = temperature_c + rng.normal(0.0, errors.temperature_noise_c, n)
    temps = np.round(temps / errors.temperature_step_c) * errors.temperature_step_c
    return amps, volts, temps


def resample_1hz(time_s: NDArray[np.float64], *columns: NDArray[np.float64]) -> list[NDArray]:
    """Columns at whole seconds; at a step boundary (several samples at about the same time) the
    last one wins, so the boundary sample carries the new step's current and voltage."""
    grid = np.arange(np.ceil(time_s[0]), np.floor(time_s[-1] + 1e-6) + 1.0)
    idx = np.searchsorted(time_s, grid + 1e-6, side="right") - 1
    return [grid, *(np.asarray(c)[idx] for c in columns)]


def drive_power_w(cell: ReferenceCell, cycle: str) -> NDArray[np.float64]:
    """One cell's power (W, + = discharge) over one drive cycle, 1 Hz."""
    energy_wh = cell.capacity_ah * cell.nominal_v
    return Vehicle().pack_power_w(load_drive_cycle(cycle), energy_wh)


def drive_repeats(cell: ReferenceCell, cycle: str) -> int:
    """Repeats of `cycle` that take a cell from 95 % to about `FINAL_SOC`."""
    ah_per_cycle = float(np.sum(drive_power_w(cell, cycle))) / cell.nominal_v / 3600.0
    return max(1, int((0.95 - FINAL_SOC) * cell.capacity_ah / ah_per_cycle))


def experiment_steps(cell: ReferenceCell, kind: str, cycle: str = "", repeats: int = 0) -> list:
    """PyBaMM experiment steps (strings, or drive-cycle steps) of test `kind`."""
    import pybamm

    vmin, vmax = cell.voltage_min_v, cell.voltage_max_v
    if kind == "c20":
        return [
            "Rest for 1 hour",
            f"Discharge at C/20 until {vmin} V",
            "Rest for 1 hour",
            f"Charge at C/20 until {vmax} V",
            f"Hold at {vmax} V until C/50",
        ]
    if kind == "hppc":
        step = [
            f"Discharge at 1C for 10 seconds or until {vmin} V",
            "Rest for 40 seconds",
            f"Charge at 0.75C for 10 seconds or until {vmax} V",
            "Rest for 40 seconds",
            f"Discharge at 1C for 6 minutes or until {vmin} V",
            "Rest for 30 minutes",
        ]
        return ["Rest for 1 hour", "Discharge at 1C for 3 minutes", "Rest for 30 minutes"] + (
            step * 10
        )
    if kind == "drive":
        power = drive_power_w(cell, cycle)
        profile = np.column_stack([np.arange(len(power), dtype=float), power])
        drive = pybamm.step.power(profile, termination=f"< {vmin} V")
        steps: list[Any] = ["Rest for 10 minutes", "Discharge at C/3 for 9 minutes"]
        steps.append("Rest for 10 minutes")
        for k in range(repeats):
            steps.append(drive)
            if (k + 1) % PARK_EVERY == 0 and k + 1 < repeats:
                steps.append("Rest for 30 minutes")
        return steps
    raise ValueError(f"unknown test {kind!r}")


def _cache_key(cell: ReferenceCell, kind: str, temp_c: float, cycle: str, repeats: int) -> str:
    import pybamm

    spec = {
        "cell": asdict(cell),
        "kind": kind,
        "temp_c": temp_c,
        "cycle": cycle,
        "repeats": repeats,
        "model": MODEL,
        "pybamm": pybamm.__version__,
        "steps": [str(s) for s in experiment_steps(cell, kind, cycle, repeats)],
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def run_pybamm(
    cell: ReferenceCell, kind: str, temp_c: float, cycle: str = "", repeats: int = 0
) -> dict[str, NDArray[np.float64]]:
    """Solve one test (cached); returns 1 Hz arrays time_s, current_a, voltage_v, capacity_ah
    (PyBaMM's discharge capacity) and step (index of the experiment step of each sample)."""
    cache = BUILD_DIR / "cache" / f"{_cache_key(cell, kind, temp_c, cycle, repeats)}.npz"
    if cache.exists():
        with np.load(cache) as data:
            return {k: data[k] for k in data.files}
    import pybamm

    params = pybamm.ParameterValues(cell.parameter_set)
    params["Ambient temperature [K]"] = temp_c + KELVIN
    params["Initial temperature [K]"] = temp_c + KELVIN
    # Each step is its own cycle, so the solution tells which step every sample belongs to.
    steps = experiment_steps(cell, kind, cycle, repeats)
    experiment = pybamm.Experiment([(s,) for s in steps], period="1 second")
    model = getattr(pybamm.lithium_ion, MODEL)()
    sim = pybamm.Simulation(model, parameter_values=params, experiment=experiment)
    solution = sim.solve(initial_soc=1.0)
    parts = [
        (
            c["Time [s]"].entries,
            c["Current [A]"].entries,
            c["Voltage [V]"].entries,
            c["Discharge capacity [A.h]"].entries,
            np.full(len(c["Time [s]"].entries), float(k)),
        )
        for k, c in enumerate(solution.cycles)
        if c is not None
    ]
    columns = [np.concatenate([p[j] for p in parts]) for j in range(5)]
    order = np.argsort(columns[0], kind="stable")
    t, i, v, q, step = resample_1hz(*(c[order] for c in columns))
    out = {"time_s": t, "current_a": i, "voltage_v": v, "capacity_ah": q, "step": step}
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(cache, **out)
    return out


def _seed(name: str) -> int:
    return zlib.crc32(name.encode())


def _write(
    path: Path,
    run: dict[str, NDArray],
    sl: slice,
    cell: ReferenceCell,
    temp_c: float,
    errors: SensorErrors,
) -> None:
    t = run["time_s"][sl]
    amps, volts, temps = add_sensor_errors(
        run["current_a"][sl],
        run["voltage_v"][sl],
        np.full(len(t), temp_c),
        cell.capacity_ah,
        errors,
        _seed(path.name),
    )
    write_trace(path, t - t[0], amps, volts, temps)


def write_lab_tests(cell: ReferenceCell, temp_c: float, out_dir: Path) -> dict[str, Path]:
    """C/20 discharge, C/20 charge and HPPC traces at `temp_c` (lab sensor errors)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    c20 = run_pybamm(cell, "c20", temp_c)
    # Steps 0-1: rest + discharge; 2-4: rest, CC charge, CV hold.
    split = int(np.searchsorted(c20["step"], 2.0))
    name = f"{cell.chemistry.lower()}_{temp_c:g}c"
    paths = {
        "discharge": out_dir / f"{name}_c20_discharge.csv",
        "charge": out_dir / f"{name}_c20_charge.csv",
        "hppc": out_dir / f"{name}_hppc.csv",
    }
    _write(paths["discharge"], c20, slice(0, split), cell, temp_c, LAB_SENSORS)
    _write(paths["charge"], c20, slice(split, None), cell, temp_c, LAB_SENSORS)
    hppc = run_pybamm(cell, "hppc", temp_c)
    _write(paths["hppc"], hppc, slice(None), cell, temp_c, LAB_SENSORS)
    return paths


def c20_capacity_ah(cell: ReferenceCell, temp_c: float = 25.0) -> float:
    """PyBaMM's C/20 discharge capacity (Ah) down to the minimum voltage at `temp_c`."""
    c20 = run_pybamm(cell, "c20", temp_c)
    discharging = c20["step"] <= 1.0
    return float(c20["capacity_ah"][discharging].max() - c20["capacity_ah"][0])


def write_drive(
    cell: ReferenceCell, cycle: str, temp_c: float, out_dir: Path, repeats: int | None = None
) -> tuple[Path, Path]:
    """A drive trace (BMS sensor errors) and its truth file; returns both paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    n = drive_repeats(cell, cycle) if repeats is None else repeats
    run = run_pybamm(cell, "drive", temp_c, cycle, n)
    name = f"{cell.chemistry.lower()}_{cycle}x{n}_{temp_c:g}c"
    trace, truth = out_dir / f"{name}.csv", out_dir / f"{name}_truth.csv"
    _write(trace, run, slice(None), cell, temp_c, BMS_SENSORS)
    soc = 100.0 * (1.0 - (run["capacity_ah"] - run["capacity_ah"][0]) / c20_capacity_ah(cell))
    np.savetxt(
        truth,
        np.column_stack([run["time_s"] - run["time_s"][0], soc]),
        delimiter=",",
        header="time_s,soc_true",
        comments="",
        fmt=("%.3f", "%.4f"),
    )
    return trace, truth
