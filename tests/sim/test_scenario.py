from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.pack import Pack
from sim.scenario import (
    SCENARIOS,
    CCCVCharge,
    Drive,
    Limits,
    Rest,
    Scenario,
    build_scenario,
)
from sim.vehicle import load_drive_cycle

OPEN_LIMITS = Limits(charge_current_a=100.0, discharge_current_a=100.0, charge_voltage_v=1e3)


def run(scenario: Scenario, pack: Pack, limits: Limits, dt_s: float = 1.0) -> list[str]:
    """Step ``pack`` under ``scenario`` to the end; returns the active segment of each step."""
    segments, t_s = [], 0.0
    while not scenario.done:
        pack.step(dt_s, scenario.current_request(t_s, pack, limits))
        segments.append(scenario.segment_name)
        t_s += dt_s
    return segments


def test_limits_are_magnitudes() -> None:
    with pytest.raises(ValueError, match="magnitudes"):
        Limits(charge_current_a=-1.0, discharge_current_a=1.0, charge_voltage_v=60.0)


def test_build_scenario_names() -> None:
    assert set(SCENARIOS) == {"default", "wltc", "nedc", "charge", "rest", "dc-fast-charge"}
    with pytest.raises(ValueError, match="default, wltc, nedc, charge, rest, dc-fast-charge"):
        build_scenario("highway", "NMC", 5.0)
    with pytest.raises(ValueError, match="chemistry"):
        build_scenario("rest", "NCA", 5.0)


def test_default_scenario_layout() -> None:
    scenario = build_scenario("default", "lfp", 2.3)
    names = [segment.name for segment in scenario.segments]
    assert names == ["rest", "drive-wltc", "rest", "cccv-charge"]
    assert scenario.segments[3].current_a == pytest.approx(1.15)


def test_rest_then_done(make_pack) -> None:
    pack = make_pack()
    scenario = Scenario("two rests", [Rest(3.0), Rest(2.0)])
    requests = [scenario.current_request(t, pack, OPEN_LIMITS) for t in range(7)]
    assert requests == [0.0] * 7
    assert scenario.done and scenario.segment_name == "done"


@settings(max_examples=25, deadline=None)
@given(charge_a=st.floats(0.0, 20.0), discharge_a=st.floats(0.0, 20.0))
def test_drive_respects_bms_current_limits(make_pack, charge_a: float, discharge_a) -> None:
    """Every drive request lies within [-charge limit, +discharge limit]."""
    pack = make_pack()
    limits = Limits(charge_a, discharge_a, 100.0)
    drive = Drive("wltc", until_soc=0.0, max_repeats=1)
    drive.begin(pack)
    requests = [drive.request(float(t), pack, limits) for t in range(1800)]
    assert all(-charge_a <= i <= discharge_a for i in requests)
    assert drive.request(1800.0, pack, limits) is None


def test_drive_current_matches_scaled_vehicle_power(make_pack) -> None:
    pack = make_pack()
    drive = Drive("nedc", until_soc=0.0, max_repeats=2)
    drive.begin(pack)
    power = drive.vehicle.pack_power_w(load_drive_cycle("nedc"), pack.energy_wh)
    for second in (100, 1000, 1180 + 100):
        expected = power[second % 1180] / pack.pack_voltage_v
        assert drive.request(second + 0.5, pack, OPEN_LIMITS) == pytest.approx(expected)


def test_drive_repeats_until_soc(make_pack) -> None:
    pack = make_pack(soc_mean=0.3)
    segments = run(Scenario("drive", [Drive("nedc", until_soc=0.25)]), pack, OPEN_LIMITS)
    assert len(segments) > 1180
    assert pack.mean_soc == pytest.approx(0.25, abs=0.002)


@pytest.mark.parametrize("dt_s", [0.1, 1.0])
def test_cccv_charge_holds_voltage_and_tapers(make_pack, dt_s: float) -> None:
    pack = make_pack(n_cells=4, soc_mean=0.8)
    limits = Limits(charge_current_a=2.0, discharge_current_a=10.0, charge_voltage_v=16.6)
    scenario = Scenario("charge", [CCCVCharge(current_a=2.5)])
    first = scenario.current_request(0.0, pack, limits)
    assert first == -2.0
    peak_v, t_s, last = 0.0, 0.0, first
    while not scenario.done:
        pack.step(dt_s, last)
        peak_v = max(peak_v, pack.pack_voltage_v)
        t_s += dt_s
        last = scenario.current_request(t_s, pack, limits)
    assert peak_v < limits.charge_voltage_v + 0.005
    assert pack.pack_voltage_v == pytest.approx(limits.charge_voltage_v, abs=0.01)
    # The last step still carried the request that fell through the 0.05C cutoff.
    assert abs(pack.current_a) < 0.05 * 5.0 + 0.01
    assert t_s < 3 * 3600


def test_cccv_waits_for_published_limits(make_pack) -> None:
    """Zero limits (nothing published yet) pause the charge instead of ending it."""
    pack = make_pack(n_cells=4, soc_mean=0.5)
    scenario = Scenario("charge", [CCCVCharge(current_a=2.5, timeout_s=50.0)])
    silent = Limits(0.0, 0.0, 0.0)
    assert run(scenario, pack, silent)[-2] == "cccv-charge"
    assert pack.mean_soc == pytest.approx(0.5, abs=0.02)


def test_cccv_survives_a_one_step_dip_of_the_limit(make_pack) -> None:
    """A charger ends the charge only after the current stayed below cutoff for end_hold_s:
    one control period in which the BMS publishes 0 A pauses the charge, it does not end it."""
    pack = make_pack(n_cells=4, soc_mean=0.5)
    scenario = Scenario("charge", [CCCVCharge(current_a=2.5, end_hold_s=30.0)])
    normal = Limits(charge_current_a=2.0, discharge_current_a=10.0, charge_voltage_v=16.8)
    dip = Limits(charge_current_a=0.0, discharge_current_a=10.0, charge_voltage_v=16.8)
    t_s = 0.0
    for step in range(100):
        limits = dip if step == 50 else normal
        pack.step(0.1, scenario.current_request(t_s, pack, limits))
        t_s += 0.1
    assert not scenario.done
    assert scenario.current_request(t_s, pack, normal) == -2.0


def test_default_scenario_end_to_end(make_pack) -> None:
    """The default scenario's phases in order; its progress grows with the time the run takes
    (within 6 % of the elapsed share at every step), so a progress bar's time estimate holds
    from the first rest on, not only within the segment that is running."""
    pack = make_pack()
    limits = Limits(charge_current_a=5.0, discharge_current_a=25.0, charge_voltage_v=16 * 4.2)
    scenario = build_scenario("default", "NMC", 5.0)
    segments, progress, t_s = [], [], 0.0
    while not scenario.done:
        progress.append(scenario.progress(t_s, pack))
        pack.step(1.0, scenario.current_request(t_s, pack, limits))
        segments.append(scenario.segment_name)
        t_s += 1.0
    assert progress == sorted(progress) and scenario.progress(t_s, pack) == 1.0
    assert max(abs(p - k / len(progress)) for k, p in enumerate(progress)) < 0.06
    assert [name for i, name in enumerate(segments) if i == 0 or segments[i - 1] != name] == [
        "rest",
        "drive-wltc",
        "rest",
        "cccv-charge",
        "done",
    ]
    assert segments.count("drive-wltc") > 5 * 1800
    assert pack.mean_soc > 0.95
