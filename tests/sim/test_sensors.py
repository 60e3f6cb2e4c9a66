from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.sensors import SensorModel

EXACT = {
    "cell_noise_v": 0.0,
    "cell_offset_sigma_v": 0.0,
    "temp_noise_c": 0.0,
    "current_noise_a": 0.0,
    "current_offset_a": 0.0,
    "pack_noise_v": 0.0,
}


@pytest.fixture
def loaded(make_pack):
    pack = make_pack(n_cells=8)
    for _ in range(20):
        pack.step(0.5, 7.3)
    return pack


def test_noiseless_model_only_quantises(loaded) -> None:
    meas = SensorModel(**EXACT).measure(loaded)
    assert meas.cell_mv.dtype.kind == "i" and meas.temp_dc.dtype.kind == "i"
    assert isinstance(meas.current_ma, int) and isinstance(meas.pack_mv, int)
    np.testing.assert_array_equal(meas.cell_mv, np.rint(loaded.cell_voltage_v * 1000))
    np.testing.assert_array_equal(meas.temp_dc, np.rint(loaded.temperature_c * 10))
    assert meas.current_ma == 7300
    assert meas.pack_mv == 10 * round(loaded.pack_voltage_v * 100)
    assert meas.link_mv == 10 * round(loaded.link_voltage_v * 100)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_errors_stay_within_noise_bounds(make_pack, seed: int) -> None:
    """Every reading is within quantisation + offset + 6 sigma of noise of the truth, and the
    pack and link readings sit on the 10 mV grid."""
    pack = make_pack(n_cells=16)
    pack.step(1.0, -3.0)
    model = SensorModel(seed=seed)
    meas = model.measure(pack)
    cell_bound_mv = 0.5 + 6 * np.hypot(1.0, 0.5)
    assert np.all(np.abs(meas.cell_mv - pack.cell_voltage_v * 1000) <= cell_bound_mv)
    assert np.all(np.abs(meas.temp_dc - pack.temperature_c * 10) <= 0.5 + 6 * 2.0)
    assert abs(meas.current_ma - pack.current_a * 1000) <= 0.5 + 10 + 6 * 20
    assert abs(meas.pack_mv - pack.pack_voltage_v * 1000) <= 5 + 6 * 50
    assert meas.pack_mv % 10 == 0 and meas.link_mv % 10 == 0


def test_noise_and_offsets_have_the_configured_size(make_pack) -> None:
    pack = make_pack(n_cells=64)
    model = SensorModel(seed=1)
    errors_mv = (
        np.array([model.measure(pack).cell_mv for _ in range(400)]) - pack.cell_voltage_v * 1e3
    )
    offsets_mv = errors_mv.mean(axis=0)
    assert np.std(errors_mv - offsets_mv) == pytest.approx(1.0, rel=0.1)
    assert np.std(offsets_mv) == pytest.approx(0.5, rel=0.3)
    current_errors_ma = [model.measure(pack).current_ma - pack.current_a * 1e3 for _ in range(400)]
    assert np.mean(current_errors_ma) == pytest.approx(10.0, abs=4.0)
    assert np.std(current_errors_ma) == pytest.approx(20.0, rel=0.15)


def test_seed_makes_measurements_repeatable(loaded) -> None:
    first, second = SensorModel(seed=7).measure(loaded), SensorModel(seed=7).measure(loaded)
    np.testing.assert_array_equal(first.cell_mv, second.cell_mv)
    assert first.current_ma == second.current_ma


def test_offsets_persist_between_samples(loaded) -> None:
    model = SensorModel(**{**EXACT, "cell_offset_sigma_v": 0.005}, seed=2)
    first, second = model.measure(loaded), model.measure(loaded)
    np.testing.assert_array_equal(first.cell_mv, second.cell_mv)
    assert np.any(first.cell_mv != np.rint(loaded.cell_voltage_v * 1000))


def test_bleeding_cell_reads_low_and_its_neighbours_high_through_shared_sense_lines(
    make_pack,
) -> None:
    """A bleeding cell reads 2 R Ib low, each neighbour R Ib high, the others exactly."""
    pack = make_pack(n_cells=5)
    pack.set_balancing([False, True, False, False, True])
    pack.step(1.0, 0.0)
    meas = SensorModel(**EXACT, sense_line_ohm=0.1).measure(pack)
    ib = pack.bleed_current_a
    shift = 0.1 * np.array([ib[1], -2 * ib[1], ib[1], ib[4], -2 * ib[4]])
    np.testing.assert_array_equal(meas.cell_mv, np.rint((pack.cell_voltage_v + shift) / 1e-3))
    assert meas.cell_mv[1] < np.rint(pack.cell_voltage_v[1] * 1000)


def test_default_sense_lines_give_tens_of_mv_while_bleeding(make_pack) -> None:
    pack = make_pack(n_cells=3)
    pack.set_balancing([False, True, False])
    pack.step(1.0, 0.0)
    meas = SensorModel(**EXACT).measure(pack)
    error_mv = meas.cell_mv - pack.cell_voltage_v * 1000
    assert -80 < error_mv[1] < -30 and 15 < error_mv[0] < 40 and 15 < error_mv[2] < 40


def test_model_belongs_to_one_pack_size(make_pack) -> None:
    model = SensorModel()
    model.measure(make_pack(n_cells=4))
    with pytest.raises(ValueError, match="4 cells"):
        model.measure(make_pack(n_cells=5))


def test_quantisation_step_must_be_positive() -> None:
    with pytest.raises(ValueError, match="quantisation"):
        SensorModel(cell_lsb_v=0.0)
