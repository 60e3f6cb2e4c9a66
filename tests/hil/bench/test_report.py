"""The run report: the series at 1 s, the per-cell file, and plots that carry the run in their
titles and stay readable at 96 cells (envelopes, not one line per cell)."""

from __future__ import annotations

import csv
import gzip
from pathlib import Path
from typing import Any

import matplotlib.figure
import numpy as np
import pytest

from hil.bench.loop import BmsStatus, StepRecord
from hil.bench.plots import PLOTS, _binned, write_plots
from hil.bench.report import SERIES_COLUMNS, Recorder, RunInfo, write_cells, write_series
from sim.pack import Pack, PackConfig
from sim.scenario import Limits
from sim.sensors import SensorModel

INFO = RunInfo(
    "default",
    96,
    "NMC",
    7,
    thresholds={"cell_ov_mv": 4250, "cell_uv_mv": 2700, "ot_discharge_dc": 600},
    heap_bytes=172032,
)


def test_soc_spread_column_summary_and_balancing_plot(tmp_path: Path) -> None:
    """soc_spread_pct is max - min of the plant's true cell SOC in %-points at every row; the
    summary carries its first and last value; balancing.png is written."""
    pack = Pack(PackConfig(n_cells=4, soc_sigma=0.03, seed=2))
    sensors = SensorModel(seed=2)
    rec = Recorder(cell_every=1)
    spreads = []
    for k in range(3):
        bleeding = np.array([True, False, False, k > 0])
        status = BmsStatus(balancing=bleeding, soc_pct=50.0)
        rec.add(StepRecord(float(k), 0.0, 0.0, status, sensors.measure(pack)), pack, "rest")
        spreads.append(100.0 * float(pack.soc.max() - pack.soc.min()))
        pack.set_balancing(bleeding)
        pack.step(600.0, 0.0)
    assert np.allclose(rec.column("soc_spread_pct"), spreads)
    assert list(rec.column("balancing_cells")) == [1, 2, 2]
    summary = rec.summary(wall_s=1.0, init_s=0.0)
    assert summary["soc_spread_start_pct"] == spreads[0]
    assert summary["soc_spread_end_pct"] == spreads[-1]
    path = PLOTS["balancing.png"](rec, INFO, tmp_path / "balancing.png")
    assert path.stat().st_size > 0


def _run(cells: int, steps: int) -> Recorder:
    """A synthetic run at 100 ms: rest, a discharge with an over-voltage warning in it, a
    charge with balancing; every status field the report reads is filled."""
    pack = Pack(PackConfig(n_cells=cells, seed=1))
    sensors = SensorModel(seed=1)
    rec = Recorder(cell_every=10)
    for k in range(steps):
        phase = "rest" if k < steps // 3 else "drive-wltc" if k < 2 * steps // 3 else "charge"
        load = {"rest": 0.0, "drive-wltc": 10.0, "charge": -5.0}[phase]
        bleeding = np.zeros(cells, dtype=bool)
        if phase == "charge":
            bleeding[(k // 50) % cells] = True
        faults = frozenset({"CellImbalance"}) if steps // 2 <= k < steps // 2 + 40 else frozenset()
        status = BmsStatus(
            state=3,
            contactor_neg=True,
            contactor_pos=True,
            fault_tier=1 if faults else 0,
            soc_pct=100 * float(pack.mean_soc) + 0.3,
            soc_bound_pct=2.0,
            pack_voltage_v=float(pack.pack_voltage_v),
            pack_current_a=load,
            cell_v_min=float(pack.cell_voltage_v.min()),
            cell_v_max=float(pack.cell_voltage_v.max()),
            temp_min_c=25.0,
            temp_max_c=26.0,
            limits=Limits(20.0, 50.0, 4.2 * cells),
            faults=faults,
            balancing=bleeding,
            cycle_time_us=300 + k % 50,
            heap_used=110_000 + k % 7,
            soh_capacity_pct=100.0,
            soh_capacity_confidence_pct=min(100.0, k / 10),
            soh_resistance_pct=101.0,
            soh_resistance_confidence_pct=50.0,
            sop_a=(30.0, 80.0, 25.0, 60.0),
            cell_soc_pct=100 * pack.soc + 0.2,
        )
        record = StepRecord(k * 0.1, load, load, status, sensors.measure(pack))
        rec.add(record, pack, phase)
        pack.set_balancing(bleeding)
        pack.step(0.1, load)
    return rec


@pytest.fixture(scope="module")
def run96() -> Recorder:
    return _run(96, 1800)


def test_series_is_one_row_per_second_and_keeps_short_faults(tmp_path: Path) -> None:
    """series.csv has one row per second of the run; a fault active for part of a second is in
    that second's row (OR over the second), not lost between samples."""
    rec = _run(4, 95)  # 9.5 s; the warning spans steps 47..86
    write_series(rec, tmp_path / "series.csv")
    write_cells(rec, tmp_path / "cells.csv.gz")
    with (tmp_path / "series.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == list(SERIES_COLUMNS)
    assert [float(r["t_s"]) for r in rows] == [float(s) for s in range(10)]
    with_fault = [int(float(r["t_s"])) for r in rows if int(r["faults"])]
    assert with_fault == [4, 5, 6, 7, 8]  # steps 47-49 fall in second 4, 80-86 in second 8
    assert rows[0]["state"] == "CLOSED" and rows[0]["segment"] == "rest"
    with gzip.open(tmp_path / "cells.csv.gz", "rt") as f:
        cells = list(csv.reader(f))
    assert len(cells) == 1 + 10 and len(cells[0]) == 1 + 4 * 4
    assert cells[0][1] == "cell1_v" and cells[0][-1] == "cell4_soc_bms"


def _figures(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    saved: list[Any] = []
    original = matplotlib.figure.Figure.savefig

    def capture(self: Any, *args: Any, **kwargs: Any) -> Any:
        saved.append(self)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", capture)
    return saved


def test_every_plot_names_the_run_and_reads_at_96_cells(
    run96: Recorder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each PNG's title carries scenario, cells, chemistry and seed; no axes draws one line per
    cell (96 cells are envelopes); the timeline lists only the fault that occurred."""
    figures = _figures(monkeypatch)
    files = write_plots(run96, tmp_path, INFO)
    assert [f.name for f in files] == [*PLOTS, "firmware.png"]
    assert len(figures) == len(files)
    for fig, path in zip(figures, files, strict=True):
        assert path.stat().st_size > 10_000
        title = fig._suptitle.get_text()
        assert "default · 96 × NMC · seed 7" in title, path.name
        for ax in fig.axes:
            assert len(ax.lines) < 20, (path.name, len(ax.lines))
    timeline = figures[[f.name for f in files].index("timeline.png")]
    labels = [t.get_text() for t in timeline.axes[-1].get_yticklabels()]
    assert labels == ["CellImbalance"]


def test_binned_lines_keep_every_spike() -> None:
    """Law: every sample lies within the minimum and maximum of its bin, so a one-sample spike
    survives the reduction to a few thousand points."""
    rng = np.random.default_rng(3)
    x = np.arange(100_000, dtype=float)
    y = rng.normal(size=x.size)
    y[54_321] = 40.0
    bx, lo, mean, hi = _binned(x, y, bins=500)
    assert len(bx) == 500 and hi.max() == 40.0
    edges = np.searchsorted(x, bx)
    for b in range(500):
        chunk = y[edges[b] : edges[b + 1] if b < 499 else None]
        assert lo[b] == chunk.min() and hi[b] == chunk.max()
        assert mean[b] == pytest.approx(chunk.mean())
