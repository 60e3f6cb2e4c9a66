from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.vehicle import DRIVE_CYCLES, GRAVITY_M_S2, Vehicle, load_drive_cycle


@pytest.mark.parametrize(
    ("name", "duration_s", "distance_km", "top_kmh"),
    [("wltc", 1800, 23.27, 131.3), ("nedc", 1180, 11.01, 120.0)],
)
def test_drive_cycles(name: str, duration_s: int, distance_km: float, top_kmh: float) -> None:
    speed = load_drive_cycle(name)
    assert speed.shape == (duration_s,)
    assert speed[0] == 0.0 and speed[-1] == 0.0
    assert speed.sum() / 1000 == pytest.approx(distance_km, abs=0.05)
    assert speed.max() * 3.6 == pytest.approx(top_kmh, abs=0.1)


def test_cycle_names() -> None:
    assert DRIVE_CYCLES == ("wltc", "nedc")
    np.testing.assert_array_equal(load_drive_cycle("WLTC"), load_drive_cycle("wltc"))
    with pytest.raises(ValueError, match="wltc, nedc"):
        load_drive_cycle("ftp75")


@pytest.mark.parametrize(("name", "low", "high"), [("wltc", 130, 190), ("nedc", 110, 170)])
def test_energy_per_km_is_plausible(name: str, low: float, high: float) -> None:
    """A mid-size EV draws roughly 130-180 Wh/km from its battery on these cycles."""
    speed = load_drive_cycle(name)
    wh_per_km = Vehicle().battery_power_w(speed).sum() / 3600 / (speed.sum() / 1000)
    assert low < wh_per_km < high


def test_standing_still_draws_aux_power() -> None:
    np.testing.assert_array_equal(Vehicle().battery_power_w(np.zeros(5)), 400.0)


@settings(max_examples=30, deadline=None)
@given(speed=st.floats(1.0, 40.0))
def test_cruise_power_is_road_load_over_efficiency(speed: float) -> None:
    """At constant speed the battery supplies (drag + rolling resistance) * v / efficiency."""
    car = Vehicle()
    road_load = 0.5 * car.air_density_kg_m3 * car.cda_m2 * speed**2
    road_load += car.crr * car.mass_kg * GRAVITY_M_S2
    expected = road_load * speed / car.drivetrain_efficiency + car.aux_power_w
    np.testing.assert_allclose(car.battery_power_w(np.full(3, speed)), expected)


def test_regeneration_is_limited() -> None:
    car = Vehicle()
    power = car.battery_power_w(np.array([40.0, 20.0, 19.0]))
    assert power[0] == car.aux_power_w - car.regen_limit_w
    assert car.aux_power_w - car.regen_limit_w < power[1] < 0.0


def test_pack_power_scales_with_pack_energy() -> None:
    """The pack sees the C-rate of a reference_pack_kwh vehicle pack."""
    car = Vehicle()
    speed = load_drive_cycle("nedc")
    scaled = car.pack_power_w(speed, pack_energy_wh=300.0)
    np.testing.assert_allclose(scaled, car.battery_power_w(speed) * 300.0 / 60_000.0)
