"""Plant-side faults (sim/faults.py): the physics each injected fault adds to the pack."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.faults import PlantFaults, Runaway
from sim.pack import Pack

DT = 0.1


def run(pack: Pack, faults: PlantFaults, seconds: float, t0: float = 0.0) -> float:
    """Step the pack at rest from plant time `t0`; returns the plant time reached."""
    t = t0
    for _ in range(round(seconds / DT)):
        faults.apply(pack, t, DT)
        pack.step(DT, 0.0)
        t += DT
    return t


@settings(max_examples=20, deadline=None)
@given(ohm=st.floats(0.5, 50.0), cell=st.integers(0, 7))
def test_internal_short_drains_its_cell_by_v_over_r_and_heats_it(
    make_pack: Callable[..., Pack], ohm: float, cell: int
) -> None:
    """Charge conservation and Joule's law: a resistor R inside a cell at rest drains
    ocv / R ampere-seconds per second from that cell only and heats it with ocv^2 / R."""
    healthy, shorted = make_pack(n_cells=8, seed=1), make_pack(n_cells=8, seed=1)
    faults = PlantFaults()
    faults.internal_short(cell, ohm)
    ocv = shorted.ocv_v[cell]
    run(healthy, PlantFaults(), 10.0)
    run(shorted, faults, 10.0)
    lost_ah = healthy.stored_charge_ah - shorted.stored_charge_ah
    assert lost_ah[cell] == pytest.approx(ocv / ohm * 10.0 / 3600.0, rel=0.01)
    others = np.delete(lost_ah, cell)
    np.testing.assert_allclose(others, 0.0, atol=1e-12)
    assert shorted.fault_heat_w[cell] == pytest.approx(shorted.ocv_v[cell] ** 2 / ohm, rel=0.01)
    assert shorted.temperature_c[cell] > healthy.temperature_c[cell]


def test_thermal_runaway_heats_by_several_degrees_per_second_and_the_voltage_falls(
    make_pack: Callable[..., Pack],
) -> None:
    """Runaway: within 10 s the cell heats faster than 3 degC/s, far faster than its
    neighbours, and its voltage falls as the growing internal short drains it."""
    pack = make_pack(n_cells=8, seed=2)
    faults = PlantFaults()
    faults.thermal_runaway(3, 0.0)
    v0 = pack.cell_voltage_v[3]
    t = run(pack, faults, 9.0)
    t9 = pack.temperature_c.copy()
    run(pack, faults, 1.0, t)
    rate = pack.temperature_c - t9
    assert rate[3] > 3.0
    assert rate[3] > 3 * max(rate[2], rate[4])
    assert pack.cell_voltage_v[3] < v0 - 0.02
    assert rate[2] > 0.0 and rate[4] > 0.0  # the neighbours warm through the chain


def test_runaway_short_falls_to_its_floor() -> None:
    r = Runaway(start_s=2.0, start_ohm=1.0, halving_s=1.0, min_ohm=0.05)
    assert r.short_ohm(0.0) == 1.0
    assert r.short_ohm(3.0) == pytest.approx(0.5)
    assert r.short_ohm(100.0) == 0.05
    assert r.heat_w(2.0, 70.0) == 0.0
    assert r.heat_w(100.0, 70.0) == pytest.approx(r.rate_c_per_s * 70.0)
    assert r.heat_w(100.0, 70.0, temp_c=r.burnt_c) == 0.0


def test_welded_contactor_stays_closed_once_closed(make_pack: Callable[..., Pack]) -> None:
    pack = make_pack(closed=False, n_cells=4)
    faults = PlantFaults()
    faults.weld("pos")
    faults.apply(pack, 0.0, DT)
    assert pack.contactors == (False, False, False)  # never closed: nothing to weld
    pack.set_contactors(True, False, True)
    faults.apply(pack, 0.1, DT)
    pack.set_contactors(False, False, False)
    faults.apply(pack, 0.2, DT)
    assert pack.contactors == (False, False, True)
    faults.clear()
    pack.set_contactors(False, False, False)
    faults.apply(pack, 0.3, DT)
    assert pack.contactors == (False, False, False)


def test_faults_reject_nonsense() -> None:
    faults = PlantFaults()
    with pytest.raises(ValueError):
        faults.internal_short(0, 0.0)
    with pytest.raises(ValueError):
        faults.weld("main")


def test_clear_leaves_a_healthy_pack(make_pack: Callable[..., Pack]) -> None:
    pack = make_pack(n_cells=4)
    faults = PlantFaults()
    faults.internal_short(1, 1.0)
    faults.thermal_runaway(2, 0.0)
    run(pack, faults, 1.0)
    faults.clear()
    faults.apply(pack, 1.0, DT)
    assert not pack.fault_leak_a.any() and not pack.fault_heat_w.any()
