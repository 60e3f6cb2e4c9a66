from fw_support import fresh

from firmware import balancing as b


def _bled(bal, n):
    return [i for i in range(n) if bal.mask[i >> 3] & (1 << (i & 7))]


def _setup(cells, overrides=None, current_ma=0, dc=250):
    o = {"cell_count": len(cells)}
    o.update(overrides or {})
    cfg, m = fresh(o, mv=3900, dc=dc, current_ma=current_ma)
    for i, v in enumerate(cells):
        m.cell_mv[i] = v
    m.update_stats()
    return cfg, m, b.Balancer(cfg)


def test_selects_cells_above_start_delta_never_the_lowest():
    cells = [3900, 3915, 3914, 3930, 3900, 3960, 3899, 3905, 3950]
    cfg, m, bal = _setup(cells)
    assert len(bal.mask) == 2 and bal.reason == b.NO_DATA
    bal.update(m, False, 0)
    assert bal.reason == b.ACTIVE
    # vmin 3899 (cell 6): start at >= 3914
    assert _bled(bal, 9) == [1, 2, 3, 5, 8] and bal.count == 5
    assert 6 not in _bled(bal, 9)


def test_hysteresis():
    cells = [3900, 3920, 3900, 3900]
    cfg, m, bal = _setup(cells)
    bal.update(m, False, 0)
    assert _bled(bal, 4) == [1]
    for v, bleeding in ((3910, True), (3906, True), (3905, False), (3910, False), (3915, True)):
        m.cell_mv[1] = v
        m.update_stats()
        bal.update(m, False, 0)
        assert (_bled(bal, 4) == [1]) == bleeding
    m.cell_mv[1] = 3905
    m.update_stats()
    bal.update(m, False, 0)
    assert bal.count == 0 and bal.reason == b.BALANCED


def test_at_most_max_cells_highest_first():
    cells = [3900] * 24
    for i in range(1, 21):
        cells[i] = 3920 + i * 3
    cfg, m, bal = _setup(cells)
    bal.update(m, False, 0)
    assert bal.count == 8 and _bled(bal, 24) == list(range(13, 21))
    cfg, m, bal = _setup(cells, {"balance_max_cells": 1})
    bal.update(m, False, 0)
    assert _bled(bal, 24) == [20]


def test_all_equal_is_balanced():
    cfg, m, bal = _setup([3950] * 16)
    bal.update(m, False, 0)
    assert bal.count == 0 and bal.reason == b.BALANCED


def test_cells_below_min_voltage_never_bleed():
    cfg, m, bal = _setup([3700, 3790, 3810, 3700])
    bal.update(m, False, 0)
    assert _bled(bal, 4) == [2]
    cfg, m, bal = _setup([3700, 3790, 3750, 3700])
    bal.update(m, False, 0)
    assert bal.count == 0 and bal.reason == b.BELOW_MIN_VOLTAGE


def _blocked_reason(overrides=None, current_ma=0, fault=False, now_ms=0):
    cfg, m, bal = _setup([3900, 3950, 3900, 3900], overrides)
    bal.update(m, False, 0)
    assert bal.count == 1
    m.current_ma = current_ma
    bal.update(m, fault, now_ms)
    assert bal.count == 0 and bytes(bal.mask) == b"\x00"
    return bal.reason


def test_blocked_reasons():
    assert _blocked_reason(current_ma=101) == b.NOT_AT_REST_OR_CHARGING
    assert _blocked_reason(fault=True) == b.FAULT
    assert _blocked_reason(now_ms=10000) == b.NO_DATA
    cfg, m, bal = _setup([3900, 3950], {"balance_enable": 0})
    bal.update(m, False, 0)
    assert bal.reason == b.DISABLED and bal.count == 0


def test_temperature_limit():
    cfg, m, bal = _setup([3900, 3950], dc=499)
    bal.update(m, False, 0)
    assert bal.reason == b.ACTIVE
    cfg, m, bal = _setup([3900, 3950], dc=500)
    bal.update(m, False, 0)
    assert bal.reason == b.OVER_TEMPERATURE and bal.count == 0


def test_allowed_while_charging():
    cfg, m, bal = _setup([3900, 3950], current_ma=-3000)
    bal.update(m, False, 0)
    assert bal.reason == b.ACTIVE and bal.count == 1


def test_clear():
    cfg, m, bal = _setup([3900, 3950])
    bal.update(m, False, 0)
    bal.clear()
    assert bal.count == 0 and bal.mask[0] == 0 and bal.reason == b.FAULT


def test_192_cells_mask_layout():
    cells = [3900] * 192
    cells[191] = 3990
    cells[8] = 3980
    cfg, m, bal = _setup(cells)
    bal.update(m, False, 0)
    assert len(bal.mask) == 24 and bal.mask[23] == 0x80 and bal.mask[1] == 0x01
    assert bal.count == 2
