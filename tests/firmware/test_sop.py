"""Power limits from the model (also runs under MicroPython)."""

from fw_support import estimator, fresh

from firmware import config
from firmware.ocv import soc_to_ocv
from firmware.sop import Sop

NMC = config.load().ocv_mv


def _rig(soc=5000, overrides=None, dc=250):
    o = {"cell_count": 4}
    o.update(overrides or {})
    cfg, m = fresh(o, mv=soc_to_ocv(soc, NMC), dc=dc)
    est = estimator(cfg)
    est.update(m, 100, 0)
    est.update(m, 100, 100)
    return cfg, m, est, Sop(cfg, est.data)


def _settle(sop, m, est, n=600):
    for _ in range(n):
        est.update(m, 100, 0)
        sop.update(m, True, 100)


def test_model_limits_at_rest_mid_soc():
    """At rest at 50 %: the 10 s currents equal the voltage headroom over R0 + R1 (1 - e) +
    R2 (1 - e) + the OCV moved; 30 s ones are lower; the rise is rate-limited meanwhile."""
    cfg, m, est, sop = _rig()
    sop.update(m, True, 100)
    assert sop.out.discharge_ma_10s == cfg.sop_rise_ma_s // 10  # first cycle: one step of the ramp
    _settle(sop, m, est)
    # 790 mV to 3000 mV over 18 + 8 * 0.632 + 12 * 0.049 mOhm + 8 mV/% * 10 s / 180 As * 100
    r = 0.018 + 0.008 * 0.6321 + 0.012 * 0.0488 + 0.8 * 10 / 18000
    assert abs(sop.out.discharge_ma_10s - 0.79 / r * 1000) < 0.01 * 0.79 / r * 1000
    assert 0 < sop.out.discharge_ma_30s < sop.out.discharge_ma_10s
    assert 0 < sop.out.charge_ma_30s < sop.out.charge_ma_10s


def test_zero_at_the_voltage_limit_and_when_not_ok():
    cfg, m, est, sop = _rig()
    _settle(sop, m, est, 100)
    m.cell_mv[2] = cfg.cell_discharge_min_mv  # the weakest cell is at its limit now
    m.update_stats()
    sop.update(m, True, 100)
    assert sop.out.discharge_ma_10s == 0 and sop.out.discharge_ma_30s == 0  # falls at once
    assert sop.out.charge_ma_10s > 0
    sop.update(m, False, 100)
    assert sop.out.charge_ma_10s == sop.out.charge_ma_30s == 0


def test_derated_near_full_and_in_the_cold():
    """Charge power falls to 0 toward 100 % SOC, and both fall in the cold."""
    cfg, m, est, sop = _rig(9900)
    _settle(sop, m, est, 100)
    full = sop.out.charge_ma_10s
    cfg2, m2, est2, sop2 = _rig(5000)
    _settle(sop2, m2, est2, 100)
    assert full < sop2.out.charge_ma_10s // 5
    cfg3, m3, est3, sop3 = _rig(5000, dc=50)  # 5 degC: below charge_temp_full_lo_dc
    _settle(sop3, m3, est3, 100)
    assert sop3.out.charge_ma_10s < sop2.out.charge_ma_10s // 2
    assert sop3.out.discharge_ma_10s < sop2.out.discharge_ma_10s
