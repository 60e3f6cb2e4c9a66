"""benchmarks/float32_replay.py: the difference figures on known numbers, and a missing dataset
folder said clearly (exit 2)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from benchmarks.float32_replay import difference, main
from hil.cellmodel.replay import Estimates


def _est(soc: list[float]) -> Estimates:
    n = len(soc)
    return Estimates(np.arange(n) + 10.0, np.array(soc), np.zeros(n), np.zeros((n, 1)))


def test_difference_by_hand() -> None:
    """Max, RMS, counts and where the max is, the time from the first sample."""
    d = difference(_est([50.0, 49.99, 49.8, 49.7]), _est([50.0, 50.0, 49.95, 49.7]))
    assert d["max_pct"] == pytest.approx(0.15)
    assert d["rms_pct"] == pytest.approx(np.sqrt((0.01**2 + 0.15**2) / 4))
    assert d["samples_differing"] == 2 and d["samples_over_law"] == 1
    assert d["max_at_sample"] == 2 and d["max_at_s"] == 2.0
    assert d["max_unix_soc_pct"] == 49.95 and d["max_image_soc_pct"] == 49.8


def test_missing_dataset_is_said(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The dataset is not in the repository: without it the script says so and exits 2."""
    assert main(["--data", str(tmp_path / "none")]) == 2
    assert "not in the repository" in capsys.readouterr().err
