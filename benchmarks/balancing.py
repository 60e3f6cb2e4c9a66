"""Balancing benchmark: the firmware's SOC strategy against a voltage-threshold strategy.

Every balancing decision is made by the real firmware on the MicroPython unix port, in lock-step
with the plant through `hil.bench.runner.open_bench`; this script only drives the load and reads the
plant's truth. Prints markdown tables for BENCHMARKS.md:

1. rest: time until the plant's cell SOC spread (max - min) falls under 1 %-point, contactors
   open, for 16 and 96 NMC cells (NMC: its OCV curve is steep everywhere, so both strategies can
   see the imbalance at rest; on LFP's plateau neither can);
2. cycling: usable capacity (Ah discharged until the first cell reaches the firmware's
   cell_discharge_min_mv under load) in the first and the last of `--cycles` cycles, for 16 and 96
   LFP cells; a cycle is CC-CV charge at 0.5C to full (balancing active during charge and rest),
   `--rest-h` rest, constant 0.5C discharge to the first cell's cutoff.

Strategies (firmware configuration): "soc" (balance_strategy=0, the default), "voltage"
(balance_strategy=1, balance_start_delta_mv=10, like the peers) and, for cycling, "none"
(balance_enable=0) as the reference.

Choices made to reach hours of simulated time (stated in the output): a 1000 ms control period
(cycle_ms, with meas_stale_ms and vcu_stale_ms 3000 and balance_measure_ms 2000 so that
cycle_ms < balance_measure_ms < balance_bleed_ms holds); the bleed resistor `--bleed-ohm` set in
both the plant (bleed_ohm) and the firmware (balance_bleed_mohm). Plant spreads: capacity sigma
1.5 % and initial SOC sigma 2.5 % (about +-3 % and +-5 % at two sigma), self-discharge drawn
uniformly from 0..1 mA per cell. The cycling discharge is a cycler's constant current to the
cutoff, through the discharge limit's taper, so CurrentLimitIgnored is off (limit_ignored_ms 0).

Usage: python benchmarks/balancing.py [--cycles 6] [--bleed-ohm 33] [--jobs 2]
"""

from __future__ import annotations

import argparse
import platform
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from firmware import config as fw_config
from hil.bench.loop import Bench
from hil.bench.runner import open_bench
from sim.scenario import CCCVCharge

CYCLE_MS = 1000
SPREAD_TARGET_PCT = 1.0
PACK_SPREAD = {"capacity_sigma": 0.015, "soc_sigma": 0.025, "leak_max_a": 1e-3}
TIMING = {
    "cycle_ms": CYCLE_MS,
    "meas_stale_ms": 3000,
    "vcu_stale_ms": 3000,
    "balance_measure_ms": 2000,
}
# The cycling discharge is a cycler's constant current down to the cutoff, through the discharge
# limit's taper by design: the rule that opens on a load ignoring the limits is off.
CYCLER = {"limit_ignored_ms": 0}
STRATEGIES: dict[str, dict[str, int]] = {
    "soc": {"balance_strategy": 0},
    "voltage": {"balance_strategy": 1, "balance_start_delta_mv": 10},
    "none": {"balance_enable": 0},
}


@dataclass(frozen=True)
class Job:
    """One benchmark run: a pack, a strategy and what to measure."""

    kind: str  # "rest" or "cycling"
    chemistry: str
    cells: int
    strategy: str
    bleed_ohm: float
    seed: int
    soc_mean: float
    cycles: int = 0
    rest_h: float = 1.0
    max_rest_h: float = 48.0


def _open(job: Job) -> Any:
    fw = dict(
        TIMING, **CYCLER, balance_bleed_mohm=round(job.bleed_ohm * 1000), **STRATEGIES[job.strategy]
    )
    pack = dict(PACK_SPREAD, bleed_ohm=job.bleed_ohm, soc_mean=job.soc_mean)
    return open_bench(
        cells=job.cells,
        chemistry=job.chemistry,
        seed=job.seed,
        firmware_config=fw,
        pack_config=pack,
    )


def _spread_pct(bench: Bench) -> float:
    return 100.0 * float(np.ptp(bench.pack.soc))


def run_rest(job: Job) -> dict[str, Any]:
    """Contactors open, no load: simulated hours until the SOC spread is under the target."""
    dt_h = CYCLE_MS / 3.6e6
    t0 = time.perf_counter()
    with _open(job) as bench:
        start = _spread_pct(bench)
        steps = 0
        bled_ah = 0.0
        limit = round(job.max_rest_h / dt_h)
        while _spread_pct(bench) >= SPREAD_TARGET_PCT and steps < limit:
            bench.step(0.0, vcu_close=False)
            bled_ah += float(bench.pack.bleed_current_a.sum()) * dt_h
            steps += 1
        reached = _spread_pct(bench) < SPREAD_TARGET_PCT
        return {
            "job": job,
            "start_pct": start,
            "end_pct": _spread_pct(bench),
            "hours": steps * dt_h,
            "reached": reached,
            "bled_ah": bled_ah,
            "bleed_a": _bleed_current_a(bench, job),
            "faults": sorted(bench.status.faults),
            "wall_s": time.perf_counter() - t0,
        }


def _bleed_current_a(bench: Bench, job: Job) -> float:
    return float(np.median(bench.pack.ocv_v)) / job.bleed_ohm


def _charge(bench: Bench, dt_s: float) -> None:
    charge = CCCVCharge(current_a=0.5 * bench.pack.chemistry.capacity_ah)
    charge.begin(bench.pack)
    elapsed = 0.0
    while True:
        request = charge.request(elapsed, bench.pack, bench.status.limits)
        if request is None:
            return
        bench.step(request)
        elapsed += dt_s


def _discharge(bench: Bench, dt_s: float, cutoff_v: float) -> float:
    """Constant 0.5C until the first cell reaches `cutoff_v` under load; returns Ah delivered."""
    load = 0.5 * bench.pack.chemistry.capacity_ah
    ah = 0.0
    for _ in range(round(4 * 3600 / dt_s)):
        bench.step(load)
        ah += bench.pack.current_a * dt_s / 3600.0
        if bench.pack.cell_voltage_v.min() <= cutoff_v or not bench.status.closed:
            break
    return ah


def run_cycling(job: Job) -> dict[str, Any]:
    """`job.cycles` cycles of charge, rest, discharge; usable Ah and top-of-charge spread each."""
    dt_s = CYCLE_MS / 1000.0
    cutoff_v = fw_config.load({"chemistry": job.chemistry}).cell_discharge_min_mv / 1000.0
    t0 = time.perf_counter()
    usable: list[float] = []
    top_spread: list[float] = []
    faults: set[str] = set()
    with _open(job) as bench:
        for _ in range(10):
            bench.step(0.0)
        smallest_ah = float(bench.pack.capacity_ah.min())
        for _ in range(job.cycles):
            _charge(bench, dt_s)
            for _ in range(round(job.rest_h * 3600 / dt_s)):
                bench.step(0.0)
            top_spread.append(_spread_pct(bench))
            usable.append(_discharge(bench, dt_s, cutoff_v))
            faults |= bench.status.faults
        return {
            "job": job,
            "usable_ah": usable,
            "top_spread_pct": top_spread,
            "smallest_cell_ah": smallest_ah,
            "cutoff_v": cutoff_v,
            "sim_h": bench.t_s / 3600.0,
            "faults": sorted(faults),
            "wall_s": time.perf_counter() - t0,
        }


def run(job: Job) -> dict[str, Any]:
    """Dispatch one job (picklable entry point for the process pool)."""
    return run_rest(job) if job.kind == "rest" else run_cycling(job)


def main() -> None:
    """Run every job on a process pool and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cycles", type=int, default=6, help="charge/rest/discharge cycles")
    parser.add_argument("--rest-h", type=float, default=1.0, help="rest after each charge, h")
    parser.add_argument("--bleed-ohm", type=float, default=33.0, help="bleed resistor, ohm")
    parser.add_argument("--seed", type=int, default=0, help="plant spread and sensor noise seed")
    parser.add_argument("--jobs", type=int, default=2, help="benches run in parallel")
    args = parser.parse_args()
    common = {"bleed_ohm": args.bleed_ohm, "seed": args.seed}
    jobs = [
        Job("rest", "NMC", cells, strategy, soc_mean=0.9, **common)
        for cells in (16, 96)
        for strategy in ("soc", "voltage")
    ] + [
        Job(
            "cycling",
            "LFP",
            cells,
            s,
            soc_mean=0.5,
            cycles=args.cycles,
            rest_h=args.rest_h,
            **common,
        )
        for cells in (96, 16)
        for s in ("soc", "voltage", "none")
    ]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        results = list(pool.map(run, jobs))
    wall = time.perf_counter() - t0
    print(
        f"cellguard balancing benchmark: {platform.machine()}, Python {platform.python_version()}, "
        f"{args.jobs} benches in parallel, {wall:.0f} s wall"
    )
    print(
        f"Firmware on the MicroPython unix port, lock-step, control period {CYCLE_MS} ms "
        f"({', '.join(f'{k}={v}' for k, v in {**TIMING, **CYCLER}.items())}); bleed resistor "
        f"{args.bleed_ohm:g} ohm in plant and firmware; plant spreads "
        f"{', '.join(f'{k}={v:g}' for k, v in PACK_SPREAD.items())}; seed {args.seed}; "
        "balance_max_cells and the other balance_* keys at their defaults."
    )
    print()
    _rest_table([r for r in results if r["job"].kind == "rest"])
    print()
    _cycling_table([r for r in results if r["job"].kind == "cycling"], args.cycles)


def _rest_table(results: list[dict[str, Any]]) -> None:
    print(
        f"At rest (NMC, contactors open, initial mean SOC 90 %): simulated time until the plant's "
        f"SOC spread < {SPREAD_TARGET_PCT:g} %-point"
    )
    print()
    print(
        "| cells | strategy | bleed current | spread start | time to < 1 % | spread end | "
        "charge bled | faults | wall |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        j = r["job"]
        t = f"{r['hours']:.2f} h" if r["reached"] else f"not within {j.max_rest_h:g} h"
        print(
            f"| {j.cells} | {j.strategy} | {r['bleed_a']:.3f} A | {r['start_pct']:.2f} % | {t} "
            f"| {r['end_pct']:.2f} % | {r['bled_ah']:.3f} Ah | {', '.join(r['faults']) or 'none'} "
            f"| {r['wall_s']:.0f} s |"
        )


def _cycling_table(results: list[dict[str, Any]], cycles: int) -> None:
    if not results:
        return
    r0 = results[0]
    print(
        f"Cycling (LFP, initial mean SOC 50 %): usable capacity = Ah at 0.5C until the first cell "
        f"reads {r0['cutoff_v']:.2f} V (plant terminal voltage), cycle 1 and cycle {cycles}"
    )
    print()
    print(
        "| cells | strategy | smallest cell | usable cycle 1 | usable cycle "
        f"{cycles} | SOC spread after charge+rest, cycle 1 -> {cycles} | faults | sim | wall |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        j = r["job"]
        u = r["usable_ah"]
        s = r["top_spread_pct"]
        print(
            f"| {j.cells} | {j.strategy} | {r['smallest_cell_ah']:.3f} Ah | {u[0]:.3f} Ah "
            f"| {u[-1]:.3f} Ah | {s[0]:.2f} % -> {s[-1]:.2f} % "
            f"| {', '.join(r['faults']) or 'none'} | {r['sim_h']:.1f} h | {r['wall_s']:.0f} s |"
        )


if __name__ == "__main__":
    main()
