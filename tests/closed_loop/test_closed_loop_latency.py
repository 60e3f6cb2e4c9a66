"""The fault-latency benchmark's trials as a CI check: every open-tier fault type of its table,
crossed at random instants within a cycle, opens the contactors within its qualification time
plus one cycle, not before its qualification time minus one cycle (earlier would mean another
fault tripped first), and reports its own fault bit."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.fault_latency import CELLS, FIRMWARE, PLANT, TYPES, run_trial
from firmware import config as fw_config
from hil.bench.inject import FaultInjector

TRIALS = 3


@pytest.mark.unix_only
def test_every_fault_type_opens_within_qualification_plus_one_cycle(bench_factory) -> None:  # type: ignore[no-untyped-def]
    bench = bench_factory(cells=CELLS, firmware_config=FIRMWARE, pack_config=PLANT)
    inject = FaultInjector(bench)
    cfg = fw_config.load({"cell_count": CELLS, "temp_count": CELLS, **FIRMWARE})
    rng = np.random.default_rng(0)
    for ft in TYPES:
        qualify = getattr(cfg, ft.qualify_key) if ft.qualify_key else 0
        for _ in range(TRIALS):
            trial = run_trial(bench, inject, cfg, ft, rng)
            assert trial.reported, ft.fault
            assert qualify - cfg.cycle_ms < trial.latency_ms <= qualify + cfg.cycle_ms, trial
