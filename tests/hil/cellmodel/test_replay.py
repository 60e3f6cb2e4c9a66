"""`cellguard replay`: trace validation (clear errors naming the line), the output format, and the
firmware's estimate on a plant-generated trace."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import numpy as np
import pytest

from hil.bench.dut import DEFAULT_HEAP
from hil.cellmodel.profiles import plant_profile
from hil.cellmodel.replay import (
    TraceError,
    accuracy,
    firmware_config,
    read_trace,
    read_truth,
    replay,
    simulate_trace,
    write_trace,
)
from hil.cli import main

HEAP = DEFAULT_HEAP  # the smallest board's heap, as the closed loop
SINGLE = "time_s,current_a,voltage_v,temperature_c\n"


def _write(tmp_path: Path, text: str, name: str = "t.csv") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (SINGLE + "0,1,3.7,25\n1,1,3.7\n", ":3: missing columns"),
        (SINGLE + "0,1,3.7,25,9\n", ":2: extra columns"),
        (SINGLE + "0,1,3.7,25\n1,x,3.7,25\n", ":3: current_a is not a number: 'x'"),
        (SINGLE + "0,1,3.7,25\n1,1,3.7,25\n0.5,1,3.7,25\n", ":4: time_s does not increase"),
        (SINGLE + "0,1,nan,25\n1,1,3.7,25\n", ":2: voltage_v is not finite"),
        ("time_s,current_a,voltage_v_1,voltage_v_3,temperature_c_1\n", ":1: columns"),
        ("time_s,current,voltage_v,temperature_c\n0,1,3.7,25\n", ":1: missing column(s) current_a"),
        ("time_s,current_a,voltage_v_1,temperature_c_1,voltage_v_2\n", ":1: expected"),
        ("", "empty file"),
        (SINGLE, "no samples"),
    ],
)
def test_malformed_traces_name_the_line(tmp_path: Path, text: str, needle: str) -> None:
    """Every malformed trace is refused with a message naming what is wrong and where."""
    with pytest.raises(TraceError, match=re.escape(needle)):
        read_trace(_write(tmp_path, text))


def test_lab_logs_are_taken_as_they_are(tmp_path: Path) -> None:
    """A step boundary logged twice in one instant keeps the later row; a 1.001 s step in a
    10 Hz log is jitter, not a gap; a real gap is reported, not refused (the firmware holds the
    sample over it)."""
    text = SINGLE + "0,0,3.7,25\n0.1,0,3.7,25\n0.1,2,3.6,25\n1.101,2,3.6,25\n4.1,2,3.5,25\n"
    tr = read_trace(_write(tmp_path, text))
    assert tr.time_s.tolist() == [0.0, 0.1, 1.101, 4.1]
    assert tr.current_a.tolist() == [0.0, 2.0, 2.0, 2.0] and tr.merged_rows == 1
    assert [(g.line, g.length_s) for g in tr.gaps] == [(6, pytest.approx(2.999))]
    gz = tmp_path / "t.csv.gz"
    with gzip.open(gz, "wt") as f:
        f.write(text)
    assert read_trace(gz).time_s.tolist() == tr.time_s.tolist()


def test_string_trace_and_truth_formats(tmp_path: Path) -> None:
    """A string trace gives N voltage and M temperature columns; per-cell truth must have N."""
    text = (
        "time_s,current_a,voltage_v_1,voltage_v_2,temperature_c_1\n"
        "0,1,3.7,3.71,25\n1,2,3.6,3.6,26\n"
    )
    tr = read_trace(_write(tmp_path, text))
    assert tr.cells == 2 and tr.temperature_c.shape == (2, 1) and not tr.single
    assert tr.voltage_v[0].tolist() == [3.7, 3.71]
    t, soc = read_truth(_write(tmp_path, "time_s,soc_true_1,soc_true_2\n0,50,51\n", "u.csv"), 2)
    assert soc.shape == (1, 2)
    with pytest.raises(TraceError, match="soc_true_1..2"):
        read_truth(_write(tmp_path, "time_s,soc_true_1\n0,50\n", "v.csv"), 2)


def test_accuracy_figures_by_hand() -> None:
    """RMSE, max and the time after which the error stays within 2 points, on known numbers."""
    from hil.cellmodel.replay import Estimates

    t = np.arange(5.0)
    bound = np.array([5.0, 5.0, 1.0, 1.0, 1.0])
    est = Estimates(t, np.array([60.0, 55.0, 51.0, 50.5, 49.0]), bound, np.zeros((5, 1)))
    fig = accuracy(est, t, np.full((5, 1), 50.0))
    assert fig["bound_held_pct"] == pytest.approx(80.0)  # all but the first (10 > 5)
    assert fig["soc_max_error_pct"] == pytest.approx(10.0)
    assert fig["soc_rmse_pct"] == pytest.approx(np.sqrt((100 + 25 + 1 + 0.25 + 1) / 5))
    assert fig["converge_2pct_s"] == pytest.approx(2.0)


def _drive(seconds: int, capacity_ah: float, seed: int) -> np.ndarray:
    # Current steps every 30 s between rest, 2C discharge and 1C charge: a drive with regen.
    rng = np.random.default_rng(seed)
    levels = np.array([0.0, 0.5, 1.0, 2.0, -0.5, -1.0]) * capacity_ah
    return np.repeat(rng.choice(levels, seconds // 30 + 1), 30)[:seconds]


def test_replay_recovers_the_plant_soc(tmp_path: Path) -> None:
    """On a 30-minute 1 Hz trace of the plant (4 NMC cells, sensor noise, offsets and a 10 mA
    current offset), started under load from OCV, the firmware's pack SOC stays within 1 % RMSE
    and 3 % max of the plant's mean cell SOC, and every cell within 3 %; its own bound holds
    after the first minute (the start under load is honestly wide)."""
    trace, truth = simulate_trace("NMC", 4, _drive(1800, 5.0, 1), soc=0.8, seed=2)
    est = replay(trace, firmware_config(plant_profile("NMC"), trace), heap=HEAP)
    fig = accuracy(est, trace.time_s, truth.mean(axis=1)[:, None])
    assert fig["soc_rmse_pct"] < 1.0 and fig["soc_max_error_pct"] < 3.0
    assert accuracy(est, trace.time_s, truth)["soc_max_error_pct"] < 3.0
    late = trace.time_s >= 60
    assert np.all(np.abs(est.soc - truth.mean(axis=1))[late] <= est.soc_bound[late])
    assert np.all((est.cell_soc >= 0) & (est.cell_soc <= 100))


def test_cli_replay_with_initial_soc_and_truth(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The command end to end on a one-cell trace started 20 points off: the output CSV has one
    row per sample, --json prints the figures, and the estimate converges within 2 % in under
    10 minutes."""
    trace, truth = simulate_trace("NMC", 1, _drive(1500, 5.0, 3), soc=0.7, seed=4)
    write_trace(tmp_path / "trace.csv", trace)
    truth_csv = "time_s,soc_true\n" + "".join(
        f"{t:g},{s:.4f}\n" for t, s in zip(trace.time_s, truth[:, 0], strict=True)
    )
    _write(tmp_path, truth_csv, "truth.csv")
    (tmp_path / "p.json").write_text(json.dumps(plant_profile("NMC")))
    start = float(truth[0, 0]) + 20.0
    rc = main(
        [
            "replay",
            str(tmp_path / "trace.csv"),
            "--profile",
            str(tmp_path / "p.json"),
            "--out",
            str(tmp_path / "est.csv"),
            "--truth",
            str(tmp_path / "truth.csv"),
            "--initial-soc",
            f"{start:.2f}",
            "--heap",
            HEAP,
            "--json",
        ]
    )
    assert rc == 0
    fig = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert fig["samples"] == 1500
    assert fig["converge_2pct_s"] is not None and fig["converge_2pct_s"] < 600
    lines = (tmp_path / "est.csv").read_text().splitlines()
    assert lines[0] == "time_s,soc" and len(lines) == 1501
    assert abs(float(lines[1].split(",")[1]) - start) < 0.5  # starts from the given SOC


def test_cli_refuses_a_malformed_trace(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Exit status 2 and the line on stderr; nothing written."""
    (tmp_path / "p.json").write_text(json.dumps(plant_profile("NMC")))
    bad = _write(tmp_path, SINGLE + "0,1,3.7,25\n1,1,oops,25\n")
    rc = main(
        [
            "replay",
            str(bad),
            "--profile",
            str(tmp_path / "p.json"),
            "--out",
            str(tmp_path / "o.csv"),
        ]
    )
    assert rc == 2 and "t.csv:3: voltage_v is not a number" in capsys.readouterr().err
    assert not (tmp_path / "o.csv").exists()


@pytest.mark.mcu
def test_the_replay_runs_on_the_image(bench_options) -> None:  # type: ignore[no-untyped-def]
    """With --dut qemu[:IMAGE] the replay runs on the Cortex-M image (float32, the trace on its
    console): an estimate for every sample, within 0.1 %-point of the unix port's on a 13 min
    4-cell trace (a rest, a 2 A discharge, a rest)."""
    target = bench_options["target"]
    if not target.startswith("qemu"):
        pytest.skip("runs the replay on the Cortex-M image: --dut qemu (make test does)")
    current = np.concatenate([np.zeros(60), np.full(600, 2.0), np.zeros(120)])
    trace, _ = simulate_trace("NMC", 4, current, soc=0.8, seed=1)
    cfg = firmware_config(plant_profile("NMC"), trace)
    on_unix = replay(trace, cfg, heap=HEAP)
    on_image = replay(trace, cfg, target=target, heap=bench_options["heap"])
    assert on_image.cell_soc.shape == on_unix.cell_soc.shape == (len(current), 4)
    assert on_unix.soc[-1] < on_unix.soc[0] - 2  # the discharge moved the SOC
    assert np.abs(on_image.soc - on_unix.soc).max() <= 0.1
    assert np.abs(on_image.cell_soc - on_unix.cell_soc).max() <= 0.1
