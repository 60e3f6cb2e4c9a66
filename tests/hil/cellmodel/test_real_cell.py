"""A real cell in CI: the Panasonic NCR18650PF slice (tests/data/panasonic-18650pf, cited in its
README: P. Kollmeyer, Mendeley Data, 2018, doi:10.17632/wykht8y7tg.1). `characterize` takes the
lab files as the lab wrote them with its default rules, and the firmware replays the 25 degC US06
drive with a BMS-grade current offset within the bounds stated here; on the Cortex-M image
(float32, `-m mcu --dut qemu[:IMAGE]`) its SOC stays within 0.1 %-point of the unix port's."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from benchmarks.float32_replay import LAW_PCT, difference
from benchmarks.soc_accuracy import REPLAY_TIMING
from benchmarks.soc_real import FULL_BOUND_PCT, counting
from hil.cellmodel.characterize import characterize, read_lab
from hil.cellmodel.profiles import CellProfile
from hil.cellmodel.replay import firmware_config, replay
from hil.cellmodel.traces import PackTrace, read, read_trace, read_truth

SLICE = Path(__file__).resolve().parents[2] / "data" / "panasonic-18650pf"
OFFSET_PCT = 0.3
"""Current-sensor offset, % of 1C (a BMS-grade sensor, issue #12)."""
RMSE_PCT, MAX_PCT = 2.0, 3.0
"""Stated bounds of the replay from full (measured 1.28 % and 2.14 %, 2026-12-03)."""
FLOAT32_SAMPLES = 1500
"""The image's replay: the first 25 min of the US06 drive at 1 Hz (its runtime on QEMU)."""


def _from_full(profile: CellProfile) -> tuple[PackTrace, dict[str, object]]:
    """The US06 drive, its current read OFFSET_PCT of 1C high, and the replay configuration."""
    trace = read(SLICE / "dyn_25degC_US06.csv.gz")
    run = replace(trace, current_a=trace.current_a + OFFSET_PCT / 100 * profile.capacity_ah)
    return run, firmware_config(profile.to_dict(), run, REPLAY_TIMING)


@pytest.fixture(scope="module")
def profile() -> CellProfile:
    return characterize(
        read_lab(
            [SLICE / "lab_25degC_c20_discharge.csv.gz"],
            [SLICE / "lab_25degC_c20_charge.csv.gz"],
            [SLICE / "lab_25degC_hppc.csv.gz"],
        ),
        name="Panasonic NCR18650PF (slice)",
        chemistry="NMC",
        source="tests/data/panasonic-18650pf",
        voltage_min_v=2.5,
        voltage_max_v=4.2,
    )


def test_characterize_takes_the_lab_files_as_they_are(profile: CellProfile) -> None:
    """Grouped at the files' median temperatures (25.0-25.8 degC: one temperature, not rounded),
    the CC-only C/20 charge and discharge-only pulse sets accepted; the OCV within the cell's
    limits, increasing, and at 100 % (with hysteresis) the 4.184 V the rested full cell reads."""
    assert len(profile.temperature_c) == 1 and 25.0 < profile.temperature_c[0] < 26.0
    assert profile.capacity_ah == pytest.approx(2.995, abs=0.01)
    ocv = np.array(profile.ocv_v[0])
    assert np.all(np.diff(ocv) > 0) and 2.5 <= ocv[0] and ocv[-1] <= 4.2
    rested = read_trace(SLICE / "lab_25degC_c20_discharge.csv.gz").voltage_v[0]
    assert abs(ocv[-1] + profile.hysteresis_v[0][-1] - rested) < 0.015
    bands = profile.fit["rms_residual_mv_by_soc_band"]
    c20 = [v["10-90"] for k, v in bands.items() if "c20" in k]
    assert len(c20) == 2 and max(c20) < 25.0


def test_us06_replay_from_full_stays_within_its_bounds(profile: CellProfile) -> None:
    """From the full charge (100 %, the bound of a recognised full charge), the current read
    0.3 %-of-1C high: SOC RMSE <= 2 % and max <= 3 % against the truth, the firmware's bound
    holding >= 95 % of the time, and no more than 1.5 %-points RMSE worse than counting from the
    same start (measured 1.01 worse: the 2RC model misses this cell's drive by tens of mV and the
    model confidence keeps the filter near counting, not at it; issue #12's 0.3 is not met)."""
    run, config = _from_full(profile)
    t_truth, truth = read_truth(SLICE / "dyn_25degC_US06_truth.csv.gz", 1)
    est = replay(run, config, initial_soc_pct=100.0, initial_bound_pct=FULL_BOUND_PCT)
    ref = np.interp(run.time_s, t_truth, truth[:, 0])
    err = est.soc - ref
    rmse = float(np.sqrt(np.mean(err**2)))
    base = counting(run, profile, 100.0) - ref
    print(f"rmse {rmse:.3f} max {np.abs(err).max():.3f} base {np.sqrt(np.mean(base**2)):.3f}")
    assert rmse <= RMSE_PCT and np.abs(err).max() <= MAX_PCT
    assert np.mean(np.abs(err) <= est.soc_bound) >= 0.95
    assert rmse <= float(np.sqrt(np.mean(base**2))) + 1.5


@pytest.mark.mcu
def test_float32_image_follows_the_unix_port(
    profile: CellProfile, bench_options: dict[str, Any]
) -> None:
    """Issue #11: on the Cortex-M image (float32 for every intermediate result; the unix port's
    are doubles) the SOC of the first 25 min of the drive from full stays within 0.1 %-point of
    the unix port's at every sample (benchmarks/float32_replay.py runs the 3 h version)."""
    target = bench_options["target"]
    if not target.startswith("qemu"):
        pytest.skip("runs the replay on the Cortex-M image: --dut qemu (make test does)")
    run, config = _from_full(profile)
    s = slice(0, FLOAT32_SAMPLES)
    run = replace(
        run,
        time_s=run.time_s[s],
        current_a=run.current_a[s],
        voltage_v=run.voltage_v[s],
        temperature_c=run.temperature_c[s],
    )
    kw = {"initial_soc_pct": 100.0, "initial_bound_pct": FULL_BOUND_PCT}
    on_unix = replay(run, config, **kw)
    on_image = replay(run, config, target=target, heap=bench_options["heap"], **kw)
    assert on_unix.soc[-1] < on_unix.soc[0] - 10  # the drive moved the SOC
    d = difference(on_image, on_unix)
    assert d["max_pct"] <= LAW_PCT, d
