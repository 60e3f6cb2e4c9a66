"""`cellguard sim`: the main job, a simulated closed-loop run with a report.

Runs the firmware on the MicroPython unix port (lock-step, heap of the smallest board) against the
plant through a scenario, shows a progress bar, prints a summary and writes a report folder with
plots (PNG), the time series (CSV), the summary (JSON) and the CAN log (.blf, opens in standard
tools; `--log-format asc` for text).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from hil.bench.dut import DEFAULT_HEAP, DutError, heap_bytes
from hil.bench.loop import Bench
from hil.bench.report import THRESHOLD_KEYS, Recorder, RunInfo, write_report
from hil.bench.runner import bench_firmware_config, open_bench
from hil.cli.errors import Failure, Interrupted, PendingSignal, deferred_interrupts
from hil.cli.options import check_firmware_config, config_file, heap_size, output_folder
from sim.cells import get_chemistry
from sim.scenario import SCENARIOS, Scenario, build_scenario
from sim.sensors import SensorModel

NAME = "sim"
HELP = "run the simulated closed loop (the main job) and write a report"
_BAR = "{l_bar}{bar}| [{elapsed}<{remaining}{postfix}]"


OWNED_KEYS = {"cell_count": "--cells", "temp_count": "--cells", "chemistry": "--chemistry"}
"""Firmware keys the command line sets (the plant must agree): a --config file may not."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `cellguard sim`."""
    parser.add_argument("--cells", type=int, default=16, help="cells in series (1..192)")
    parser.add_argument("--chemistry", default="NMC", choices=["NMC", "LFP"])
    parser.add_argument("--scenario", default="default", choices=sorted(SCENARIOS))
    parser.add_argument("--seed", type=int, default=0, help="plant spread and sensor noise seed")
    parser.add_argument("--out", type=Path, default=Path("reports/latest"), help="report folder")
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="firmware configuration overrides: a JSON object of firmware/config.py keys, checked "
        "with the firmware's own rules before the run (cell_count, temp_count and chemistry "
        "come from --cells and --chemistry)",
    )
    parser.add_argument(
        "--heap", type=heap_size, default=DEFAULT_HEAP, help="MicroPython heap (-X heapsize)"
    )
    parser.add_argument(
        "--log-format",
        default="blf",
        choices=["blf", "asc", "none"],
        help="CAN log of every frame: blf (default, zlib-compressed), asc (text) or none",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Run the scenario, print the summary, write the report."""
    overrides = config_file(args.config, OWNED_KEYS)
    sensors = SensorModel(seed=args.seed)
    fw = bench_firmware_config(args.cells, args.chemistry, sensors, overrides)
    resolved = check_firmware_config(
        fw,
        source=f"--config {args.config}",
        blame={"cell_count": f"--cells {args.cells}", "temp_count": f"--cells {args.cells}"},
    )
    info = RunInfo(
        args.scenario,
        args.cells,
        args.chemistry,
        args.seed,
        thresholds={k: getattr(resolved, k) for k in THRESHOLD_KEYS},
        heap_bytes=heap_bytes(args.heap),
    )
    out = output_folder(args.out)
    chem = get_chemistry(args.chemistry)
    scenario = build_scenario(args.scenario, args.chemistry, chem.capacity_ah)
    log_path = None if args.log_format == "none" else out / f"can.{args.log_format}"
    rec = Recorder(cell_every=10)
    t0 = time.perf_counter()
    try:
        with (
            open_bench(
                cells=args.cells,
                chemistry=args.chemistry,
                seed=args.seed,
                firmware_config=overrides,
                heap=args.heap,
                log_path=log_path,
            ) as bench,
            deferred_interrupts() as signal_received,
        ):
            try:
                _run_scenario(bench, scenario, rec, args.no_progress, signal_received)
            finally:
                if bench.dut is not None:
                    (out / "console.log").write_text(bench.dut.console())
    except DutError as e:
        if e.console:
            (out / "console.log").write_text(e.console)
        hint = f" (--heap {args.heap} too small?)" if "MemoryError" in e.reason else ""
        raise Failure(f"{e.reason}{hint}; console in {out / 'console.log'}") from None
    if signal_received.signum is not None:
        kept = f"; {log_path} holds every frame up to there" if log_path else ""
        raise Interrupted(
            signal_received.signum,
            f"stopped at {bench.t_s / 3600:.2f} h simulated{kept} (no report written)",
        )
    wall = time.perf_counter() - t0
    summary = rec.summary(wall)
    summary.update(
        {
            "cells": args.cells,
            "chemistry": args.chemistry,
            "scenario": args.scenario,
            "seed": args.seed,
            "heap": args.heap,
        }
    )
    files = write_report(rec, out, summary, info)
    logs = [log_path] if log_path else []
    _print_summary(summary, files + logs + [out / "console.log"])
    return 0


def _run_scenario(
    bench: Bench, scenario: Scenario, rec: Recorder, quiet: bool, stop: PendingSignal
) -> None:
    with tqdm(total=100, unit="%", disable=quiet, bar_format=_BAR) as bar:
        shown = 0
        segment = scenario.segment_name
        while not scenario.done and stop.signum is None:
            load = scenario.current_request(bench.t_s, bench.pack, bench.status.limits)
            # the request may have ended the last segment: its step still belongs to it
            segment = segment if scenario.done else scenario.segment_name
            step = bench.step(load)
            rec.add(step, bench.pack, segment)
            if len(rec) % 100 == 0:
                done = int(100 * scenario.progress(bench.t_s, bench.pack))
                bar.update(done - shown)
                shown = done
                bar.set_postfix_str(
                    f"{bench.t_s / 3600:.2f} h {scenario.segment_name} "
                    f"SOC {100 * bench.pack.mean_soc:.1f}% BMS {bench.status.soc_pct:.1f}% "
                    f"{bench.status.state_name}",
                    refresh=False,
                )
        if stop.signum is None:
            bar.update(100 - shown)


def _print_summary(s: dict[str, Any], files: list[Path]) -> None:
    def pct(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.2f} %-points"

    print()
    print(f"cellguard sim: {s['scenario']}, {s['cells']} x {s['chemistry']}, seed {s['seed']}")
    print(
        f"  simulated        {s['simulated_s'] / 3600:.2f} h in {s['wall_s']:.1f} s wall "
        f"({s['realtime_ratio']:.0f}x real time, {s['steps']} control cycles)"
    )
    print(
        f"  SOC (plant)      {s['soc_true_start_pct']:.1f} % -> min {s['soc_true_min_pct']:.1f} %"
        f" -> {s['soc_true_end_pct']:.1f} %"
    )
    print(
        f"  SOC error        RMSE {pct(s['soc_error_rmse_pct'])}, "
        f"max {pct(s['soc_error_max_pct'])} (BMS - plant)"
    )
    print(
        f"  SOC error bound  median {pct(s['soc_bound_median_pct'])}; error within it "
        f"{s['soc_within_bound_pct'] or 0:.1f} % of the time; SOH capacity "
        f"{s['soh_capacity_pct_end'] or 0:.1f} %, resistance "
        f"{s['soh_resistance_pct_end'] or 0:.1f} %"
    )
    print(
        f"  SOC spread       {s['soc_spread_start_pct']:.2f} %-points at start, "
        f"{s['soc_spread_end_pct']:.2f} %-points at end (plant, max - min cell SOC)"
    )
    print(
        f"  cell spread      {s['cell_spread_start_mv']:.1f} mV at start, "
        f"{s['cell_spread_end_mv']:.1f} mV at end"
    )
    print(f"  max temperature  {s['temp_max_c']:.1f} °C")
    print(
        f"  faults seen      {', '.join(s['faults_seen']) or 'none'}; "
        f"contactor opens while running: {s['contactor_opens_while_running']}"
    )
    print(
        f"  firmware         cycle median {s['firmware_cycle_us_median']:.0f} us, max "
        f"{s['firmware_cycle_us_max']} us; live heap max {s['firmware_heap_live_max']} B "
        f"of {s['heap']}"
    )
    print(f"  report           {files[0].parent}/")
    for f in files:
        print(f"                   {f.name}")
