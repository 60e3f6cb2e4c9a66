"""Profile tables interpolate linearly in SOC and temperature and clamp at the axis ends."""

from __future__ import annotations

import numpy as np

from hil.profiles import interp_table


def test_bilinear_inside_and_clamped_outside() -> None:
    soc = np.array([0.0, 50.0, 100.0])
    temp = np.array([0.0, 20.0])
    table = np.array([[0.0, 1.0, 2.0], [10.0, 11.0, 12.0]])
    assert interp_table(table, soc, temp, 25.0, 10.0) == 5.5
    assert interp_table(table, soc, temp, [-10.0, 150.0], [-5.0, 40.0]).tolist() == [0.0, 12.0]
    one_temp = interp_table(table[:1], soc, temp[:1], [75.0, 75.0], [-20.0, 60.0])
    assert one_temp.tolist() == [1.5, 1.5]
