"""Run records -> time series, summary figures, CSV files and the plots of `hil.bench.plots`.

`Recorder` collects every control period in typed columns (8 bytes a value, so a 9 h run of
330 000 cycles stays near 100 MB) and every cell each second; `Recorder.summary()` computes the
figures the `cellguard sim` summary prints; `write_report()` writes into the report folder:

- `series.csv`: one row per second (the first control cycle of each second; `faults` is every
  fault active at any moment of that second, so a short one is not lost), columns in
  SERIES_COLUMNS;
- `cells.csv.gz`: per second, every cell's voltage, temperature and SOC (plant) and the SOC the
  BMS published for it (gzip: 16 cells over 9 h are 12 MB as text, 3 MB packed);
- `summary.json` and the PNG plots (`hil.bench.plots.write_plots`).

Usage:
    rec = Recorder()
    bench.listeners.append(lambda step: rec.add(step, bench.pack, scenario.segment_name))
    write_report(rec, Path("reports/latest"), rec.summary(wall_s), RunInfo(...))
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hil.bench.loop import BMS_STATES, FAULT_NAMES, StepRecord
from sim.pack import Pack

SERIES_COLUMNS = (
    "t_s",
    "segment",
    "load_a",
    "current_a",
    "bms_current_a",
    "soc_true_pct",
    "soc_bms_pct",
    "soc_bound_pct",
    "soc_spread_pct",
    "pack_v",
    "bms_pack_v",
    "cell_v_min",
    "cell_v_mean",
    "cell_v_max",
    "bms_cell_v_min",
    "bms_cell_v_max",
    "temp_min_c",
    "temp_mean_c",
    "temp_max_c",
    "bms_temp_min_c",
    "bms_temp_max_c",
    "charge_limit_a",
    "discharge_limit_a",
    "charge_10s_a",
    "discharge_10s_a",
    "charge_30s_a",
    "discharge_30s_a",
    "state",
    "contactor_neg",
    "contactor_pre",
    "contactor_pos",
    "contactors_closed",
    "fault_tier",
    "faults",
    "balancing_cells",
    "cycle_time_us",
    "heap_used",
    "soh_capacity_pct",
    "soh_capacity_confidence_pct",
    "soh_resistance_pct",
    "soh_resistance_confidence_pct",
)
"""Columns of the time series; units in the names (A, V, degC, %, %-points, us, bytes). Current
is positive for discharge; `bms_*` are what the BMS published on CAN, the others the plant's
truth (cell values: minimum, mean and maximum over the cells). `faults` is a bit mask of
FAULT_NAMES (bit = index, as BMS_Faults), `fault_tier` 0 none, 1 warning, 2 derate, 3 open;
`state` is the BmsState name in the CSV and its number in `Recorder.column`."""

_TEXT = {"segment"}  # columns stored as codes into a table of names
_INTS = set(SERIES_COLUMNS[SERIES_COLUMNS.index("state") : SERIES_COLUMNS.index("heap_used") + 1])
"""The integer columns (state .. heap_used, in a row in SERIES_COLUMNS)."""
_DECIMALS = {"t_s": 1, "cell_v": 4, "pack_v": 2, "temp": 2, "soc": 3, "_a": 3, "_pct": 2}
TIERS = ("none", "warning", "derate", "open")
BALANCE_BUCKET_S = 60.0
"""Width of the windows over which each cell's balancing duty (share of time bleeding) counts."""


@dataclass(frozen=True)
class RunInfo:
    """What a run was, for titles and the summary: every plot carries it, so a PNG shared alone
    still says which run it shows."""

    scenario: str
    cells: int
    chemistry: str
    seed: int
    thresholds: dict[str, float] = field(default_factory=dict)
    """Firmware limits drawn as lines: cell_ov_mv, cell_uv_mv, cell_charge_max_mv,
    cell_discharge_min_mv (mV), ot_charge_dc, ot_discharge_dc, ut_charge_dc, ut_discharge_dc
    (0.1 degC), as `firmware.config` resolved them for the run."""
    heap_bytes: int | None = None
    """The MicroPython heap the firmware ran with (drawn on the heap histogram)."""

    @property
    def title(self) -> str:
        """`default · 16 × NMC · seed 0`."""
        return f"{self.scenario} · {self.cells} × {self.chemistry} · seed {self.seed}"


THRESHOLD_KEYS = (
    "cell_ov_mv",
    "cell_uv_mv",
    "cell_charge_max_mv",
    "cell_discharge_min_mv",
    "ot_charge_dc",
    "ot_discharge_dc",
    "ut_charge_dc",
    "ut_discharge_dc",
)


@dataclass
class Recorder:
    """Collects a run's time series from bench steps and the plant's true state."""

    cell_every: int = 10
    """Every how many steps the per-cell arrays are kept (10: each second at 100 ms)."""
    columns: dict[str, array[Any]] = field(
        default_factory=lambda: {
            c: array("q" if c in _INTS or c in _TEXT else "d") for c in SERIES_COLUMNS
        }
    )
    names: dict[str, list[str]] = field(default_factory=lambda: {c: [] for c in _TEXT})
    cell_t: list[float] = field(default_factory=list)
    cell_v: list[np.ndarray] = field(default_factory=list)
    cell_temp: list[np.ndarray] = field(default_factory=list)
    cell_soc: list[np.ndarray] = field(default_factory=list)
    cell_soc_bms: list[np.ndarray] = field(default_factory=list)
    bleed_steps: dict[int, np.ndarray] = field(default_factory=dict)
    """Per BALANCE_BUCKET_S window: how many steps each cell bled."""
    bucket_steps: dict[int, int] = field(default_factory=dict)
    faults_seen: set[str] = field(default_factory=set)
    opens: int = 0
    _was_closed: bool = False

    def __len__(self) -> int:
        return len(self.columns["t_s"])

    def _code(self, column: str, text: str) -> int:
        table = self.names[column]
        if text not in table:
            table.append(text)
        return table.index(text)

    def add(self, rec: StepRecord, pack: Pack, segment: str) -> None:
        """Record one step."""
        s = rec.status
        v = pack.cell_voltage_v
        temps = pack.temperature_c
        soc = pack.soc
        self.faults_seen |= s.faults
        if self._was_closed and not s.closed:
            self.opens += 1
        self._was_closed = s.closed
        cell_soc_bms = s.cell_soc_pct
        values: dict[str, float | int] = {
            "t_s": rec.t_s,
            "segment": self._code("segment", segment),
            "load_a": rec.load_a,
            "current_a": rec.current_a,
            "bms_current_a": s.pack_current_a,
            "soc_true_pct": 100.0 * float(pack.mean_soc),
            "soc_bms_pct": s.soc_pct,
            "soc_bound_pct": s.soc_bound_pct,
            "soc_spread_pct": 100.0 * float(np.ptp(soc)),
            "pack_v": float(pack.pack_voltage_v),
            "bms_pack_v": s.pack_voltage_v,
            "cell_v_min": float(v.min()),
            "cell_v_mean": float(v.mean()),
            "cell_v_max": float(v.max()),
            "bms_cell_v_min": s.cell_v_min,
            "bms_cell_v_max": s.cell_v_max,
            "temp_min_c": float(temps.min()),
            "temp_mean_c": float(temps.mean()),
            "temp_max_c": float(temps.max()),
            "bms_temp_min_c": s.temp_min_c,
            "bms_temp_max_c": s.temp_max_c,
            "charge_limit_a": s.limits.charge_current_a,
            "discharge_limit_a": s.limits.discharge_current_a,
            "charge_10s_a": s.sop_a[0],
            "discharge_10s_a": s.sop_a[1],
            "charge_30s_a": s.sop_a[2],
            "discharge_30s_a": s.sop_a[3],
            "state": s.state,
            "contactor_neg": int(s.contactor_neg),
            "contactor_pre": int(s.contactor_pre),
            "contactor_pos": int(s.contactor_pos),
            "contactors_closed": int(s.closed),
            "fault_tier": s.fault_tier,
            "faults": sum(1 << i for i, n in enumerate(FAULT_NAMES) if n in s.faults),
            "balancing_cells": int(s.balancing.sum()),
            "cycle_time_us": s.cycle_time_us,
            "heap_used": s.heap_used,
            "soh_capacity_pct": s.soh_capacity_pct,
            "soh_capacity_confidence_pct": s.soh_capacity_confidence_pct,
            "soh_resistance_pct": s.soh_resistance_pct,
            "soh_resistance_confidence_pct": s.soh_resistance_confidence_pct,
        }
        for name, value in values.items():
            self.columns[name].append(value)  # type: ignore[arg-type]
        bucket = int(rec.t_s // BALANCE_BUCKET_S)
        if bucket not in self.bleed_steps:
            self.bleed_steps[bucket] = np.zeros(len(v), dtype=np.int32)
            self.bucket_steps[bucket] = 0
        if len(s.balancing) == len(v):
            self.bleed_steps[bucket] += s.balancing
        self.bucket_steps[bucket] += 1
        if (len(self) - 1) % self.cell_every == 0:
            self.cell_t.append(rec.t_s)
            self.cell_v.append(v.copy())
            self.cell_temp.append(temps.copy())
            self.cell_soc.append(100.0 * soc)
            self.cell_soc_bms.append(cell_soc_bms.copy())

    def column(self, name: str) -> np.ndarray:
        """One column of the series as an array (text columns as their names)."""
        data = np.frombuffer(self.columns[name], dtype=np.int64 if name in _INTS | _TEXT else float)
        if name in _TEXT:
            return np.array(self.names[name], dtype=object)[data] if len(data) else data
        return data.copy()

    def codes(self, name: str) -> tuple[np.ndarray, list[str]]:
        """A text column as codes and the names they index."""
        return np.frombuffer(self.columns[name], dtype=np.int64).copy(), list(self.names[name])

    def balancing_duty(self) -> tuple[np.ndarray, np.ndarray]:
        """Each cell's balancing duty per BALANCE_BUCKET_S window: (window start times in s,
        duty 0..1 as an array [window, cell])."""
        buckets = sorted(self.bleed_steps)
        if not buckets:
            return np.zeros(0), np.zeros((0, 0))
        duty = np.array([self.bleed_steps[b] / max(1, self.bucket_steps[b]) for b in buckets])
        return np.array(buckets) * BALANCE_BUCKET_S, duty

    def summary(self, wall_s: float, init_s: float = 60.0) -> dict[str, Any]:
        """Figures of the run. SOC error is BMS minus plant (mean cell SOC), after `init_s`."""
        t = self.column("t_s")
        err = self.column("soc_bms_pct") - self.column("soc_true_pct")
        valid = (t >= init_s) & np.isfinite(err)
        cells = np.array(self.cell_v) if self.cell_v else np.zeros((1, 1))
        cycle_us = self.column("cycle_time_us")
        sim_s = float(t[-1] + (t[1] - t[0])) if len(t) > 1 else 0.0
        return {
            "simulated_s": sim_s,
            "wall_s": wall_s,
            "realtime_ratio": sim_s / wall_s if wall_s > 0 else float("inf"),
            "steps": len(self),
            "soc_error_rmse_pct": float(np.sqrt(np.mean(err[valid] ** 2))) if valid.any() else None,
            "soc_error_max_pct": float(np.max(np.abs(err[valid]))) if valid.any() else None,
            "soc_true_start_pct": float(self.column("soc_true_pct")[0]),
            "soc_true_end_pct": float(self.column("soc_true_pct")[-1]),
            "soc_true_min_pct": float(self.column("soc_true_pct").min()),
            "soc_spread_start_pct": float(self.column("soc_spread_pct")[0]),
            "soc_spread_end_pct": float(self.column("soc_spread_pct")[-1]),
            "cell_spread_start_mv": float(1000 * np.ptp(cells[0])),
            "cell_spread_end_mv": float(1000 * np.ptp(cells[-1])),
            "temp_max_c": float(self.column("temp_max_c").max()),
            "faults_seen": sorted(self.faults_seen),
            "contactor_opens_while_running": self.opens,
            "firmware_cycle_us_median": float(np.median(cycle_us)),
            "firmware_cycle_us_max": int(cycle_us.max()),
            "firmware_heap_live_max": int(self.column("heap_used").max()),
            **self._estimation(err, valid),
        }

    def _estimation(self, err: np.ndarray, valid: np.ndarray) -> dict[str, Any]:
        """The estimator's own figures: its error bound (median, how often the error stayed
        within it, and the median over the RMS error of the same samples: a bound that means
        what it says is held >= 95 % of the time at <= 3x the RMS error) and the last SOH values
        it published."""
        bound = self.column("soc_bound_pct")
        ok = valid & np.isfinite(bound)
        last = {k: self.column(k)[-1] for k in ("soh_capacity_pct", "soh_resistance_pct")}
        rms = float(np.sqrt(np.mean(err[ok] ** 2))) if ok.any() else 0.0
        return {
            "soc_bound_median_pct": float(np.median(bound[ok])) if ok.any() else None,
            "soc_within_bound_pct": float(100 * np.mean(np.abs(err[ok]) <= bound[ok]))
            if ok.any()
            else None,
            "soc_bound_rmse_ratio": float(np.median(bound[ok])) / rms if rms > 0 else None,
            **{f"{k}_end": float(v) if np.isfinite(v) else None for k, v in last.items()},
        }


def _decimals(column: str) -> int:
    for key, n in _DECIMALS.items():
        if key in column:
            return n
    return 3


def per_second(rec: Recorder, dt_s: float) -> np.ndarray:
    """Indices of the first step of each second (all steps when a step is a second or more).
    Times are taken to the millisecond, so a step time a rounding error below a whole second
    still counts in it."""
    t = rec.column("t_s")
    if len(t) == 0:
        return np.zeros(0, dtype=int)
    ms = np.rint(t * 1000.0).astype(np.int64)
    second = ms // max(1000, round(dt_s * 1000))
    return np.flatnonzero(np.r_[True, second[1:] != second[:-1]])


def write_series(rec: Recorder, path: Path, dt_s: float = 0.1) -> None:
    """series.csv: one row per second; `faults` ORs every step of that second."""
    rows = per_second(rec, dt_s)
    data = {}
    for c in SERIES_COLUMNS:
        col = rec.column(c)
        if c == "faults":
            col = np.bitwise_or.reduceat(col, rows) if len(rows) else col
        else:
            col = col[rows]
        if c in _TEXT:
            data[c] = col
        elif c == "state":
            data[c] = [BMS_STATES[x] if 0 <= x < len(BMS_STATES) else str(x) for x in col]
        elif c in _INTS:
            data[c] = [str(int(x)) for x in col]
        else:
            n = _decimals(c)
            data[c] = ["" if not np.isfinite(x) else f"{x:.{n}f}" for x in col]
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(SERIES_COLUMNS)
        w.writerows(zip(*(data[c] for c in SERIES_COLUMNS), strict=True))


def write_cells(rec: Recorder, path: Path) -> None:
    """cells.csv.gz: per kept second, every cell's voltage, temperature, SOC (plant) and the SOC
    the BMS published for it (empty until it did)."""
    n = len(rec.cell_v[0]) if rec.cell_v else 0
    header = ["t_s"]
    for stem in ("v", "c", "soc", "soc_bms"):
        header += [f"cell{i + 1}_{stem}" for i in range(n)]
    text = io.StringIO()
    w = csv.writer(text)
    w.writerow(header)
    for t, v, c, soc, bms in zip(
        rec.cell_t, rec.cell_v, rec.cell_temp, rec.cell_soc, rec.cell_soc_bms, strict=True
    ):
        row = [f"{t:.1f}", *(f"{x:.4f}" for x in v), *(f"{x:.2f}" for x in c)]
        row += [f"{x:.2f}" for x in soc]
        row += ["" if not np.isfinite(x) else f"{x:.2f}" for x in bms]
        w.writerow(row)
    with gzip.open(path, "wt", newline="", compresslevel=6) as f:
        f.write(text.getvalue())


def write_report(
    rec: Recorder, out: Path, summary: dict[str, Any], info: RunInfo | None = None
) -> list[Path]:
    """Write the series, the cells, the summary and the plots into `out`; returns the files."""
    from hil.bench.plots import write_plots

    out.mkdir(parents=True, exist_ok=True)
    info = info or RunInfo(
        str(summary.get("scenario", "run")),
        int(summary.get("cells", len(rec.cell_v[0]) if rec.cell_v else 0)),
        str(summary.get("chemistry", "?")),
        int(summary.get("seed", 0)),
    )
    written = [out / "series.csv", out / "cells.csv.gz", out / "summary.json"]
    write_series(rec, written[0])
    write_cells(rec, written[1])
    written[2].write_text(json.dumps(summary, indent=2) + "\n")
    written += write_plots(rec, out, info)
    return written


def tier_name(tier: int) -> str:
    """FaultTier as text."""
    return TIERS[tier] if 0 <= tier < len(TIERS) else str(tier)
