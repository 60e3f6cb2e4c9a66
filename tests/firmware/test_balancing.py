"""Balancing on a board clock: duty cycle, the voltage strategy, heat and AFE rules."""

from fw_support import Rig, bled

from firmware import balancing as b

VOLTAGE = {"balance_strategy": 1}


def test_voltage_selects_cells_above_start_delta_never_the_lowest():
    cells = [3900, 3915, 3914, 3930, 3900, 3960, 3899, 3905, 3950]
    r = Rig(cells, VOLTAGE)
    bal = r.bal
    assert len(bal.out.mask) == 2 and bal.out.reason == b.NO_DATA
    r.cycle()
    assert bal.out.reason == b.MEASURING and bal.out.count == 0
    # vmin 3899 (cell 6): start at >= 3914
    assert r.decide() == [1, 2, 3, 5, 8] and bal.out.count == 5 and bal.out.reason == b.ACTIVE
    assert bal.out.strategy == b.STRATEGY_VOLTAGE


def test_duty_cycle_bleeds_then_measures_with_every_resistor_off():
    r = Rig([3900, 3950, 3900, 3900], VOLTAGE)
    seen = []
    for _ in range(30):
        r.cycle()
        seen.append(r.bal.out.count)
    # 3 cycles off (the 300 ms window), 10 bleeding (1 s), 3 off, 10 bleeding...
    assert seen[:3] == [0, 0, 0] and seen[3:13] == [1] * 10
    assert seen[13:16] == [0, 0, 0] and seen[16:26] == [1] * 10


def test_decisions_only_from_the_measurement_window():
    r = Rig([3900, 3950, 3900, 3900], VOLTAGE)
    assert r.decide() == [1]
    r.set([3900, 3870, 3900, 3900])  # a bleeding cell reads low through its sense lines
    r.cycle(5)
    assert bled(r.bal, 4) == [1]
    r.cycle(5)  # the window starts: every resistor off
    assert r.bal.out.reason == b.MEASURING and r.bal.out.count == 0
    r.set([3900, 3950, 3900, 3900])
    r.cycle(3)
    assert bled(r.bal, 4) == [1]


def test_changed_flags_mask_transitions_only():
    r = Rig([3900, 3950, 3900, 3900], VOLTAGE)
    r.cycle(3)
    assert not r.bal.out.changed
    r.cycle()
    assert r.bal.out.changed
    r.cycle()
    assert not r.bal.out.changed


def test_voltage_hysteresis():
    r = Rig([3900, 3920, 3900, 3900], VOLTAGE)
    assert r.decide() == [1]
    for v, bleeding in ((3910, True), (3906, True), (3905, False), (3910, False), (3915, True)):
        r.set([3900, v, 3900, 3900])
        r.cycle(13)  # to the next decision: rest of the bleed phase, then the window
        assert (bled(r.bal, 4) == [1]) == bleeding
    r.set([3900, 3905, 3900, 3900])
    r.cycle(13)
    assert r.bal.out.count == 0 and r.bal.out.reason == b.BALANCED


def test_at_most_max_cells_highest_first():
    cells = [3900] * 24
    for i in range(1, 21):
        cells[i] = 3920 + i * 3
    assert Rig(cells, VOLTAGE).decide() == list(range(13, 21))
    assert Rig(cells, {"balance_strategy": 1, "balance_max_cells": 1}).decide() == [20]


def test_no_two_adjacent_cells_bleed_when_configured():
    cells = [3900, 3960, 3950, 3940, 3900, 3930, 3935, 3900]
    assert Rig(cells, VOLTAGE).decide() == [1, 2, 3, 5, 6]
    r = Rig(cells, {"balance_strategy": 1, "balance_no_adjacent": 1})
    assert r.decide() == [1, 3, 6] and r.bal.out.count == 3
