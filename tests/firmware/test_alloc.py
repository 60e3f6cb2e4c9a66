"""The per-cycle methods allocate nothing (measured on MicroPython; CPython boxes every int)."""

import gc

from fw_support import estimator, fresh
from test_app import FakeBoard, inject, vcu_request

from firmware import app, can_codec, gcpolicy
from firmware import can_codec_peer as peer
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
            assert _allocated(bal.clear) == 0
            bal = cycle = None  # one 192-cell rig on the heap at a time (the balancer holds one)
            gc.collect()


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
        self.cycles = ticks
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
    # The main loop (app.run) for as many cycles as leave more garbage than the whole heap: 40
    # where floats box (the filters' floats), three heaps' worth at the 256 B budget where they
    # do not. Collections must happen, and every one after a cycle's work (the policy's own,
    # which records the heap in use before it). Any other collection shows as the heap in use
    # shrinking across the cycle.
    heap = gc.mem_alloc() + gc.mem_free()
    board = _LoopBoard(40 if gcpolicy.FLOATS_BOX else 3 * heap // (_CYCLE_BLOCKS * _BLOCK))
    bms = app.build(board)
    bms.gc.probe = True  # the heap before each collection: every cycle is measured
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
    try:
        app.run(board, bms.cfg, bms)
    except KeyboardInterrupt:
        pass
    assert rec[0] == board.cycles and rec[3] == 0 and bms.errors == 0
    assert rec[2] > heap  # the cycles' garbage did need collections
    assert rec[1] == 0, f"{rec[1]} of {rec[0]} cycles ran a collection"
    assert bms.gc.collections > 0 and gc.isenabled()
    # Where the free heap does not hold two cycles' garbage (`tight`), the schedule collects
    # after every cycle: that, not the headroom, is what keeps collections out of the cycles.
    assert bms.gc.tight == 1 or bms.gc.every == 1


# Per steady-state cycle, in heap blocks (gcpolicy.BLOCK_BYTES each): 16 = 256 B on a 32-bit
# board, the float filters (the estimator's pack EKF and the power prediction, SocEstimator.update
# and Sop.update) included, where floats do not box (the Cortex-M image, MICROPY_OBJ_REPR_C).
# Where they do (the unix port, stock board builds: every float result is a heap block, about 870
# blocks a cycle) the filters are counted apart and the rest is held to the 16 blocks. Both
# together stay within gcpolicy.CYCLE_BLOCKS, what the collection schedule assumes a cycle may
# leave.
_BLOCK = gcpolicy.BLOCK_BYTES
_CYCLE_BLOCKS = 16
_FLOAT_FILTER_BLOCKS = gcpolicy.CYCLE_BLOCKS - _CYCLE_BLOCKS


def _discharge_frames(board, cells, alive, current_ma):
    buf = bytearray(8)
    for g in range((cells + 3) // 4):
        can_codec.encode_bms_cell_voltages(buf, g, 3700, 3701, 3702, 3703 - g % 3)
        board.rx.append((can_codec.SIM_CELL_VOLTAGES_ID, bytes(buf)))
        can_codec.encode_bms_cell_temps(buf, g, 250, 251, 252, 253)
        board.rx.append((can_codec.SIM_CELL_TEMPS_ID, bytes(buf)))
    pack = cells * 3701 // 100
    peer.encode_sim_pack_measurements(buf, current_ma, pack, pack, alive)
    board.rx.append((can_codec.SIM_PACK_MEASUREMENTS_ID, bytes(buf)))
    neg, pre, pos = board.contactors
    peer.encode_sim_aux(buf, neg, pre, pos, current_ma)
    board.rx.append((can_codec.SIM_AUX_ID, bytes(buf)))
    board.rx.append((can_codec.VCU_REQUEST_ID, vcu_request(1, alive)))


def test_a_steady_state_cycle_allocates_within_its_budget():
    # 16 cells closed and discharging at 10 A, after 60 cycles: each of 20 cycles allocates at
    # most _CYCLE_BLOCKS besides the float filters, and those at most _FLOAT_FILTER_BLOCKS
    # (gc.mem_alloc around each part, outside the cycle's own collection).
    cells = 16
    board = FakeBoard({"cell_count": cells})
    board.can_send = lambda can_id, buf, dlc: None  # keep nothing per frame sent
    bms = app.build(board)
    floats = [0]
    update = bms.estimator.update
    sop = bms.sop.update

    def counted_update(meas, dt_ms, now_ms):
        a0 = gc.mem_alloc()
        update(meas, dt_ms, now_ms)
        floats[0] += gc.mem_alloc() - a0

    def counted_sop(meas, valid, dt_ms):
        a0 = gc.mem_alloc()
        sop(meas, valid, dt_ms)
        floats[0] += gc.mem_alloc() - a0

    bms.estimator.update = counted_update  # the estimator: its counting allocates nothing
    bms.sop.update = counted_sop
    worst = [0, 0, 0]  # beside the filters, the filters, the whole cycle (bytes)
    now = 0
    for k in range(80):
        _discharge_frames(board, cells, k, 10000)
        bms.comm.poll(now)
        now += 100
        floats[0] = 0
        if k == 60:
            # The measured cycles: the test collects before each, the policy's collection (and
            # the frames it measures the heap inside of) stays out of the figure.
            bms.gc.between = lambda failed=False: False
        if k >= 60:
            gc.collect()
        a0 = gc.mem_alloc()
        assert bms.guarded_cycle(now)
        a1 = gc.mem_alloc()
        if k >= 60:
            worst[0] = max(worst[0], a1 - a0 - floats[0])
            worst[1] = max(worst[1], floats[0])
            worst[2] = max(worst[2], a1 - a0)
    assert board.contactors == (1, 0, 1) and bms.data.faults.active == 0
    assert bms.data.model.valid and bms.data.power.discharge_ma_10s > 0  # the filters ran
    if gcpolicy.FLOATS_BOX:
        assert worst[1] > 0
        assert worst[0] <= _CYCLE_BLOCKS * _BLOCK, f"{worst[0]} B per cycle beside the filters"
        assert worst[1] <= _FLOAT_FILTER_BLOCKS * _BLOCK, f"float filters: {worst[1]} B per cycle"
    else:
        whole = worst[2]
        assert whole <= _CYCLE_BLOCKS * _BLOCK, f"{whole} B per cycle, float filters included"


def test_collection_stays_on_and_a_heap_without_room_is_counted():
    # Law: automatic collection is never switched off (it is the backstop for a burst the
    # schedule did not foresee); a cycle whose garbage the free heap after a collection cannot
    # hold twice is counted in `tight`.
    c = gcpolicy.Collector()
    c.cycle_begin()
    assert gc.isenabled() and c.tight == 1  # before any measurement
    assert c.between()  # the first collection measures the heap
    assert c.room
    c.cycle_begin()
    assert gc.isenabled() and c.tight == 1
    c._growth = gc.mem_free() + gc.mem_alloc()  # a cycle that would leave the whole heap
    c.every = 1
    c.probe = True
    assert c.between() and not c.room and c.every == 1
    c.cycle_begin()
    assert gc.isenabled() and c.tight == 2


def test_a_burst_beyond_the_schedule_costs_a_collection_not_the_cycle():
    # A cycle that allocates more than the whole free heap after the schedule's collection (a
    # burst it could not foresee) completes: the backstop collects inside it.
    board = FakeBoard({"cell_count": 8})
    bms = app.build(board)
    assert bms.guarded_cycle(100)
    assert bms.gc.between(True)  # collected and measured: the schedule has room for a cycle
    burst = gc.mem_free() // 64 + 1024  # more 64-byte blocks than the heap holds at once
    run = bms.cycle

    def bursting(now_ms):
        for _ in range(burst):
            bytearray(48)
        run(now_ms)

    bms.cycle = bursting
    assert bms.guarded_cycle(200) and bms.errors == 0
