from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.pack import MAX_CELLS, Pack, PackConfig

currents = st.floats(-10.0, 10.0)
open_contactors = st.tuples(st.booleans(), st.booleans(), st.booleans()).filter(
    lambda c: not (c[0] and c[2])
)


@pytest.mark.parametrize(
    "bad",
    [
        {"n_cells": 0},
        {"n_cells": MAX_CELLS + 1},
        {"chemistry": "NCA"},
        {"soc_mean": 1.5},
        {"capacity_sigma": -0.1},
        {"bleed_ohm": 0.0},
    ],
)
def test_config_rejects_nonsense(bad: dict) -> None:
    with pytest.raises(ValueError):
        PackConfig(**bad)


def test_seed_fixes_the_spread() -> None:
    a, b, c = Pack(PackConfig(seed=3)), Pack(PackConfig(seed=3)), Pack(PackConfig(seed=4))
    np.testing.assert_array_equal(a.capacity_ah, b.capacity_ah)
    np.testing.assert_array_equal(a.soc, b.soc)
    assert not np.array_equal(a.capacity_ah, c.capacity_ah)


def test_spreads_follow_the_config() -> None:
    pack = Pack(PackConfig(n_cells=MAX_CELLS, soc_mean=0.6))
    assert np.std(pack.capacity_ah / 5.0) == pytest.approx(0.02, rel=0.3)
    assert np.std(pack.resistance_scale) == pytest.approx(0.05, rel=0.3)
    assert np.mean(pack.soc) == pytest.approx(0.6, abs=0.005)
    assert np.all((pack.leak_a >= 0.0) & (pack.leak_a <= 0.5e-3))


def test_initial_state_is_at_rest(make_pack) -> None:
    pack = make_pack(closed=False, ambient_c=10.0)
    assert pack.current_a == 0.0
    assert pack.link_voltage_v == 0.0
    np.testing.assert_array_equal(pack.temperature_c, 10.0)
    np.testing.assert_allclose(pack.cell_voltage_v, pack.ocv_v)
    assert pack.pack_voltage_v == pytest.approx(pack.cell_voltage_v.sum())


def test_commands_are_validated(make_pack) -> None:
    pack = make_pack(n_cells=4)
    with pytest.raises(ValueError, match="shape"):
        pack.set_balancing([True, False])
    with pytest.raises(ValueError, match="dt_s"):
        pack.step(0.0, 1.0)


@settings(max_examples=40, deadline=None)
@given(
    n_cells=st.integers(1, 8),
    steps=st.lists(st.tuples(st.floats(0.01, 1.0), currents), min_size=1, max_size=20),
)
def test_charge_is_conserved(make_pack, n_cells: int, steps: list) -> None:
    """With contactors closed, no balancing and no leakage, each cell's stored charge changes
    by minus the integral of the pack current; charging stores only the coulombic efficiency's
    share."""
    pack = make_pack(n_cells=n_cells, leak_max_a=0.0)
    before = pack.stored_charge_ah
    for dt_s, current in steps:
        pack.step(dt_s, current)
    eta = pack.chemistry.coulombic_efficiency
    expected = -sum(dt * (i if i > 0 else eta * i) for dt, i in steps) / 3600.0
    np.testing.assert_allclose(pack.stored_charge_ah - before, expected, atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(contactors=open_contactors, load=currents, dt_s=st.floats(0.01, 1.0))
def test_open_contactors_carry_no_current(make_pack, contactors, load: float, dt_s) -> None:
    """Unless both main contactors are closed, no load current flows: only self-discharge
    drains the cells."""
    pack = make_pack()
    pack.set_contactors(*contactors)
    before = pack.stored_charge_ah
    pack.step(dt_s, load)
    assert pack.current_a == 0.0
    np.testing.assert_allclose(
        before - pack.stored_charge_ah, pack.leak_a * dt_s / 3600.0, atol=1e-15
    )


@settings(max_examples=20, deadline=None)
@given(cell=st.integers(0, 7), duration_s=st.integers(1, 600), load=currents)
def test_bleeding_cell_loses_charge_faster(make_pack, cell: int, duration_s: int, load) -> None:
    """A cell with its bleed resistor on loses more charge than the same cell with it off,
    by V/R_bleed; the other cells are unaffected."""
    plain, bled = make_pack(n_cells=8), make_pack(n_cells=8)
    mask = np.zeros(8, dtype=bool)
    mask[cell] = True
    bled.set_balancing(mask)
    bleed_as = 0.0
    for _ in range(duration_s):
        plain.step(1.0, load)
        bled.step(1.0, load)
        bleed_as += bled.cell_voltage_v[cell] / bled.config.bleed_ohm
    extra_ah = plain.stored_charge_ah - bled.stored_charge_ah
    assert extra_ah[cell] == pytest.approx(bleed_as / 3600.0, rel=0.01)
    np.testing.assert_allclose(np.delete(extra_ah, cell), 0.0, atol=1e-15)


def test_bleed_current_follows_terminal_voltage(make_pack) -> None:
    pack = make_pack(n_cells=4)
    pack.set_balancing([False, True, True, False])
    pack.step(0.1, 2.0)
    expected = np.array([0.0, 1.0, 1.0, 0.0]) * pack.cell_voltage_v / pack.config.bleed_ohm
    np.testing.assert_allclose(pack.bleed_current_a, expected)


@settings(max_examples=15, deadline=None)
@given(low=st.floats(0.5, 10.0), high=st.floats(0.5, 10.0), charge=st.booleans())
def test_temperature_rises_with_current(make_pack, low: float, high: float, charge) -> None:
    """Joule heat grows with |I|: after the same time a cell run at a larger current magnitude
    is hotter, and both are above ambient."""
    low, high = sorted((low, high))
    if high - low < 0.1:
        high = low + 0.1
    sign = -1.0 if charge else 1.0
    gentle, hard = make_pack(n_cells=4), make_pack(n_cells=4)
    for _ in range(300):
        gentle.step(1.0, sign * low)
        hard.step(1.0, sign * high)
    assert np.all(hard.temperature_c > gentle.temperature_c)
    assert np.all(gentle.temperature_c > gentle.config.ambient_c)


def test_temperature_relaxes_to_ambient_at_rest(make_pack) -> None:
    pack = make_pack(ambient_c=5.0, soc_mean=0.5)
    for _ in range(600):
        pack.step(1.0, 10.0)
    assert np.all(pack.temperature_c > 8.0)
    pack.set_contactors(False, False, False)
    for _ in range(10_000):
        pack.step(1.0, 10.0)
    np.testing.assert_allclose(pack.temperature_c, 5.0, atol=0.01)


def test_stiff_thermal_network_stays_stable(make_pack) -> None:
    """Even with conductances far beyond the explicit limit for 1 s steps, temperatures relax
    monotonically: they never undershoot ambient or oscillate."""
    pack = make_pack(neighbour_w_per_k=200.0, ambient_w_per_k=100.0, soc_mean=0.5)
    pack.set_balancing(np.arange(16) % 2 == 0)
    for _ in range(30):
        pack.step(1.0, 20.0)
    peak = pack.temperature_c.max()
    pack.set_contactors(False, False, False)
    previous = pack.temperature_c
    for _ in range(30):
        pack.step(1.0, 0.0)
        assert np.all(pack.temperature_c >= pack.config.ambient_c - 1e-9)
        assert np.all(pack.temperature_c <= previous + 1e-3)
        previous = pack.temperature_c
    assert peak > pack.config.ambient_c


def test_rc_voltages_relax_to_zero_at_rest(make_pack) -> None:
    pack = make_pack(soc_mean=0.6)
    for _ in range(300):
        pack.step(1.0, 5.0)
    assert np.all(pack.rc_voltage_v > 0.01)
    assert np.all(pack.cell_voltage_v < pack.ocv_v)
    pack.set_contactors(False, False, False)
    for _ in range(3000):
        pack.step(1.0, 0.0)
    np.testing.assert_allclose(pack.rc_voltage_v, 0.0, atol=1e-6)
    np.testing.assert_allclose(pack.cell_voltage_v, pack.ocv_v, atol=1e-6)


def test_charging_lifts_terminal_voltage_above_ocv(make_pack) -> None:
    pack = make_pack(soc_mean=0.5)
    for _ in range(30):
        pack.step(1.0, -5.0)
    assert np.all(pack.rc_voltage_v < 0.0)
    assert np.all(pack.cell_voltage_v > pack.ocv_v)


@settings(max_examples=25, deadline=None)
@given(n_cells=st.integers(1, 16), load=currents, soc=st.floats(0.1, 0.9))
def test_step_size_does_not_matter(make_pack, n_cells: int, load: float, soc: float) -> None:
    """One 1 s step and ten 0.1 s steps at the same current reach nearly the same state."""
    coarse, fine = (make_pack(n_cells=n_cells, soc_mean=soc) for _ in range(2))
    for pack in (coarse, fine):
        pack.set_balancing(np.arange(n_cells) % 3 == 0)
    initial_ah = coarse.stored_charge_ah
    coarse.step(1.0, load)
    for _ in range(10):
        fine.step(0.1, load)
    moved_coarse = coarse.stored_charge_ah - initial_ah
    moved_fine = fine.stored_charge_ah - initial_ah
    np.testing.assert_allclose(moved_coarse, moved_fine, rtol=1e-3, atol=1e-9)
    np.testing.assert_allclose(coarse.rc_voltage_v, fine.rc_voltage_v, atol=2e-4)
    np.testing.assert_allclose(coarse.temperature_c, fine.temperature_c, atol=1e-3)
    np.testing.assert_allclose(coarse.cell_voltage_v, fine.cell_voltage_v, atol=5e-4)


def test_precharge_then_close_then_open(make_pack) -> None:
    pack = make_pack(closed=False)
    pack.set_contactors(True, True, False)
    elapsed_s = 0.0
    while pack.link_voltage_v < 0.95 * pack.pack_voltage_v:
        pack.step(0.01, 50.0)
        elapsed_s += 0.01
    assert 0.2 <= elapsed_s <= 0.5
    assert pack.current_a == 0.0
    pack.set_contactors(True, True, True)
    pack.step(0.01, 5.0)
    assert pack.current_a == 5.0
    assert pack.link_voltage_v == pack.pack_voltage_v
    pack.set_contactors(False, False, False)
    closed_v = pack.link_voltage_v
    for _ in range(100):
        pack.step(0.1, 5.0)
    assert 0.0 < pack.link_voltage_v < 0.9 * closed_v


def test_abuse_drives_voltage_past_the_limits(make_pack) -> None:
    """SOC is clamped to 0..1 but the voltage keeps moving, so the BMS sees the abuse."""
    pack = make_pack(n_cells=2, soc_mean=0.02, soc_sigma=0.0)
    for _ in range(200):
        pack.step(1.0, 5.0)
    assert np.all(pack.soc == 0.0)
    assert np.all(pack.cell_voltage_v < pack.chemistry.v_min_v)
    pack = make_pack(n_cells=2, soc_mean=0.98, soc_sigma=0.0)
    for _ in range(200):
        pack.step(1.0, -5.0)
    assert np.all(pack.soc == 1.0)
    assert np.all(pack.cell_voltage_v > pack.chemistry.v_max_v)


def test_pack_soc_is_the_usable_window(make_pack) -> None:
    uniform = make_pack(capacity_sigma=0.0, soc_sigma=0.0, soc_mean=0.7)
    assert uniform.pack_soc == pytest.approx(0.7)
    assert uniform.mean_soc == pytest.approx(0.7)
    spread = make_pack(soc_mean=0.3, soc_sigma=0.05, leak_max_a=0.0)
    while spread.soc.min() > 0.0:
        spread.step(1.0, 20.0)
    assert spread.pack_soc == 0.0
    assert spread.mean_soc > 0.0
    total = spread.stored_charge_ah.clip(0.0, spread.capacity_ah).sum()
    assert spread.mean_soc == pytest.approx(total / spread.capacity_ah.sum())


def test_nominal_energy(make_pack) -> None:
    assert make_pack(capacity_sigma=0.0).energy_wh == pytest.approx(16 * 5.0 * 3.76, rel=0.02)
