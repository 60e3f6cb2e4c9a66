"""Profile tables interpolate linearly in SOC and temperature and clamp at the axis ends."""

from __future__ import annotations

import json

import numpy as np
import pytest

from firmware import config
from firmware import profile as fw_profile
from hil import REPO_ROOT
from hil.cellmodel.profiles import CellProfile, interp_table


def test_bilinear_inside_and_clamped_outside() -> None:
    soc = np.array([0.0, 50.0, 100.0])
    temp = np.array([0.0, 20.0])
    table = np.array([[0.0, 1.0, 2.0], [10.0, 11.0, 12.0]])
    assert interp_table(table, soc, temp, 25.0, 10.0) == 5.5
    assert interp_table(table, soc, temp, [-10.0, 150.0], [-5.0, 40.0]).tolist() == [0.0, 12.0]
    one_temp = interp_table(table[:1], soc, temp[:1], [75.0, 75.0], [-20.0, 60.0])
    assert one_temp.tolist() == [1.5, 1.5]


@pytest.mark.parametrize("name", ["nmc21700_5ah", "lfp26650_2p3ah"])
def test_shipped_profiles_load_in_the_firmware(name: str) -> None:
    """The one validator of the format is the firmware's loader: every shipped profile passes
    it, alone and as the "profile" key of a configuration of its chemistry."""
    data = json.loads((REPO_ROOT / "profiles" / f"{name}.json").read_text())
    fw_profile.load(data)
    cfg = config.load({"chemistry": data["chemistry"], "profile": data})
    assert cfg.chemistry == data["chemistry"]
    written = CellProfile.from_json(REPO_ROOT / "profiles" / f"{name}.json").to_dict()
    assert written["capacity_ah"] == data["capacity_ah"]


def test_a_damaged_profile_is_refused_naming_the_key() -> None:
    data = json.loads((REPO_ROOT / "profiles" / "nmc21700_5ah.json").read_text())
    data["ocv_v"][1][3] = data["ocv_v"][1][2] - 0.01  # OCV must rise with SOC
    with pytest.raises(ValueError, match=r"ocv_v\[1\]\[3\]"):
        fw_profile.load(data)
