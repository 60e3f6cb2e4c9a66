"""The fault catalogue's newer rules (bits 15..28), their qualification, tiers and recovery.

Runs under CPython and MicroPython. Times are board ms; each rule is driven right up to its
qualification boundary and across it.
"""

import fw_support as f
from fw_support import feed, fresh

from firmware import protection as p


def _bit(b):
    return 1 << b


def _run(prot, meas, t0, t1, step=100):
    for t in range(t0, t1 + 1, step):
        prot.check(meas, t, False, False)


def _open_bits(prot):
    return prot.out.active & ~p.WARNING_MASK


def test_imbalance_is_a_self_clearing_warning():
    cfg, m = fresh()
    prot = p.Protection(cfg)
    m.cell_mv[4] = 3700 + cfg.imbalance_mv + 1
    m.update_stats()
    _run(prot, m, 0, cfg.t_qualify_ms - 1, 1)
    assert prot.out.active == 0
    prot.check(m, cfg.t_qualify_ms, False, False)
    assert prot.out.active == _bit(f.FAULT_IMBALANCE)
    assert prot.out.tier == p.TIER_WARNING and not prot.out.open_required
    m.cell_mv[4] = 3700 + cfg.imbalance_mv  # at the threshold: no imbalance
    m.update_stats()
    prot.check(m, cfg.t_qualify_ms + 100, False, False)
    assert prot.out.active == 0  # cleared without a reset request


def _runaway_run(rise_dc_per_s, drop_mv_per_s, seconds, sensor=5):
    """A pack whose sensor `sensor` rises and whose cell `sensor` drops linearly, 100 ms cycles;
    returns the first time (ms) ThermalRunaway is active, or None."""
    cfg, m = fresh()
    prot = p.Protection(cfg)
    for t in range(0, seconds * 1000 + 1, 100):
        feed(m, cfg, now_ms=t)
        m.temp_dc[sensor] = 250 + rise_dc_per_s * t // 1000
        m.cell_mv[sensor] = 3700 - drop_mv_per_s * t // 1000
        m.update_stats()
        prot.check(m, t, False, False)
        if prot.out.active & _bit(f.FAULT_RUNAWAY):
            return t, prot, m
    return None, prot, m


def test_runaway_needs_a_sustained_rise_with_a_voltage_drop():
    cfg = fresh()[0]
    t, prot, m = _runaway_run(cfg.runaway_rise_dc, cfg.runaway_drop_mv, 10)
    # First window ends at 1 s (the rise is judged from there on), qualified 2 s later.
    assert t == 1000 + cfg.runaway_qualify_ms
    assert prot.out.open_required and prot.out.tier == p.TIER_OPEN
    assert _runaway_run(cfg.runaway_rise_dc - 1, cfg.runaway_drop_mv, 10)[0] is None
    assert _runaway_run(cfg.runaway_rise_dc, cfg.runaway_drop_mv - 1, 10)[0] is None
    assert _runaway_run(cfg.runaway_rise_dc * 5, 0, 10)[0] is None  # heat alone: no short


def test_runaway_is_latched():
    cfg = fresh()[0]
    t, prot, m = _runaway_run(cfg.runaway_rise_dc, cfg.runaway_drop_mv, 10)
    feed(m, cfg, now_ms=t + 100)
    _run(prot, m, t + 100, t + 3000)
    assert prot.out.active & _bit(f.FAULT_RUNAWAY)
    prot.request_reset()
    assert not prot.out.active & _bit(f.FAULT_RUNAWAY)


def test_open_sense_wire_reads_near_zero():
    cfg, m = fresh()
    prot = p.Protection(cfg)
    m.cell_mv[7] = cfg.open_wire_mv
    m.update_stats()
    prot.check(m, 0, False, False)
    assert prot.out.active & _bit(f.FAULT_OPEN_WIRE) and prot.out.open_required
    assert prot.out.active & _bit(p.FAULT_MEAS_IMPLAUSIBLE)  # below the physical range as well
    cfg, m = fresh()
    prot = p.Protection(cfg)
    m.cell_mv[7] = cfg.open_wire_mv + 1
    m.update_stats()
    prot.check(m, 0, False, False)
    assert not prot.out.active & _bit(f.FAULT_OPEN_WIRE)


def _stuck_run(cfg, m, prot, t0, t1, current_swing_ma, stuck_cell=3):
    """Every cell but `stuck_cell` changes each cycle; the current alternates by the swing."""
    for k, t in enumerate(range(t0, t1 + 1, 100)):
        i = current_swing_ma if k % 2 else 0
        feed(m, cfg, mv=3700 + k % 3, current_ma=i, now_ms=t)
        m.cell_raw_mv[stuck_cell] = 3650
        m.cell_mv[stuck_cell] = 3650
        m.update_stats()
        prot.check(m, t, False, False)


def test_stuck_cell_voltage_opens_at_the_end_of_its_window():
    cfg, m = fresh()
    prot = p.Protection(cfg)
    w = cfg.stuck_window_ms
    _stuck_run(cfg, m, prot, 0, w - 100, cfg.stuck_current_ma + 1)
    assert not prot.out.active & _bit(f.FAULT_STUCK)
    _stuck_run(cfg, m, prot, w, w, cfg.stuck_current_ma + 1)
    assert prot.out.active & _bit(f.FAULT_STUCK) and prot.out.open_required


def test_stuck_needs_the_current_to_move():
    cfg, m = fresh()
    prot = p.Protection(cfg)
    _stuck_run(cfg, m, prot, 0, 3 * cfg.stuck_window_ms, cfg.stuck_current_ma)
    assert not prot.out.active & _bit(f.FAULT_STUCK)


def test_a_cell_that_changed_once_in_the_window_is_not_stuck():
    cfg, m = fresh()
    prot = p.Protection(cfg)
    w = cfg.stuck_window_ms
    for k, t in enumerate(range(0, w + 1, 100)):
        feed(m, cfg, mv=3700 + k % 3, current_ma=(k % 2) * 2 * cfg.stuck_current_ma, now_ms=t)
        m.cell_raw_mv[3] = 3651 if t == w // 2 else 3650
        m.update_stats()
        prot.check(m, t, False, False)
    assert not prot.out.active & _bit(f.FAULT_STUCK)


def test_pack_voltage_must_match_cell_sum():
    for pack, ok in ((59200 + 5000, True), (59200 - 5000, True), (64201, False), (54199, False)):
        cfg, m = fresh()  # 16 cells at 3700 mV: sum 59200 mV
        prot = p.Protection(cfg)
        m.set_pack(0, pack, pack, 0)
        prot.check(m, 0, False, False)
        assert (not prot.out.active & _bit(f.FAULT_PACK_MISMATCH)) == ok
        assert prot.out.meas_valid == ok


def test_wrapped_pack_voltage_is_a_mismatch():
    # 192 NMC cells at 4.2 V = 806.4 V does not fit a 16-bit 10 mV field (655.35 V): it wraps.
    cfg, m = fresh({"cell_count": 192}, mv=4200)
    prot = p.Protection(cfg)
    m.set_pack(0, 806400 - 655360, 0, 0)
    prot.check(m, 0, False, False)
    assert prot.out.active & _bit(f.FAULT_PACK_MISMATCH) and prot.out.open_required


def test_current_sensor_disagreement_derates():
    cfg, m = fresh(current_ma=10000)
    prot = p.Protection(cfg)
    m.current2_ma = 10000 + cfg.current2_delta_ma + 1
    _run(prot, m, 0, cfg.i_qualify_ms - 1, 1)
    assert prot.out.active == 0
    prot.check(m, cfg.i_qualify_ms, False, False)
    assert prot.out.active == _bit(f.FAULT_CURRENT2)
    assert prot.out.tier == p.TIER_DERATE and not prot.out.open_required
    m.current2_ma = 10000 - cfg.current2_delta_ma  # agrees again: latched until reset
    prot.check(m, cfg.i_qualify_ms + 100, False, False)
    assert prot.out.tier == p.TIER_DERATE
    prot.request_reset()
    assert prot.out.tier == p.TIER_NONE


def test_second_current_sensor_not_fitted_is_not_checked():
    cfg, m = fresh({"current2_enable": 0}, current_ma=10000)
    prot = p.Protection(cfg)
    m.current2_ma = 0
    _run(prot, m, 0, 3000)
    assert prot.out.active == 0


def _cold_charge(chemistry, current_ma):
    o = {"chemistry": chemistry, "ut_charge_dc": -100}
    cfg, m = fresh(o, mv=3300, dc=-50, current_ma=current_ma)
    prot = p.Protection(cfg)
    _run(prot, m, 0, cfg.i_qualify_ms)
    return cfg, prot.out.active & _bit(f.FAULT_OC_CHARGE_COLD)


def test_cold_charge_over_current_is_stricter_for_lfp():
    cfg, _ = _cold_charge("LFP", 0)
    assert cfg.oc_charge_cold_ma * 5 < cfg.max_charge_ma * 10  # 0.1 C against 1 C
    assert not _cold_charge("LFP", -cfg.oc_charge_cold_ma)[1]
    assert _cold_charge("LFP", -cfg.oc_charge_cold_ma - 1)[1]
    nmc, _ = _cold_charge("NMC", 0)
    assert not _cold_charge("NMC", -cfg.oc_charge_cold_ma - 1)[1]
    assert _cold_charge("NMC", -nmc.oc_charge_cold_ma - 1)[1]


def test_cold_threshold_only_applies_when_cold():
    cfg, m = fresh({"chemistry": "LFP"}, dc=10, current_ma=-1000)  # 1 degC, 0.43 C
    prot = p.Protection(cfg)
    _run(prot, m, 0, 2000)
    assert not prot.out.active & _bit(f.FAULT_OC_CHARGE_COLD)


def test_temperature_derate_warnings_follow_the_direction():
    cfg, m = fresh(dc=cfg_hot() + 1)
    prot = p.Protection(cfg)
    _run(prot, m, 0, cfg.t_qualify_ms)
    assert prot.out.active == _bit(f.FAULT_TEMP_HIGH_DERATE)  # discharge band, at rest
    assert prot.out.tier == p.TIER_WARNING
    cfg, m = fresh(dc=cfg.charge_temp_full_hi_dc + 1, current_ma=-1000)
    prot = p.Protection(cfg)
    _run(prot, m, 0, cfg.t_qualify_ms)
    assert prot.out.active == _bit(f.FAULT_TEMP_HIGH_DERATE)  # charge band while charging
    cfg, m = fresh(dc=cfg.charge_temp_full_lo_dc - 1, current_ma=-1000)
    prot = p.Protection(cfg)
    _run(prot, m, 0, cfg.t_qualify_ms)
    assert prot.out.active == _bit(f.FAULT_TEMP_LOW_DERATE)
    feed(m, cfg, dc=250, current_ma=-1000, now_ms=cfg.t_qualify_ms + 100)
    prot.check(m, cfg.t_qualify_ms + 100, False, False)
    assert prot.out.active == 0  # self-clearing


def cfg_hot():
    return fresh()[0].discharge_temp_full_hi_dc


def test_external_bits_are_the_detectors():
    cfg, m = fresh()
    for bit in (p.FAULT_VCU_INVALID, p.FAULT_CONTACTOR_FB, p.FAULT_WELDED):
        prot = p.Protection(cfg)
        prot.set_fault(bit, True)
        assert prot.out.open_required
        prot.check(m, 0, False, False)
        prot.request_reset()
        assert not prot.out.active
    prot = p.Protection(cfg)
    prot.set_fault(p.FAULT_STORAGE, True)
    assert prot.out.tier == p.TIER_WARNING and not prot.out.open_required
    for bit in (f.FAULT_STUCK, f.FAULT_RUNAWAY, f.FAULT_CURRENT2, f.FAULT_PACK_MISMATCH):
        try:
            prot.set_fault(bit, True)
            raised = False
        except ValueError:
            raised = True
        assert raised, bit


def test_worst_tier_wins():
    cfg, m = fresh()
    prot = p.Protection(cfg)
    prot.set_fault(p.FAULT_STORAGE, True)
    assert prot.out.tier == p.TIER_WARNING
    m.current2_ma = cfg.current2_delta_ma + 1
    _run(prot, m, 0, cfg.i_qualify_ms)
    assert prot.out.tier == p.TIER_DERATE
    prot.set_fault(p.FAULT_WELDED, True)
    assert prot.out.tier == p.TIER_OPEN and prot.out.count == 3


def _limit_run(cfg, m, prot, current_ma, t0, t1, charge_ma=5000, discharge_ma=15000):
    for t in range(t0, t1 + 1, 100):
        feed(m, cfg, current_ma=current_ma, now_ms=t)
        prot.check(m, t, False, False)
        prot.check_limits(m.current_ma, charge_ma, discharge_ma, t)


def test_a_current_beyond_the_published_limit_opens_after_limit_ignored_ms():
    """Safety rule: a vehicle (or charger) that draws more than the published limit plus
    limit_margin_ma for limit_ignored_ms gets the contactors opened; latched."""
    cfg, m = fresh()
    prot = p.Protection(cfg)
    over = 15000 + cfg.limit_margin_ma + 1
    _limit_run(cfg, m, prot, over, 0, cfg.limit_ignored_ms - 100)
    assert prot.out.active == 0
    _limit_run(cfg, m, prot, over, cfg.limit_ignored_ms, cfg.limit_ignored_ms)
    assert prot.out.active == _bit(f.FAULT_LIMIT) and prot.out.open_required
    _limit_run(cfg, m, prot, 0, cfg.limit_ignored_ms + 100, cfg.limit_ignored_ms + 500)
    assert prot.out.active == _bit(f.FAULT_LIMIT)  # latched
    prot.request_reset()
    assert prot.out.active == 0


def test_charging_beyond_the_charge_limit_counts_too_and_the_margin_is_allowed():
    cfg, m = fresh()
    prot = p.Protection(cfg)
    _limit_run(cfg, m, prot, -(5000 + cfg.limit_margin_ma), 0, 2 * cfg.limit_ignored_ms)
    assert prot.out.active == 0  # at the margin: allowed
    _limit_run(cfg, m, prot, -(5000 + cfg.limit_margin_ma + 1), 0, cfg.limit_ignored_ms)
    assert prot.out.active == _bit(f.FAULT_LIMIT)


def test_an_interrupted_violation_restarts_the_qualification():
    cfg, m = fresh()
    prot = p.Protection(cfg)
    over = 15000 + cfg.limit_margin_ma + 1
    half = cfg.limit_ignored_ms // 2
    _limit_run(cfg, m, prot, over, 0, half)
    _limit_run(cfg, m, prot, 15000, half + 100, half + 100)  # back within the limit once
    _limit_run(cfg, m, prot, over, half + 200, half + 200 + cfg.limit_ignored_ms - 100)
    assert prot.out.active == 0


def test_no_limit_verdict_on_invalid_measurements():
    """Fail-safe freezing: an implausible reading neither raises nor clears the rule."""
    cfg, m = fresh()
    prot = p.Protection(cfg)
    m.cell_mv[0] = 9000  # implausible
    m.update_stats()
    for t in range(0, 2 * cfg.limit_ignored_ms, 100):
        prot.check(m, t, False, False)
        prot.check_limits(10**6, 0, 0, t)
    assert not prot.out.active & _bit(f.FAULT_LIMIT)


def test_limit_ignored_ms_zero_turns_the_rule_off():
    cfg, m = fresh({"limit_ignored_ms": 0})
    prot = p.Protection(cfg)
    _limit_run(cfg, m, prot, 15000 + cfg.limit_margin_ma + 1, 0, 60000)
    assert prot.out.active == 0
