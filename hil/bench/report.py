"""Run records -> time series, summary figures, CSV and PNG plots.

`Recorder` collects one row per control period (cell voltages every `cell_every` rows, so long
192-cell runs stay small); `Recorder.summary()` computes the figures the `cellguard sim` summary
prints; `write_report()` writes `series.csv`, `cells.csv`, `summary.json` and the plots.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hil.bench.loop import FAULT_NAMES, StepRecord
from sim.pack import Pack

SERIES_COLUMNS = (
    "t_s",
    "segment",
    "load_a",
    "current_a",
    "soc_true_pct",
    "soc_bms_pct",
    "soc_spread_pct",
    "pack_v",
    "cell_v_min",
    "cell_v_max",
    "temp_max_c",
    "charge_limit_a",
    "discharge_limit_a",
    "state",
    "contactors_closed",
    "faults",
    "balancing_cells",
    "cycle_time_us",
    "heap_used",
    "soc_bound_pct",
    "soh_capacity_pct",
    "soh_resistance_pct",
)


@dataclass
class Recorder:
    """Collects the run's time series from bench steps and the plant's true state."""

    cell_every: int = 10
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    cell_t: list[float] = field(default_factory=list)
    cell_v: list[np.ndarray] = field(default_factory=list)
    cell_temp: list[np.ndarray] = field(default_factory=list)
    faults_seen: set[str] = field(default_factory=set)
    opens: int = 0
    _was_closed: bool = False

    def add(self, rec: StepRecord, pack: Pack, segment: str) -> None:
        """Record one step."""
        s = rec.status
        voltages = pack.cell_voltage_v
        temps = pack.temperature_c
        fault_bits = sum(1 << i for i, n in enumerate(FAULT_NAMES) if n in s.faults)
        self.faults_seen |= s.faults
        if self._was_closed and not s.closed:
            self.opens += 1
        self._was_closed = s.closed
        self.rows.append(
            (
                rec.t_s,
                segment,
                rec.load_a,
                rec.current_a,
                100.0 * float(pack.mean_soc),
                s.soc_pct,
                100.0 * float(np.ptp(pack.soc)),
                float(pack.pack_voltage_v),
                float(voltages.min()),
                float(voltages.max()),
                float(temps.max()),
                s.limits.charge_current_a,
                s.limits.discharge_current_a,
                s.state_name,
                int(s.closed),
                fault_bits,
                int(s.balancing.sum()),
                s.cycle_time_us,
                s.heap_used,
                s.soc_bound_pct,
                s.soh_capacity_pct,
                s.soh_resistance_pct,
            )
        )
        if len(self.rows) % self.cell_every == 1 or self.cell_every == 1:
            self.cell_t.append(rec.t_s)
            self.cell_v.append(voltages.copy())
            self.cell_temp.append(temps.copy())

    def column(self, name: str) -> np.ndarray:
        """One column of the series as an array."""
        i = SERIES_COLUMNS.index(name)
        return np.array([r[i] for r in self.rows])

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
            "steps": len(self.rows),
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
        """The estimator's own figures: its error bound (median, and how often the error stayed
        within it) and the last SOH values it published."""
        bound = self.column("soc_bound_pct")
        ok = valid & np.isfinite(bound)
        last = {k: self.column(k)[-1] for k in ("soh_capacity_pct", "soh_resistance_pct")}
        return {
            "soc_bound_median_pct": float(np.median(bound[ok])) if ok.any() else None,
            "soc_within_bound_pct": float(100 * np.mean(np.abs(err[ok]) <= bound[ok]))
            if ok.any()
            else None,
            **{f"{k}_end": float(v) if np.isfinite(v) else None for k, v in last.items()},
        }


def write_report(rec: Recorder, out: Path, summary: dict[str, Any]) -> list[Path]:
    """Write the series, summary and plots into `out`; returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "series.csv", out / "cells.csv", out / "summary.json"]
    with (out / "series.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(SERIES_COLUMNS)
        w.writerows(rec.rows)
    with (out / "cells.csv").open("w", newline="") as f:
        w = csv.writer(f)
        n = len(rec.cell_v[0]) if rec.cell_v else 0
        w.writerow(
            ["t_s"] + [f"cell{i + 1}_v" for i in range(n)] + [f"cell{i + 1}_c" for i in range(n)]
        )
        for t, v, c in zip(rec.cell_t, rec.cell_v, rec.cell_temp, strict=True):
            w.writerow([f"{t:.1f}"] + [f"{x:.4f}" for x in v] + [f"{x:.2f}" for x in c])
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    written += _plots(rec, out)
    return written


def _plots(rec: Recorder, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t_h = rec.column("t_s") / 3600.0
    files = []

    def save(fig: Any, name: str) -> None:
        fig.tight_layout()
        path = out / name
        fig.savefig(path, dpi=110)
        plt.close(fig)
        files.append(path)

    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
    ax.plot(t_h, rec.column("soc_true_pct"), label="plant (mean cell SOC)")
    ax.plot(t_h, rec.column("soc_bms_pct"), "--", label="BMS estimate")
    ax.set_ylabel("SOC [%]")
    ax.legend()
    ax.grid(True)
    ax2.plot(t_h, rec.column("soc_bms_pct") - rec.column("soc_true_pct"), color="C3")
    bound = rec.column("soc_bound_pct")
    ax2.fill_between(t_h, -bound, bound, color="C0", alpha=0.15, label="BMS error bound")
    ax2.legend()
    ax2.set_ylabel("SOC error [%-points]")
    ax2.set_xlabel("time [h]")
    ax2.grid(True)
    save(fig, "soc.png")

    ct = np.array(rec.cell_t) / 3600.0
    fig, ax = plt.subplots(figsize=(10, 5))
    ax.plot(ct, np.array(rec.cell_v), linewidth=0.6)
    ax.set_ylabel("cell voltage [V]")
    ax.set_xlabel("time [h]")
    ax.set_title("cell terminal voltages (plant)")
    ax.grid(True)
    save(fig, "cell_voltages.png")

    fig, ax = plt.subplots(figsize=(10, 5))
    ax.plot(ct, np.array(rec.cell_temp), linewidth=0.6)
    ax.set_ylabel("cell temperature [°C]")
    ax.set_xlabel("time [h]")
    ax.grid(True)
    save(fig, "temperatures.png")

    fig, ax = plt.subplots(figsize=(10, 5))
    ax.plot(t_h, rec.column("current_a"), label="pack current (+ = discharge)", linewidth=0.6)
    ax.plot(t_h, rec.column("discharge_limit_a"), label="BMS discharge limit")
    ax.plot(t_h, -rec.column("charge_limit_a"), label="BMS charge limit (negated)")
    ax.set_ylabel("current [A]")
    ax.set_xlabel("time [h]")
    ax.legend()
    ax.grid(True)
    save(fig, "current_limits.png")

    faults = rec.column("faults").astype(int)
    fig, (ax, ax2) = plt.subplots(
        2, 1, figsize=(10, 5), sharex=True, gridspec_kw={"height_ratios": [1, 2]}
    )
    ax.step(t_h, rec.column("contactors_closed"), where="post")
    ax.set_yticks([0, 1], ["open", "closed"])
    ax.set_ylabel("contactors")
    ax.grid(True)
    for i in range(len(FAULT_NAMES)):
        active = (faults >> i) & 1
        if active.any():
            ax2.fill_between(t_h, i - 0.4, i - 0.4 + 0.8 * active, step="post")
    ax2.set_yticks(range(len(FAULT_NAMES)), FAULT_NAMES, fontsize=7)
    ax2.set_xlabel("time [h]")
    ax2.set_title("active faults")
    ax2.grid(True, axis="x")
    save(fig, "timeline.png")

    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(10, 5), sharex=True)
    ax.plot(t_h, rec.column("soc_spread_pct"), color="C2")
    ax.set_ylabel("SOC spread [%-points]")
    ax.set_title("plant cell SOC spread (max - min) and balancing activity")
    ax.grid(True)
    ax2.step(t_h, rec.column("balancing_cells"), where="post", color="C1")
    ax2.set_ylabel("cells bleeding")
    ax2.set_xlabel("time [h]")
    ax2.grid(True)
    save(fig, "balancing.png")
    return files
