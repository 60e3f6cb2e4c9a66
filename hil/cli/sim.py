"""`cellguard sim`: the main job, a simulated closed-loop run with a report.

Runs the firmware on the MicroPython unix port (lock-step, heap of the smallest board) against the
plant through a scenario, shows a progress bar, prints a summary and writes a report folder with
plots (PNG), the time series (CSV), the summary (JSON) and the CAN log (.blf, opens in standard
tools; `--log-format asc` for text): by default the windows a vehicle data logger keeps (the
start, every event, a snapshot every 10 minutes, the end: `hil.bench.canlog`), every frame with
`--can-log full`.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from hil.bench import charging_report
from hil.bench.canlog import CAN_LOG_MODES, POST_S, PRE_S, SNAPSHOT_EVERY_S, SNAPSHOT_S
from hil.bench.charger import ChargerLink
from hil.bench.dut import DEFAULT_HEAP, DutError, heap_bytes
from hil.bench.loop import Bench
from hil.bench.report import THRESHOLD_KEYS, Recorder, RunInfo, write_report
from hil.bench.runner import bench_firmware_config, open_bench
from hil.cli.errors import Failure, Interrupted, PendingSignal, deferred_interrupts
from hil.cli.options import HEAP_HELP, check_firmware_config, config_file, heap_size, output_folder
from sim.cells import get_chemistry
from sim.scenario import SCENARIOS, DcFastCharge, Scenario, build_scenario
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
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("reports/latest"),
        help="report folder (default %(default)s)",
    )
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="firmware configuration overrides: a JSON object of firmware/config.py keys, checked "
        "with the firmware's own rules before the run (cell_count, temp_count and chemistry "
        "come from --cells and --chemistry)",
    )
    parser.add_argument(
        "--heap",
        type=heap_size,
        default=DEFAULT_HEAP,
        help=HEAP_HELP,
    )
    parser.add_argument(
        "--can-log",
        default="events",
        choices=[*CAN_LOG_MODES, "none"],
        help="what the CAN log keeps: events (default: every frame of the start, of "
        f"{PRE_S:g} s before to {POST_S:g} s after each contactor, state, fault or vehicle-request "
        f"change and scenario phase, of a {SNAPSHOT_S:g} s snapshot every "
        f"{SNAPSHOT_EVERY_S / 60:g} min and of the end; the windows are listed in summary.json), "
        "full (every frame: about 50 MB for the default run) or none",
    )
    parser.add_argument(
        "--log-format",
        default="blf",
        choices=["blf", "asc"],
        help="CAN log file format: blf (default, zlib-compressed) or asc (text)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--charger-fault",
        default="none",
        choices=charging_report.FAULT_CASES,
        help="dc-fast-charge: a fault of the simulated charger (timed ones 5 min into the session)",
    )


def run(args: argparse.Namespace) -> int:
    """Run the scenario, print the summary, write the report."""
    overrides = config_file(args.config, OWNED_KEYS)
    dc = args.scenario == "dc-fast-charge"  # GB/T 27930 on the second CAN channel, 10 -> 80 %
    if dc:
        overrides = {"gbt_soc_target": 8000, **overrides}
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
    log_path = None if args.can_log == "none" else out / f"can.{args.log_format}"
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
                log_mode="full" if args.can_log == "none" else args.can_log,
                pack_config={"soc_mean": 0.1} if dc else None,
                dut_options={"charger": True} if dc else None,
            ) as bench,
            deferred_interrupts() as signal_received,
        ):
            link = _attach_charger(bench, scenario, args, out) if dc else None
            try:
                _run_scenario(bench, scenario, rec, args.no_progress, signal_received)
            finally:
                if link is not None:
                    link.close()
                if bench.dut is not None:
                    (out / "console.log").write_text(bench.dut.console())
    except DutError as e:
        if e.console:
            (out / "console.log").write_text(e.console)
        hint = f" (--heap {args.heap} too small?)" if "MemoryError" in e.reason else ""
        raise Failure(f"{e.reason}{hint}; console in {out / 'console.log'}") from None
    if signal_received.signum is not None:
        kept = ""
        if log_path and args.can_log == "full":
            kept = f"; {log_path} holds every frame up to there"
        elif log_path:
            kept = f"; {log_path} holds its windows up to there, the last {PRE_S:g} s included"
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
    if bench.can_log is not None:
        summary["can_log"] = bench.can_log.describe()
    if link is not None:
        summary.update(charging_report.summary(link))
    files = write_report(rec, out, summary, info)
    if link is not None:
        limits = {
            "cell_charge_max_v": resolved.cell_charge_max_mv / 1000,
            "cell_ov_v": resolved.cell_ov_mv / 1000,
            "ot_charge_c": resolved.ot_charge_dc / 10,
        }
        title = f"dc-fast-charge, {args.cells} x {args.chemistry}, seed {args.seed}"
        files += charging_report.write(link, out, limits, title)
        files.append(link.log_path)
    logs = [log_path] if log_path else []
    _print_summary(summary, files + logs + [out / "console.log"])
    if "can_log" in summary:
        print(_describe_log(summary["can_log"]))
    return 0


def _attach_charger(
    bench: Bench, scenario: Scenario, args: argparse.Namespace, out: Path
) -> ChargerLink:
    """Plug the simulated charger into the firmware's charger channel (hil.bench.charger); the
    bench then steps at 50 ms, the BCL period."""
    port = getattr(bench.dut, "charger_port", None)
    if port is None:
        raise Failure("dc-fast-charge needs the unix-port firmware with its charger channel")
    out.mkdir(parents=True, exist_ok=True)
    charger = charging_report.charger_for(args.charger_fault)
    link = ChargerLink(port, charger, out / f"charger.{args.log_format}")
    for segment in scenario.segments:
        if isinstance(segment, DcFastCharge):
            segment.link = link
    bench.cycle_ms = 50
    return link


def _run_scenario(
    bench: Bench, scenario: Scenario, rec: Recorder, quiet: bool, stop: PendingSignal
) -> None:
    with tqdm(total=100, unit="%", disable=quiet, bar_format=_BAR) as bar:
        shown = 0
        segment = ""
        while not scenario.done and stop.signum is None:
            load = scenario.current_request(bench.t_s, bench.pack, bench.status.limits)
            # the request may have ended the last segment: its step still belongs to it
            if not scenario.done and scenario.segment_name != segment:
                segment = scenario.segment_name
                if bench.can_log is not None and len(rec):
                    bench.can_log.mark(f"phase {segment}")
            # a vehicle that is charging says so (the BMS preheats a cold pack for it)
            # DC charging: the BMS's charging service asks for the contactors, not the vehicle.
            step = bench.step(
                load,
                vcu_close=not segment.startswith("dc-"),
                charge_request=segment.endswith("charge"),
            )
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

    def ratio(x: float | None) -> str:
        return "n/a x" if x is None else f"{x:.1f}x"

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
        f"  SOC error bound  median {pct(s['soc_bound_median_pct'])} "
        f"({ratio(s['soc_bound_rmse_ratio'])} the RMS error); error within it "
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


def _describe_log(log: dict[str, Any]) -> str:
    """One line on what the CAN log holds."""
    if log["mode"] == "full":
        return f"  CAN log          {log['file']}: every frame ({log['frames']})"
    windows = log["windows"]
    return (
        f"  CAN log          {log['file']}: {log['frames']} of {log['frames_on_the_bus']} frames, "
        f"{log['seconds']:.0f} s in {len(windows)} windows (start, events, snapshots, end; "
        "listed in summary.json; --can-log full for every frame)"
    )
