"""Balancing only when safe: the blocking conditions, minimum voltage, clearing, mask layout."""

from fw_support import Rig, bled

from firmware import balancing as b

VOLTAGE = {"balance_strategy": 1}


def test_all_equal_is_balanced():
    r = Rig([3950] * 16)
    assert r.decide() == [] and r.bal.out.reason == b.BALANCED


def test_cells_below_min_voltage_never_bleed():
    assert Rig([3700, 3790, 3810, 3700], VOLTAGE).decide() == [2]
    r = Rig([3700, 3790, 3750, 3700], VOLTAGE)
    assert r.decide() == [] and r.bal.out.reason == b.BELOW_MIN_VOLTAGE


def _blocked_reason(overrides=None, current_ma=0, fault=False, stale=False, dc=250):
    r = Rig([3900, 3950, 3900, 3900], overrides)
    assert r.decide() == [1]
    r.m.current_ma = current_ma
    r.fault = fault
    if stale:
        r.now += 20000
        r.m.evaluate(r.now)
        r.bal.update(r.m, False, r.now)
    else:
        r.m.temp_dc[0] = dc
        r.m.update_stats()
        r.cycle()
    assert r.bal.out.count == 0 and bytes(r.bal.out.mask) == b"\x00" and r.bal.out.changed
    return r.bal.out.reason


def test_blocked_reasons_switch_off_at_once():
    assert _blocked_reason(current_ma=101) == b.NOT_AT_REST_OR_CHARGING
    assert _blocked_reason(fault=True) == b.FAULT
    assert _blocked_reason(stale=True) == b.NO_DATA
    assert _blocked_reason(dc=500) == b.OVER_TEMPERATURE
    r = Rig([3900, 3950], {"balance_enable": 0})
    assert r.decide() == [] and r.bal.out.reason == b.DISABLED


def test_temperature_limit():
    assert Rig([3900, 3950], dc=499).decide() == [1]
    r = Rig([3900, 3950], dc=500)
    assert r.decide() == [] and r.bal.out.reason == b.OVER_TEMPERATURE


def test_allowed_while_charging():
    r = Rig([3900, 3950], current_ma=-3000)
    assert r.decide() == [1] and r.bal.out.reason == b.ACTIVE


def test_bleeding_waits_until_the_pack_has_settled():
    # A drive's idle seconds are not a rest: bleeding needs balance_settle_ms at rest or charging,
    # and any moment of discharge starts the count again.
    r = Rig([3900, 3950], {"balance_settle_ms": 2000})
    r.cycle(15)
    assert bled(r.bal, 2) == [] and r.bal.out.reason == b.NOT_AT_REST_OR_CHARGING
    r.m.current_ma = 5000
    r.cycle(1)
    r.m.current_ma = 0
    r.cycle(19)
    assert bled(r.bal, 2) == [], "the discharge moment restarted the settling time"
    r.cycle(4)
    assert bled(r.bal, 2) == [1] and r.bal.out.reason == b.ACTIVE


def test_clear():
    r = Rig([3900, 3950])
    r.decide()
    r.bal.clear()
    assert r.bal.out.count == 0 and r.bal.out.mask[0] == 0 and r.bal.out.reason == b.FAULT


def test_192_cells_mask_layout():
    cells = [3900] * 192
    cells[191] = 3990
    cells[8] = 3980
    r = Rig(cells)
    r.decide()
    assert len(r.bal.out.mask) == 24 and r.bal.out.mask[23] == 0x80 and r.bal.out.mask[1] == 0x01
    assert r.bal.out.count == 2
