"""Thermal outputs (cooling, preheating) with hysteresis, and the limits that depend on them:
preheat before charge, the derate tier, the cold charge cap. Runs under CPython and MicroPython.
"""

from fw_support import feed, fresh

from firmware.limits import Limits
from firmware.thermal import Thermal


def _at(th, cfg, m, dc, charge=0, valid=True):
    feed(m, cfg, dc=dc)
    th.update(m, valid, charge)
    return th.out.cooling, th.out.heating


def test_cooling_has_hysteresis():
    cfg, m = fresh()
    th = Thermal(cfg)
    on = cfg.cool_on_dc
    off = on - cfg.thermal_hyst_dc
    assert _at(th, cfg, m, on) == (0, 0)  # at the threshold: still off
    assert _at(th, cfg, m, on + 1) == (1, 0) and th.out.reason == 1  # COOLING
    assert _at(th, cfg, m, off) == (1, 0)  # inside the band: unchanged
    assert _at(th, cfg, m, off - 1) == (0, 0) and th.out.reason == 0  # IDLE
    assert _at(th, cfg, m, off) == (0, 0)


def test_preheating_only_when_charging_is_requested():
    cfg, m = fresh()
    th = Thermal(cfg)
    cold = cfg.ut_charge_dc - 1
    assert _at(th, cfg, m, cold, charge=0) == (0, 0)
    assert _at(th, cfg, m, cold, charge=1) == (0, 1) and th.out.reason == 2  # PREHEATING
    warm = cfg.ut_charge_dc + cfg.thermal_hyst_dc
    assert _at(th, cfg, m, warm - 1, charge=1) == (0, 1)  # not yet preheated
    assert _at(th, cfg, m, warm, charge=1) == (0, 0)
    assert _at(th, cfg, m, cfg.ut_charge_dc, charge=1) == (0, 0)  # band: stays off
    assert _at(th, cfg, m, cold, charge=1) == (0, 1)
    assert _at(th, cfg, m, cold, charge=0) == (0, 0)  # request gone: heater off at once


def test_no_data_cools_and_never_heats():
    cfg, m = fresh()
    th = Thermal(cfg)
    _at(th, cfg, m, cfg.ut_charge_dc - 50, charge=1)
    assert th.out.heating
    assert _at(th, cfg, m, cfg.ut_charge_dc - 50, charge=1, valid=False) == (1, 0)
    assert th.out.reason == 3  # NO_DATA


def test_charge_limit_is_zero_until_preheated():
    cfg, m = fresh(dc=100)  # warm enough to charge at full current
    lim = Limits(cfg)
    lim.update(m, False)
    assert lim.out.charge_ma == cfg.max_charge_ma
    lim.update(m, False, 0, 1)  # the heater runs: no charging yet
    assert lim.out.charge_ma == 0 and lim.out.discharge_ma > 0


def test_derate_tier_caps_both_limits():
    cfg, m = fresh()
    lim = Limits(cfg)
    lim.update(m, False, 2)  # TIER_DERATE
    assert lim.out.charge_ma == cfg.max_charge_ma * cfg.derate_pct // 100
    assert lim.out.discharge_ma == cfg.max_discharge_ma * cfg.derate_pct // 100
    lim.update(m, False, 1)  # a warning does not derate
    assert lim.out.charge_ma == cfg.max_charge_ma


def test_cold_charge_limit_stays_under_the_cold_over_current_threshold():
    cfg, m = fresh({"chemistry": "LFP", "ut_charge_dc": -100}, mv=3300, dc=-50)
    lim = Limits(cfg)
    lim.update(m, False)
    assert 0 < lim.out.charge_ma <= cfg.oc_charge_cold_ma * cfg.derate_pct // 100
    assert lim.out.charge_ma < cfg.oc_charge_cold_ma
