"""SOC accuracy benchmark (issue #3): the firmware estimator against a coulomb-counting baseline.

Run from the repository root: `python -m benchmarks.soc_accuracy [--ship]` (needs the `[bench]`
extra for PyBaMM). Pipeline, per chemistry (stages timed; `--help` for the options):

1. reference: PyBaMM C/20, HPPC and drive-cycle traces with sensor errors, and SOC truth
   (`benchmarks/reference_pybamm.py`; needs the `[bench]` extra; cached under build/);
2. characterize: `cellguard characterize` on the simulated C/20 + HPPC tests at every
   temperature -> a candidate profile under build/reference/profiles (`--ship` copies it to
   `profiles/`);
3. replay: for every drive cycle and temperature, twice (initial SOC from the estimator's own
   start-up, and `--initial-error` %-points below the truth), the firmware estimator through
   `cellguard replay TRACE --profile P --out EST --truth TRUTH [--initial-soc X] --json`, and
   the baseline below on the same trace, profile and initial SOC;
4. a markdown table (stdout) and a JSON file with every figure.

The baseline is what open BMSs do (foxBMS, libresolar, diyBMS): count coulombs (charge stored at
the profile's coulombic efficiency) and, once the current has stayed below `BASELINE_REST_A_PER_AH`
x capacity for `BASELINE_REST_S`, set the SOC from the profile's OCV table (mean branch,
interpolated at the measured temperature) at the voltage averaged over the last
`BASELINE_AVERAGE_S`, at every sample for as long as the rest lasts.
Without an initial SOC it starts from the OCV of the first sample.

Errors are SOC minus truth in %-points. "Time to 2 %" is the first time after which the error
stays within 2 %-points to the end of the trace (never: it leaves the band again later).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from hil import REPO_ROOT
from hil.cellmodel.ecm import SECONDS_PER_HOUR
from hil.cellmodel.profiles import CellProfile
from hil.cellmodel.traces import Trace, read_trace

BASELINE_REST_S = 900.0
"""Rest the baseline waits for before it trusts the OCV (15 min)."""
BASELINE_REST_A_PER_AH = 0.02
"""Current below which the baseline counts the cell as resting (C/50)."""
BASELINE_AVERAGE_S = 60.0
"""The baseline's OCV reset reads the voltage averaged over this long (the rest is longer)."""
CONVERGED_PCT = 2.0
TARGETS = {
    "NMC": {"rmse_pct": 1.0, "max_pct": 3.0, "converge_s": 600.0},
    "LFP": {"rmse_pct": 2.0, "max_pct": 5.0, "converge_s": None},
}
"""Issue #3's targets (the 10-minute convergence target is stated for NMC only)."""
SHIPPED = {
    "NMC": ("nmc21700_5ah.json", "NMC 21700 5 Ah (LG M50-like)"),
    "LFP": ("lfp26650_2p3ah.json", "LFP 26650 2.3 Ah (A123 ANR26650m1-like)"),
}
"""File name and profile name of each chemistry's shipped profile in profiles/."""
CELLGUARD = [sys.executable, "-m", "hil.cli"]


@dataclass(frozen=True)
class Accuracy:
    """Error figures of one SOC estimate against the truth (%-points, seconds)."""

    rmse_pct: float
    max_pct: float
    converge_s: float | None
    """First time after which |error| <= CONVERGED_PCT to the end (None: never)."""


def accuracy(time_s: NDArray, soc_pct: NDArray, truth_pct: NDArray) -> Accuracy:
    """Compare an estimate with the truth sampled at the same times."""
    err = np.asarray(soc_pct, dtype=float) - np.asarray(truth_pct, dtype=float)
    outside = np.flatnonzero(np.abs(err) > CONVERGED_PCT)
    if len(outside) == 0:
        converge: float | None = 0.0
    elif outside[-1] == len(err) - 1:
        converge = None
    else:
        converge = float(time_s[outside[-1] + 1] - time_s[0])
    return Accuracy(float(np.sqrt(np.mean(err**2))), float(np.max(np.abs(err))), converge)


def ocv_soc(profile: CellProfile, voltage_v: float, temp_c: float) -> float:
    """SOC (%) whose mean-branch OCV at `temp_c` is `voltage_v` (clamped to 0..100)."""
    soc_axis = np.asarray(profile.soc_pct, dtype=float)
    row = profile.table("ocv_v", soc_axis, np.full(len(soc_axis), temp_c))
    return float(np.interp(voltage_v, row, soc_axis))


def baseline_soc(
    trace: Trace, profile: CellProfile, initial_soc_pct: float | None = None
) -> NDArray[np.float64]:
    """SOC (%) at every sample by coulomb counting with an OCV reset after a rest (module doc)."""
    t, i, v, temp = trace.time_s, trace.current_a, trace.voltage_v, trace.temperature_c
    soc = np.empty(len(t))
    est = ocv_soc(profile, v[0], temp[0]) if initial_soc_pct is None else initial_soc_pct
    rest_threshold = BASELINE_REST_A_PER_AH * profile.capacity_ah
    per_as = 100.0 / (profile.capacity_ah * SECONDS_PER_HOUR)
    # Voltage averaged over the last BASELINE_AVERAGE_S: on LFP's plateau (a few mV per 10 %
    # SOC) single noisy samples would throw the reset around by tens of percent.
    sums = np.concatenate([[0.0], np.cumsum(v)])
    first = np.searchsorted(t, t - BASELINE_AVERAGE_S)
    mean_v = (sums[1:] - sums[first]) / (np.arange(1, len(t) + 1) - first)
    rest_since = t[0] if abs(i[0]) < rest_threshold else None
    for k in range(len(t)):
        if abs(i[k]) >= rest_threshold:
            rest_since = None
        elif rest_since is None:
            rest_since = t[k]
        if rest_since is not None and t[k] - rest_since >= BASELINE_REST_S:
            est = ocv_soc(profile, mean_v[k], temp[k])
        soc[k] = est
        if k + 1 < len(t):
            moved = i[k] * (t[k + 1] - t[k])
            est -= per_as * (moved * profile.coulombic_efficiency if moved < 0 else moved)
    return soc


def read_truth(path: Path) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """A truth file `time_s,soc_true`."""
    table = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
    return table[:, 0], table[:, 1]


def replay_available() -> bool:
    """Whether this checkout's `cellguard` has the `replay` command (est-fw's branch)."""
    from hil.cli import COMMANDS

    return "replay" in COMMANDS


REPLAY_TIMING = {
    "cycle_ms": 1000,
    "meas_stale_ms": 3000,
    "vcu_stale_ms": 3000,
    "balance_measure_ms": 2000,
    "balance_relax_ms": 600000,
}
"""Firmware timing for the replays: the traces are 1 Hz, so a 1000 ms control period sees every
sample once (a 100 ms period would hold each sample for ten cycles and take ten times as long);
the staleness and balancing windows follow so the configuration's ordering rules hold."""


def run_replay(
    trace: Path, profile: Path, truth: Path, out: Path, initial_soc_pct: float | None
) -> tuple[NDArray[np.float64], dict[str, Any]]:
    """The firmware estimator over `trace` via `cellguard replay`; returns its SOC (%) at the
    trace's samples and the JSON the command printed."""
    timing = out.with_suffix(".config.json")
    timing.write_text(json.dumps(REPLAY_TIMING))
    cmd = [*CELLGUARD, "replay", str(trace), "--profile", str(profile), "--out", str(out)]
    cmd += ["--truth", str(truth), "--json", "--config", str(timing)]
    if initial_soc_pct is not None:
        cmd += ["--initial-soc", f"{initial_soc_pct:.2f}"]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=REPO_ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr}")
    table = np.loadtxt(out, delimiter=",", skiprows=1, ndmin=2)
    times = read_trace(trace).time_s
    return np.interp(times, table[:, 0], table[:, 1]), json.loads(done.stdout)


def run_characterize(files: Sequence[dict[str, Path]], chemistry: str, out: Path) -> float:
    """`cellguard characterize` on the lab tests at every temperature; returns the wall time."""
    import pybamm

    from benchmarks.reference_pybamm import CELLS, MODEL

    cell = CELLS[chemistry]
    temps = ", ".join(f"{p['discharge'].name.split('_')[1][:-1]}" for p in files)
    cmd = [*CELLGUARD, "characterize", "--chemistry", chemistry, "--name", SHIPPED[chemistry][1]]
    cmd += ["--voltage-min", str(cell.voltage_min_v), "--voltage-max", str(cell.voltage_max_v)]
    cmd += [
        "--source",
        f"cellguard characterize of PyBaMM {pybamm.__version__} {MODEL} simulations with the "
        f"{cell.parameter_set} parameter set ({cell.description}): C/20 discharge, C/20 charge "
        f"and HPPC at {temps} degC, lab sensor errors (benchmarks/soc_accuracy.py)",
        "--out",
        str(out),
    ]
    # Paths relative to the repository, so the profile's fit block does not name this machine.
    for tests in files:
        for flag, key in (("--c20-discharge", "discharge"), ("--c20-charge", "charge")):
            cmd += [flag, str(tests[key].relative_to(REPO_ROOT))]
        cmd += ["--hppc", str(tests["hppc"].relative_to(REPO_ROOT))]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=REPO_ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"cellguard characterize failed:\n{done.stderr}")
    print(done.stdout, end="")
    return time.perf_counter() - start


def _fmt(acc: dict[str, Any] | None, key: str) -> str:
    if acc is None:
        return "n/a"
    value = acc[key]
    if key == "converge_s":
        return "never" if value is None else f"{value / 60:.1f} min"
    return f"{value:.2f} %"


def _held(acc: dict[str, Any] | None) -> str:
    # How often the truth stayed inside the estimator's reported error bound (replay's figure).
    reported = {} if acc is None else acc.get("reported", {})
    held = reported.get("bound_held_pct")
    ratio = reported.get("bound_rmse_ratio")
    return "n/a" if held is None else f"{held:.1f} % at {ratio or 0:.1f}x RMSE"


def markdown(results: list[dict[str, Any]]) -> str:
    """The per-run table: estimator and baseline side by side."""
    lines = [
        "| chemistry | cycle | temp | estimator RMSE / max (OCV start) | baseline RMSE / max "
        "| estimator to 2 % (from -20 %) | baseline to 2 % (from -20 %) "
        "| estimator bound held, median / RMSE (OCV start / -20 %) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        est, base = r["estimator"], r["baseline"]
        lines.append(
            f"| {r['chemistry']} | {r['cycle']} | {r['temp_c']:g} degC "
            f"| {_fmt(est['start'], 'rmse_pct')} / {_fmt(est['start'], 'max_pct')} "
            f"| {_fmt(base['start'], 'rmse_pct')} / {_fmt(base['start'], 'max_pct')} "
            f"| {_fmt(est['offset'], 'converge_s')} | {_fmt(base['offset'], 'converge_s')} "
            f"| {_held(est['start'])} / {_held(est['offset'])} |"
        )
    return "\n".join(lines)


def summary(results: list[dict[str, Any]]) -> str:
    """Per chemistry: worst case over cycles and temperatures against the targets."""
    lines = [
        "| chemistry | method | RMSE (worst run) | max error (worst run) "
        "| time to 2 % from -20 % (worst run) | targets | met |",
        "|---|---|---|---|---|---|---|",
    ]
    for chem in sorted({r["chemistry"] for r in results}):
        target = TARGETS[chem]
        runs = [r for r in results if r["chemistry"] == chem]
        for method in ("estimator", "baseline"):
            starts = [r[method]["start"] for r in runs]
            offsets = [r[method]["offset"] for r in runs]
            if any(s is None for s in starts):
                lines.append(f"| {chem} | {method} | n/a | n/a | n/a | | not measured |")
                continue
            rmse = max(s["rmse_pct"] for s in starts)
            worst = max(s["max_pct"] for s in starts)
            conv = [o["converge_s"] for o in offsets]
            slowest = None if None in conv else max(conv)
            met = rmse <= target["rmse_pct"] and worst <= target["max_pct"]
            want = f"RMSE <= {target['rmse_pct']:g} %, max <= {target['max_pct']:g} %"
            if target["converge_s"] is not None:
                met = met and slowest is not None and slowest <= target["converge_s"]
                want += f", 2 % in < {target['converge_s'] / 60:g} min"
            conv_text = "never" if slowest is None else f"{slowest / 60:.1f} min"
            lines.append(
                f"| {chem} | {method} | {rmse:.2f} % | {worst:.2f} % | {conv_text} | {want} "
                f"| {'met' if met else 'missed'} |"
            )
    return "\n".join(lines)


def evaluate(
    trace_path: Path,
    truth_path: Path,
    profile_path: Path,
    initial_error_pct: float,
    work_dir: Path,
) -> dict[str, dict[str, Any] | None]:
    """Baseline and (if available) estimator on one drive, from the OCV start and offset."""
    trace = read_trace(trace_path)
    times, truth = read_truth(truth_path)
    if not np.allclose(times, trace.time_s):
        raise ValueError(f"{truth_path} does not share the sample times of {trace_path}")
    profile = CellProfile.from_json(profile_path)
    offset_soc = float(truth[0]) - initial_error_pct
    out: dict[str, dict[str, Any] | None] = {}
    for name, initial in (("start", None), ("offset", offset_soc)):
        out[f"baseline_{name}"] = asdict(
            accuracy(times, baseline_soc(trace, profile, initial), truth)
        )
        if replay_available():
            est_csv = work_dir / f"{trace_path.stem}_{name}_est.csv"
            soc, reported = run_replay(trace_path, profile_path, truth_path, est_csv, initial)
            out[f"estimator_{name}"] = {**asdict(accuracy(times, soc, truth)), "reported": reported}
        else:
            out[f"estimator_{name}"] = None
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the pipeline; print the tables and write the JSON."""
    from tqdm import tqdm

    from benchmarks import reference_pybamm as ref

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chemistry", nargs="+", default=sorted(ref.CELLS))
    parser.add_argument("--cycles", nargs="+", default=list(ref.DRIVE_CYCLES))
    parser.add_argument("--temps", nargs="+", type=float, default=list(ref.TEMPERATURES_C))
    parser.add_argument("--initial-error", type=float, default=20.0, help="%%-points below truth")
    parser.add_argument("--repeats", type=int, help="drive-cycle repeats (default: down to ~10 %%)")
    parser.add_argument("--ship", action="store_true", help="copy the fitted profiles to profiles/")
    parser.add_argument("--out", type=Path, default=ref.BUILD_DIR / "soc_accuracy.json")
    args = parser.parse_args(argv)

    timings: dict[str, float] = {}
    results: list[dict[str, Any]] = []
    work = ref.BUILD_DIR / "work"
    work.mkdir(parents=True, exist_ok=True)
    if not replay_available():
        print("cellguard replay is not on this branch: estimator columns are n/a")
    for chem in args.chemistry:
        cell = ref.CELLS[chem]
        start = time.perf_counter()
        lab = [ref.write_lab_tests(cell, t, ref.BUILD_DIR / "lab") for t in ref.TEMPERATURES_C]
        drives = {
            (c, t): ref.write_drive(cell, c, t, ref.BUILD_DIR / "drive", args.repeats)
            for c in args.cycles
            for t in args.temps
        }
        timings[f"{chem} reference traces (PyBaMM or cache)"] = time.perf_counter() - start
        profile = ref.BUILD_DIR / "profiles" / SHIPPED[chem][0]
        profile.parent.mkdir(parents=True, exist_ok=True)
        timings[f"{chem} cellguard characterize"] = run_characterize(lab, chem, profile)
        if args.ship:
            shutil.copyfile(profile, REPO_ROOT / "profiles" / SHIPPED[chem][0])
        start = time.perf_counter()
        for (cycle, temp), (trace, truth) in tqdm(drives.items(), desc=f"{chem} replay"):
            figures = evaluate(trace, truth, profile, args.initial_error, work)
            results.append(
                {
                    "chemistry": chem,
                    "cycle": cycle,
                    "temp_c": temp,
                    "trace": str(trace),
                    "hours": float(read_trace(trace).time_s[-1] / SECONDS_PER_HOUR),
                    "estimator": {k: figures[f"estimator_{k}"] for k in ("start", "offset")},
                    "baseline": {k: figures[f"baseline_{k}"] for k in ("start", "offset")},
                }
            )
        timings[f"{chem} replay + baseline"] = time.perf_counter() - start
    print(markdown(results))
    print()
    print(summary(results))
    print()
    for stage, seconds in timings.items():
        print(f"{stage}: {seconds:.1f} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"results": results, "timings_s": timings}, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
