"""The run report: the plant's SOC spread in the series and summary, and the balancing plot."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hil.bench.loop import BmsStatus, StepRecord
from hil.bench.report import Recorder, write_report
from sim.pack import Pack, PackConfig
from sim.sensors import SensorModel


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
    files = write_report(rec, tmp_path, summary)
    assert tmp_path / "balancing.png" in files and (tmp_path / "balancing.png").stat().st_size > 0
