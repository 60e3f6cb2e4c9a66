"""The per-cycle methods allocate nothing (measured on MicroPython; CPython boxes every int)."""

import gc

from fw_support import estimator, fresh
from test_app import FakeBoard, inject

from firmware import app, can_codec
from firmware.balancing import Balancer
from firmware.compat import IS_MICROPYTHON
from firmware.contactors import Contactors
from firmware.limits import Limits
from firmware.protection import FAULT_LOOP_OVERRUN, Protection

if not IS_MICROPYTHON:
    import pytest

    # CPython boxes every int, so there is nothing to measure here; these run on MicroPython
    # (the unix port and the Cortex-M image) through tests/firmware/test_micropython.py.
    pytestmark = pytest.mark.skip(
        reason="allocation is measured on MicroPython (test_micropython.py runs this module)"
    )


def _allocated(fn):
    fn()  # warm-up
    gc.collect()
    gc.disable()
    before = gc.mem_alloc()
    fn()
    used = gc.mem_alloc() - before
    gc.enable()
    return used


def _cycle_objects():
    cfg, m = fresh({"cell_count": 192}, mv=3900, current_ma=-1000)
    for i in range(0, 192, 7):
        m.cell_mv[i] = 3950 + i  # many balancing candidates: exercises the top-k insertion
    m.update_stats()
    return cfg, m


def test_measurement_and_estimation_do_not_allocate():
    cfg, m = _cycle_objects()
    est = estimator(cfg)
    assert _allocated(lambda: m.set_cells(3, 3900, 3901, 3902, 3903, 10)) == 0
    assert _allocated(lambda: m.set_temps(3, 250, 251, 252, 253, 10)) == 0
    assert _allocated(lambda: m.set_pack(-1000, 748800, 748800, 10)) == 0
    assert _allocated(lambda: m.evaluate(100)) == 0
    assert _allocated(lambda: m.plausible()) == 0
    assert _allocated(lambda: m.update_stats()) == 0
    mask = bytearray(24)
    for i in (0, 1, 2, 7, 8, 100, 190, 191):
        mask[i >> 3] |= 1 << (i & 7)
    off = bytearray(24)
    assert _allocated(lambda: m.compensate(mask)) == 0  # bleeding, both end cells included
    assert _allocated(lambda: m.compensate(off)) == 0  # restores the raw values

    def on_then_off():
        m.compensate(mask)
        m.compensate(off)

    assert _allocated(on_then_off) == 0
    est.update(m, 100, 0)
    assert _allocated(lambda: est.count(m, 100)) == 0


def test_estimation_filter_keeps_nothing():
    # The filter computes in floats, which MicroPython boxes on the heap: each cycle leaves
    # garbage, but nothing may stay live, or the heap would fill over a long run.
    cfg, m = _cycle_objects()
    est = estimator(cfg)
    est.update(m, 100, 0)
    est.update(m, 100, 100)
    gc.collect()
    before = gc.mem_alloc()
    for t in range(200, 5000, 100):
        est.update(m, 100, t)
    gc.collect()
    assert gc.mem_alloc() == before


def test_protection_does_not_allocate():
    cfg, m = _cycle_objects()
    prot = Protection(cfg)

    def cycle():
        prot.check(m, 0, False, False)
        prot.check(m, 100, True, True)
        prot.set_fault(FAULT_LOOP_OVERRUN, True)
        prot.request_reset()
        return prot.out.active + prot.out.count + prot.out.tier + prot.out.open_required

    assert _allocated(cycle) == 0


def test_contactors_limits_do_not_allocate():
    cfg, m = _cycle_objects()
    cont = Contactors(cfg)
    lim = Limits(cfg)

    def cycle():
        for t in range(0, 500, 100):
            cont.step(t, True, False, 748800, 748800)
        cont.step(600, True, True, 748800, 748800)
        lim.update(m, False)

    assert _allocated(cycle) == 0


def _balancing_cycles(strategy, adjacent):
    # Two decisions and every phase: window, decision, bleeding with booking (and, for the SOC
    # strategy, the per-cycle stop check), the next window; then a blocked cycle.
    cfg, m = _cycle_objects()
    cfg.balance_strategy = strategy
    cfg.balance_no_adjacent = adjacent
    est = estimator(cfg)
    est.update(m, 100, 0)
    bal = Balancer(cfg, est.data)
    t = [0]

    def cycle():
        for _ in range(2 * (cfg.balance_measure_ms + cfg.balance_bleed_ms) // 100):
            t[0] += 100
            bal.update(m, False, t[0])
            est.count(m, 100)
        bal.update(m, True, t[0])

    return bal, cycle


def test_balancing_does_not_allocate():
    for strategy in (0, 1):
        for adjacent in (0, 1):
            bal, cycle = _balancing_cycles(strategy, adjacent)
            assert _allocated(cycle) == 0
            assert bal.out.strategy == strategy
            cycle = None  # one 192-cell rig on the heap at a time
            gc.collect()
    assert _allocated(bal.clear) == 0


def test_anchor_does_not_allocate():
    cfg, m = _cycle_objects()
    est = estimator(cfg)
    est.update(m, 100, 0)
    assert _allocated(lambda: est.data.charge.anchor(m.cell_mv)) == 0
    assert _allocated(lambda: est.data.charge.bleed(5, 3900, 100, 33000)) == 0


class _LoopBoard(FakeBoard):
    """The fake board in lock-step: each idle wait brings one tick's frames and a SIM_Tick, until
    `ticks` ticks are through (then the loop is stopped as Ctrl-C stops it)."""

    def __init__(self, ticks):
        super().__init__()
        self.clock = 0
        self.ticks = ticks
        self.tick = bytes(bytearray((0, 0, 100, 0, 0, 0, 0, 0)))  # SIM_Tick: seq 0, 100 ms

    def ticks_ms(self):
        return self.clock

    def advance(self, ms):
        self.clock += ms
        return True

    def wdt_feed(self):
        pass

    def can_send(self, can_id, buf, dlc):
        pass  # nothing kept: the sent frames would pile up on the heap

    def wait(self, timeout_ms):
        if self.ticks == 0:
            raise KeyboardInterrupt
        self.ticks -= 1
        inject(self, alive=self.clock // 100)
        self.rx.append((can_codec.SIM_TICK_ID, self.tick))


def test_no_collection_inside_a_control_cycle():
    # The main loop (app.run) for 40 cycles whose garbage (the filter's boxed floats) is more
    # than the whole heap: collections must happen, and every one after a cycle's work (the
    # policy's own, which records the heap in use before it). Any other collection shows as
    # the heap in use shrinking across the cycle.
    board = _LoopBoard(40)
    bms = app.build(board)
    cycle = bms.guarded_cycle
    rec = [0, 0, 0, 0]  # cycles, cycles that shrank the heap, bytes allocated, failed cycles

    def measured(now_ms, late=False):
        c0 = bms.gc.collections
        a0 = gc.mem_alloc()
        ok = cycle(now_ms, late)
        a1 = gc.mem_alloc() if bms.gc.collections == c0 else bms.gc.before
        rec[0] += 1
        if a1 < a0:
            rec[1] += 1
        else:
            rec[2] += a1 - a0
        if not ok:
            rec[3] += 1
        return ok

    bms.guarded_cycle = measured
    heap = gc.mem_alloc() + gc.mem_free()
    try:
        app.run(board, bms.cfg, bms)
    except KeyboardInterrupt:
        pass
    assert rec[0] == 40 and rec[3] == 0 and bms.errors == 0
    assert rec[2] > heap  # the cycles' garbage did need collections
    assert rec[1] == 0, f"{rec[1]} of {rec[0]} cycles ran a collection"
    assert bms.gc.collections > 0 and gc.isenabled()
