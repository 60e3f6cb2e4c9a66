import fw_support as f
from fw_support import feed, fresh

from firmware import protection as p


def _bit(b):
    return 1 << b


def _run(prot, meas, t0, t1, step=1, stale=False, vcu_stale=False):
    for t in range(t0, t1 + 1, step):
        prot.check(meas, t, stale, vcu_stale)


def test_masks_follow_the_catalogue():
    assert p.FAULT_CELL_OV == 0 and p.FAULT_INTERNAL_ERROR == 14 and p.FAULT_STORAGE == 27
    assert p.OPEN_MASK & p.WARNING_MASK == 0 and p.OPEN_MASK & p.DERATE_MASK == 0
    assert p.OPEN_MASK | p.WARNING_MASK | p.DERATE_MASK == (1 << p.FAULT_BITS) - 1
    assert p.WARNING_MASK == (
        _bit(p.FAULT_LOOP_OVERRUN)
        | _bit(p.FAULT_WATCHDOG_RESET)
        | _bit(f.FAULT_IMBALANCE)
        | _bit(f.FAULT_TEMP_HIGH_DERATE)
        | _bit(f.FAULT_TEMP_LOW_DERATE)
        | _bit(p.FAULT_STORAGE)
    )
    assert p.DERATE_MASK == _bit(f.FAULT_CURRENT2)


def test_healthy_pack_has_no_fault():
    cfg, m = fresh()
    prot = p.Protection(cfg)
    _run(prot, m, 0, 5000, 100)
    assert (
        prot.out.active == 0
        and not prot.out.open_required
        and prot.out.tier == 0
        and prot.out.count == 0
    )


def test_over_voltage_qualification():
    cfg, m = fresh()
    prot = p.Protection(cfg)
    m.cell_mv[5] = cfg.cell_ov_mv + 1
    m.update_stats()
    _run(prot, m, 1000, 1299)
    assert prot.out.active == 0
    prot.check(m, 1300, False, False)
    assert prot.out.active == _bit(p.FAULT_CELL_OV) and prot.out.open_required
    assert prot.out.tier == p.TIER_OPEN and prot.out.count == 1


def test_at_threshold_is_not_a_fault():
    cfg, m = fresh()
    prot = p.Protection(cfg)
    m.cell_mv[0] = cfg.cell_ov_mv
    m.cell_mv[1] = cfg.cell_uv_mv
    m.update_stats()
    _run(prot, m, 0, 2000, 100)
    assert prot.out.active == _bit(f.FAULT_IMBALANCE)  # 1550 mV apart: the warning only


def test_interrupted_condition_restarts_qualification():
    cfg, m = fresh()
    prot = p.Protection(cfg)
    m.cell_mv[0] = cfg.cell_uv_mv - 1
    m.update_stats()
    _run(prot, m, 0, 250, 50)
    feed(m, cfg, now_ms=300)
    prot.check(m, 300, False, False)
    m.cell_mv[0] = cfg.cell_uv_mv - 1
    m.update_stats()
    _run(prot, m, 350, 649, 1)
    assert prot.out.active == 0
    prot.check(m, 650, False, False)
    assert prot.out.active == _bit(p.FAULT_CELL_UV)


def test_latch_and_reset_only_when_condition_gone():
    cfg, m = fresh()
    prot = p.Protection(cfg)
    m.cell_mv[3] = 4300
    m.update_stats()
    _run(prot, m, 0, 400, 100)
    assert prot.out.open_required
    prot.request_reset()
    assert prot.out.open_required  # still over-voltage
    m.cell_mv[3] = 4000
    m.update_stats()
    _run(prot, m, 500, 2000, 100)
    assert prot.out.active & ~p.WARNING_MASK == _bit(p.FAULT_CELL_OV)  # latched
    prot.request_reset()
    assert prot.out.active & ~p.WARNING_MASK == 0 and not prot.out.open_required


def test_stale_opens_at_once_and_clears_itself():
    cfg, m = fresh()
    prot = p.Protection(cfg)
    prot.check(m, 0, True, False)
    assert prot.out.active == _bit(p.FAULT_MEAS_STALE) and prot.out.open_required
    prot.check(m, 100, False, False)
    assert prot.out.active == 0
    prot.check(m, 200, False, True)
    assert prot.out.active == _bit(p.FAULT_VCU_STALE) and prot.out.open_required
    prot.check(m, 300, False, False)
    assert prot.out.active == 0


def test_stale_values_raise_nothing_else():
    cfg, m = fresh()
    prot = p.Protection(cfg)
    m.cell_mv[0] = 4400
    m.cell_mv[1] = 100  # would also be implausible
    m.update_stats()
    _run(prot, m, 0, 5000, 100, stale=True)
    assert prot.out.active == _bit(p.FAULT_MEAS_STALE)


def test_no_reset_while_condition_unknown():
    cfg, m = fresh()
    prot = p.Protection(cfg)
    m.cell_mv[0] = 4400
    m.update_stats()
    _run(prot, m, 0, 300, 100)
    assert prot.out.active == _bit(p.FAULT_CELL_OV)
    prot.check(m, 400, True, False)
    prot.request_reset()
    assert prot.out.active & _bit(p.FAULT_CELL_OV)


def test_implausible_opens_at_once_and_latches():
    cfg, m = fresh()
    prot = p.Protection(cfg)
    m.temp_dc[2] = 1600
    m.update_stats()
    prot.check(m, 0, False, False)
    assert prot.out.active == _bit(p.FAULT_MEAS_IMPLAUSIBLE) and prot.out.open_required
    _run(prot, m, 100, 3000, 100)
    assert prot.out.active == _bit(p.FAULT_MEAS_IMPLAUSIBLE)  # no OT from a broken sensor
    m.temp_dc[2] = 250
    m.update_stats()
    prot.check(m, 3100, False, False)
    assert prot.out.active == _bit(p.FAULT_MEAS_IMPLAUSIBLE)
    prot.request_reset()
    assert prot.out.active == 0


def _temp_faults(dc, current_ma):
    cfg, m = fresh(dc=dc, current_ma=current_ma)
    prot = p.Protection(cfg)
    _run(prot, m, 0, cfg.t_qualify_ms, 100)
    return prot.out.active & ~p.WARNING_MASK  # the derate warnings have their own test


def test_temperature_limits_split_charge_and_discharge():
    charge = -1000
    assert _temp_faults(451, 0) == 0  # at rest: charge limit doesn't apply
    assert _temp_faults(451, charge) == _bit(p.FAULT_OT_CHARGE)
    assert _temp_faults(601, 5000) == _bit(p.FAULT_OT_DISCHARGE)
    assert _temp_faults(601, charge) == _bit(p.FAULT_OT_CHARGE) | _bit(p.FAULT_OT_DISCHARGE)
    assert _temp_faults(-1, -100) == 0  # -rest_current_ma is still at rest
    assert _temp_faults(-1, -101) == _bit(p.FAULT_UT_CHARGE)
    assert _temp_faults(-201, 0) == _bit(p.FAULT_UT_DISCHARGE)


def test_temperature_qualification():
    cfg, m = fresh(dc=700)
    prot = p.Protection(cfg)
    _run(prot, m, 0, 999)
    assert prot.out.active == 0
    prot.check(m, 1000, False, False)
    assert prot.out.active & ~p.WARNING_MASK == _bit(p.FAULT_OT_DISCHARGE)


def test_over_current():
    cfg, m = fresh(current_ma=25001)
    prot = p.Protection(cfg)
    _run(prot, m, 0, 499)
    assert prot.out.active == 0
    prot.check(m, 500, False, False)
    assert prot.out.active == _bit(p.FAULT_OC_DISCHARGE)
    cfg, m = fresh(current_ma=-10001)
    prot = p.Protection(cfg)
    _run(prot, m, 0, 500, 100)
    assert prot.out.active == _bit(p.FAULT_OC_CHARGE)
    cfg, m = fresh(current_ma=-10000)
    prot = p.Protection(cfg)
    _run(prot, m, 0, 1000, 100)
    assert prot.out.active == 0


def test_external_faults():
    cfg, m = fresh()
    prot = p.Protection(cfg)
    prot.set_fault(p.FAULT_LOOP_OVERRUN, True)
    assert prot.out.tier == p.TIER_WARNING and not prot.out.open_required and prot.out.count == 1
    prot.set_fault(p.FAULT_PRECHARGE_FAILED, True)  # one-shot event, never withdrawn
    assert prot.out.tier == p.TIER_OPEN and prot.out.open_required and prot.out.count == 2
    prot.request_reset()
    assert prot.out.count == 2  # still reported in this cycle
    prot.check(m, 0, False, False)
    prot.request_reset()
    assert prot.out.active == 0


def test_external_condition_reported_every_cycle_keeps_latch():
    cfg, m = fresh()
    prot = p.Protection(cfg)
    for t in range(0, 500, 100):
        prot.check(m, t, False, False)
        prot.request_reset()
        prot.set_fault(p.FAULT_INTERNAL_ERROR, True)
        assert prot.out.open_required
    prot.set_fault(p.FAULT_INTERNAL_ERROR, False)
    prot.request_reset()
    assert not prot.out.open_required


def test_only_external_bits_are_settable():
    prot = p.Protection(fresh()[0])
    try:
        prot.set_fault(p.FAULT_CELL_OV, True)
    except ValueError:
        return
    raise AssertionError("not rejected")


def test_measurements_valid_only_when_fresh_and_plausible():
    # The application estimates SOC only from what check() found fresh and plausible.
    cfg, m = fresh()
    prot = p.Protection(cfg)
    prot.check(m, 0, False, False)
    assert prot.out.meas_valid
    prot.check(m, 100, True, False)
    assert not prot.out.meas_valid
    m.cell_mv[0] = 100
    m.update_stats()
    prot.check(m, 200, False, False)
    assert not prot.out.meas_valid
