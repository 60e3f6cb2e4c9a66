"""Fault latency: time from a threshold crossing in the plant to the contactors open, per fault.

One bench (the firmware on the MicroPython unix port, lock-step, 16 NMC cells, balancing off so
that no bleed current moves a cell voltage during a trial) serves every trial in turn:

1. recover: clear the injections, FaultReset, step until the contactors are closed, settle 1..3
   cycles;
2. cross: draw the crossing instant t_cross uniformly within the next control period (t_k,
   t_k + cycle] and an overshoot from the type's range; a current fault changes the plant's load
   in that period, every other fault starts acting on the next sample (the quantity the sensors
   see steps past the threshold, the link to the BMS dies), so the first sample after t_cross is
   the first to show it, as with a continuous plant;
3. wait: step until the BMS's command has opened the plant's contactors; that happens at the
   start of a plant step, at plant time t_open, so latency = t_open - t_cross;
4. check that the type's fault bit is reported.

Target per type: latency <= qualification time + one control cycle (the sample that first sees
the crossing comes up to one cycle after it). Adding a fault type is one row of `TYPES`.

Usage: python benchmarks/fault_latency.py [--trials 300] [--seed 0] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm import tqdm

from firmware import config as fw_config
from hil.bench.inject import SIM_IDS, VCU_ID, FaultInjector
from hil.bench.loop import Bench
from hil.bench.runner import open_bench

CELLS = 16
FIRMWARE = {"balance_enable": 0}
PLANT = {"soc_mean": 0.5}  # room both ways: a 2 C charge or 9 C discharge trips no voltage rule
CHARGE_A = -2.0  # the charge-only temperature rules need a charging current
MAX_WAIT_CYCLES = 100
Stimulus = Callable[[FaultInjector, Any, float], object]


@dataclass(frozen=True)
class FaultType:
    """One open-tier fault and how to make the plant cross its threshold."""

    fault: str
    """BMS_Faults signal name."""
    qualify_key: str | None
    """Firmware config key of its qualification time; None: immediate."""
    overshoot: tuple[float, float]
    """Range of the overshoot past the threshold, in the stimulus's unit."""
    inject: Stimulus | None = None
    """Acts from the first sample after the crossing: (injector, config, overshoot)."""
    load_a: Callable[[Any, float], float] | None = None
    """Plant load (A, + = discharge) from the crossing on: (config, overshoot)."""
    base_load_a: float = 0.0


def _cell(key: str, sign: int) -> Stimulus:
    """Cell 5's voltage steps `overshoot` mV past config `key`."""
    return lambda inj, cfg, x: inj.stuck_cell(5, getattr(cfg, key) + sign * round(x))


def _temp(key: str, sign: int) -> Stimulus:
    """Sensor 9 reads `overshoot` dC past config `key` (the cell's temperature steps)."""
    return lambda inj, cfg, x: inj.thermistor(9, "stuck", getattr(cfg, key) + sign * round(x))


TYPES = (
    FaultType("CellOverVoltage", "v_qualify_ms", (1, 200), _cell("cell_ov_mv", 1)),
    FaultType("CellUnderVoltage", "v_qualify_ms", (1, 200), _cell("cell_uv_mv", -1)),
    FaultType("OverTempCharge", "t_qualify_ms", (1, 90), _temp("ot_charge_dc", 1), None, CHARGE_A),
    FaultType("OverTempDischarge", "t_qualify_ms", (1, 200), _temp("ot_discharge_dc", 1)),
    FaultType(
        "UnderTempCharge", "t_qualify_ms", (1, 90), _temp("ut_charge_dc", -1), None, CHARGE_A
    ),
    FaultType("UnderTempDischarge", "t_qualify_ms", (1, 200), _temp("ut_discharge_dc", -1)),
    FaultType(
        "OverCurrentCharge",
        "i_qualify_ms",
        (0.5, 10),
        load_a=lambda c, x: -c.oc_charge_ma / 1e3 - x,
    ),
    FaultType(
        "OverCurrentDischarge",
        "i_qualify_ms",
        (0.5, 20),
        load_a=lambda c, x: c.oc_discharge_ma / 1e3 + x,
    ),
    FaultType(
        "MeasurementStale",
        "meas_stale_ms",
        (0, 0),
        lambda inj, c, x: inj.can_drop(SIM_IDS),
    ),
    FaultType("MeasurementImplausible", None, (1, 400), _cell("plaus_cell_min_mv", -1)),
    FaultType("VcuRequestStale", "vcu_stale_ms", (0, 0), lambda inj, c, x: inj.can_drop(VCU_ID)),
    FaultType("OpenSenseWire", None, (0, 0), lambda inj, c, x: inj.open_wire(5)),
)


@dataclass
class Trial:
    """One injected fault's outcome."""

    fault: str
    latency_ms: float
    reported: bool


def recover(bench: Bench, inject: FaultInjector, base_load_a: float) -> None:
    """Clear injections, reset latched faults and close the contactors again."""
    inject.clear()
    bench.step(base_load_a, fault_reset=True)
    bench.step_until(lambda s: s.closed, 40, base_load_a)
    if not bench.status.closed:
        raise RuntimeError(f"contactors did not close again: {bench.status}")


def run_trial(
    bench: Bench, inject: FaultInjector, cfg: Any, ft: FaultType, rng: np.random.Generator
) -> Trial:
    """Recover, cross the threshold at a random instant, measure until the contactors open."""
    recover(bench, inject, ft.base_load_a)
    for _ in range(int(rng.integers(1, 4))):
        bench.step(ft.base_load_a)
    cycle_s = bench.cycle_ms / 1000.0
    t_cross = bench.t_s + cycle_s * (1.0 - rng.random())  # in (t_k, t_k + cycle]
    overshoot = float(rng.uniform(*ft.overshoot))
    load = ft.load_a(cfg, overshoot) if ft.load_a else ft.base_load_a
    bench.step(load)  # the period in which the plant crosses
    if ft.inject is not None:
        ft.inject(inject, cfg, overshoot)
    for _ in range(MAX_WAIT_CYCLES):
        rec = bench.step(load)
        if not rec.status.closed:
            # The open command was applied before this plant step began, at rec.t_s.
            latency = 1000.0 * (rec.t_s - t_cross)
            return Trial(ft.fault, latency, ft.fault in rec.status.faults)
    return Trial(ft.fault, float("inf"), ft.fault in bench.status.faults)


def summarise(trials: list[Trial], cfg: Any, cycle_ms: int) -> list[dict[str, Any]]:
    """Per fault type: count, median, p99, max latency, the bound and whether it was met."""
    rows = []
    for ft in TYPES:
        lat = np.array([t.latency_ms for t in trials if t.fault == ft.fault])
        if lat.size == 0:
            continue
        qualify = getattr(cfg, ft.qualify_key) if ft.qualify_key else 0
        bound = qualify + cycle_ms
        reported = all(t.reported for t in trials if t.fault == ft.fault)
        rows.append(
            {
                "fault": ft.fault,
                "qualify_ms": qualify,
                "bound_ms": bound,
                "n": int(lat.size),
                "median_ms": float(np.median(lat)),
                "p99_ms": float(np.percentile(lat, 99)),
                "max_ms": float(lat.max()),
                "min_ms": float(lat.min()),
                "reported": reported,
                "met": bool(lat.max() <= bound and reported),
            }
        )
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    """The rows as the BENCHMARKS.md table."""
    out = [
        "| fault | qualification ms | bound ms | faults | min | median | p99 | max ms | met |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        out.append(
            f"| {r['fault']} | {r['qualify_ms']} | {r['bound_ms']} | {r['n']} | "
            f"{r['min_ms']:.0f} | {r['median_ms']:.0f} | {r['p99_ms']:.0f} | {r['max_ms']:.0f} | "
            f"{'met' if r['met'] else 'MISSED'} |"
        )
    return "\n".join(out)


def main() -> None:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=300, help="injected faults per type")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="write the summary and settings here")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    cfg = fw_config.load({"cell_count": CELLS, "temp_count": CELLS, **FIRMWARE})
    order = [ft for ft in TYPES for _ in range(args.trials)]
    rng.shuffle(order)  # types interleaved: each trial starts from whatever the last one left
    trials = []
    t0 = time.monotonic()
    with open_bench(
        cells=CELLS, seed=args.seed, firmware_config=FIRMWARE, pack_config=PLANT
    ) as bench:
        inject = FaultInjector(bench, seed=args.seed)
        for ft in tqdm(order, desc="faults", unit="fault"):
            trials.append(run_trial(bench, inject, cfg, ft, rng))
        sim_s = bench.t_s
    wall_s = time.monotonic() - t0
    rows = summarise(trials, cfg, cfg.cycle_ms)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    print(
        f"{len(trials)} injected faults, {sim_s:.0f} s simulated in {wall_s:.0f} s wall; "
        f"{platform.python_version()} on {platform.machine()}, commit {commit}"
    )
    print(markdown(rows))
    if args.json:
        settings = {"trials": args.trials, "seed": args.seed, "cells": CELLS, **FIRMWARE, **PLANT}
        result = {"settings": settings, "commit": commit, "sim_s": sim_s, "wall_s": wall_s}
        with open(args.json, "w") as f:
            json.dump({**result, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
