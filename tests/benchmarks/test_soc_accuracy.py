"""The SOC accuracy benchmark's pieces that run without PyBaMM: metrics, baseline, replay stage."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks import soc_accuracy as bench
from hil.cellmodel.ecm import simulate
from hil.cellmodel.profiles import SOC_GRID_PCT, CellProfile
from hil.cellmodel.traces import Trace, read_trace, write_trace
from sim.cells import NMC

SOC = np.array(SOC_GRID_PCT, dtype=float)


def cell() -> CellProfile:
    """A 5 Ah NMC-like cell at one temperature, without hysteresis."""
    flat = [[0.01] * len(SOC)]
    return CellProfile(
        name="t",
        chemistry="NMC",
        source="test",
        capacity_ah=5.0,
        voltage_min_v=3.0,
        voltage_max_v=4.2,
        coulombic_efficiency=1.0,
        soc_pct=SOC.tolist(),
        temperature_c=[25.0],
        ocv_v=[NMC.ocv_v(SOC / 100.0, 25.0).tolist()],
        hysteresis_v=[[0.0] * len(SOC)],
        hysteresis_rate_per_ah=10.0,
        r0_ohm=flat,
        r1_ohm=flat,
        tau1_s=[[10.0] * len(SOC)],
        r2_ohm=flat,
        tau2_s=[[100.0] * len(SOC)],
    )


def drive(profile: CellProfile, current: np.ndarray, soc0: float) -> tuple[Trace, np.ndarray]:
    """A noise-free trace of `current` (1 Hz) and its true SOC."""
    t = np.arange(len(current), dtype=float)
    v = simulate(profile, t, current, 25.0, soc0)
    moved = np.concatenate([[0.0], np.cumsum(current[:-1])])
    truth = soc0 - 100.0 * moved / (profile.capacity_ah * 3600.0)
    return Trace(Path("x.csv"), t, current, v, np.full(len(t), 25.0)), truth


def test_accuracy_converges_only_when_the_error_stays_in_the_band() -> None:
    t = np.arange(6.0)
    truth = np.full(6, 50.0)
    assert bench.accuracy(t, truth + [20, 5, 1, 0, -1, 0], truth).converge_s == 2.0
    assert bench.accuracy(t, truth + [1, 0, 0, 3, 0, 0], truth).converge_s == 4.0
    assert bench.accuracy(t, truth + [0, 0, 0, 0, 0, 3], truth).converge_s is None
    acc = bench.accuracy(t, truth + [0, 0, 0, 0, 3, -4], truth)
    assert acc.max_pct == 4.0 and acc.rmse_pct == pytest.approx(np.sqrt(25 / 6))


def test_baseline_counts_coulombs_while_the_cell_works() -> None:
    """Charge conservation: without a rest, the baseline's SOC falls by exactly the charge the
    current moved over the capacity, whatever it started from."""
    profile = cell()
    current = np.tile([5.0, 5.0, -2.0, 0.5], 900)
    trace, truth = drive(profile, current, 90.0)
    soc = bench.baseline_soc(trace, profile, initial_soc_pct=70.0)
    assert np.allclose(soc - 70.0, truth - 90.0, atol=1e-9)


def test_baseline_resets_from_the_ocv_after_the_rest_and_not_before() -> None:
    """A wrong SOC persists through a rest shorter than the baseline's rest time; after a longer
    rest the OCV table gives the SOC back (within 0.5 %-points: the RC pairs have relaxed)."""
    profile = cell()
    rest = int(bench.BASELINE_REST_S)
    current = np.concatenate([np.full(1800, 5.0), np.zeros(rest - 60), np.full(600, 5.0)])
    current = np.concatenate([current, np.zeros(rest + 300)])
    trace, truth = drive(profile, current, 90.0)
    soc = bench.baseline_soc(trace, profile, initial_soc_pct=70.0)
    short_rest_end = 1800 + rest - 60
    assert soc[short_rest_end] - truth[short_rest_end] == pytest.approx(-20.0)
    assert abs(soc[-1] - truth[-1]) < 0.5


def test_replay_stage_runs_the_cli_contract(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stage calls `cellguard replay TRACE --profile P --out EST --truth T --initial-soc X
    --json`, reads the estimate CSV and keeps the printed JSON (a stand-in command here, since
    `cellguard replay` lives on another branch)."""
    fake = tmp_path / "fake_cellguard.py"
    fake.write_text(
        "import json, sys\n"
        "a = sys.argv[1:]\n"
        "out = a[a.index('--out') + 1]\n"
        "open(out, 'w').write('time_s,soc\\n0,80\\n2,82\\n')\n"
        "print(json.dumps({'argv': a}))\n"
    )
    monkeypatch.setattr(bench, "CELLGUARD", [sys.executable, str(fake)])
    trace = tmp_path / "drive.csv"
    write_trace(trace, np.arange(3.0), np.zeros(3), np.full(3, 3.7), np.full(3, 25.0))
    soc, reported = bench.run_replay(
        trace, tmp_path / "p.json", tmp_path / "t.csv", tmp_path / "est.csv", 80.0
    )
    assert np.allclose(soc, [80.0, 81.0, 82.0])
    argv = reported["argv"]
    assert argv[:2] == ["replay", str(trace)] and "--json" in argv
    assert argv[argv.index("--initial-soc") + 1] == "80.00"
    assert argv[argv.index("--truth") + 1] == str(tmp_path / "t.csv")


def test_evaluate_and_tables_without_replay(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without `cellguard replay` the estimator columns say n/a and the baseline is measured."""
    monkeypatch.setattr(bench, "replay_available", lambda: False)
    profile = cell()
    path = tmp_path / "p.json"
    profile.to_json(path)
    current = np.concatenate([np.zeros(60), np.full(3600, 2.5), np.zeros(1200)])
    trace, truth = drive(profile, current, 95.0)
    write_trace(
        tmp_path / "d.csv", trace.time_s, trace.current_a, trace.voltage_v, trace.temperature_c
    )
    np.savetxt(
        tmp_path / "t.csv",
        np.column_stack([trace.time_s, truth]),
        delimiter=",",
        header="time_s,soc_true",
        comments="",
    )
    figures = bench.evaluate(tmp_path / "d.csv", tmp_path / "t.csv", path, 20.0, tmp_path)
    assert figures["estimator_start"] is None and figures["estimator_offset"] is None
    # started at rest: the first sample's OCV gives the SOC, then it counts coulombs
    assert figures["baseline_start"]["max_pct"] < 0.5
    # the 20 min rest at the end lets the baseline reset from the OCV
    assert figures["baseline_offset"]["converge_s"] == pytest.approx(3660 + 900, abs=2)
    row = {
        "chemistry": "NMC",
        "cycle": "wltc",
        "temp_c": 25.0,
        "estimator": {"start": None, "offset": None},
        "baseline": {"start": figures["baseline_start"], "offset": figures["baseline_offset"]},
    }
    table = bench.markdown([row])
    assert "| NMC | wltc | 25 degC | n/a / n/a |" in table
    assert "76.0 min" in table
    assert table.endswith("| n/a / n/a |")  # the bound-held column: no estimator here
    text = bench.summary([row])
    assert "| NMC | estimator | n/a" in text and "| NMC | baseline |" in text
    assert json.dumps(row)
    assert read_trace(tmp_path / "d.csv").time_s[-1] == len(current) - 1
