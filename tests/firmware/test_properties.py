"""CPython only (hypothesis): the safety laws of the firmware logic, for random inputs."""

import numpy as np
from fw_support import estimator, fresh
from hypothesis import given, settings
from hypothesis import strategies as st
from vcu_signer import key_record

from firmware import can_codec, config
from firmware.balancing import ACTIVE, STRATEGY_SOC, Balancer
from firmware.comm import Comm, crc8_j1850
from firmware.contactors import CLOSED, OPENING, PRECHARGE, Contactors
from firmware.data import Data, cell_soc
from firmware.limits import Limits
from firmware.measurement import Measurements
from firmware.ocv import ocv_to_soc, soc_to_ocv
from firmware.protection import FAULT_MEAS_STALE, Protection
from sim.pack import Pack, PackConfig
from sim.sensors import SensorModel

NMC = config.load()
SLOW = settings(deadline=None, max_examples=200)

contactor_steps = st.lists(
    st.tuples(
        st.integers(0, 2000),  # ms since the previous step
        st.booleans(),  # close_request
        st.booleans(),  # open_required
        st.integers(-1000, 900000),  # pack_mv
        st.integers(-1000, 900000),  # link_mv
        st.integers(-100000, 100000),  # current_ma
        st.integers(-1, 7),  # feedback bits (-1: no new reading)
    ),
    max_size=60,
)


@SLOW
@given(contactor_steps)
def test_contactors_never_close_without_a_completed_precharge(steps):
    """Law: after a step with open_required every contactor is open; pos closes only from
    PRECHARGE (neg and pre already closed) with a positive pack voltage and the link within
    precharge_pct of it, so every closed period of pos starts with a completed precharge; pos
    is never closed without neg; it stays closed without a request only while OPENING waits
    (bounded) for the current to fall."""
    k = Contactors(NMC)
    now = 0
    opening_since = None
    for dt, close, open_required, pack, link, current, feedback in steps:
        now += dt
        if feedback >= 0:
            k.check_feedback(now, feedback)
        before, pos_before = k.out.state, k.out.pos
        k.step(now, close, open_required, pack, link, current)
        if open_required:
            assert (k.out.neg, k.out.pre, k.out.pos) == (0, 0, 0)
        if k.out.pos:
            assert k.out.neg and not k.out.pre and k.out.state in (CLOSED, OPENING)
            assert close or k.out.state == OPENING
            if not pos_before:
                assert before == PRECHARGE and pack > 0 and link * 100 >= pack * 95
        if k.out.state == OPENING:
            opening_since = now if before != OPENING else opening_since
            assert now - opening_since < NMC.open_wait_ms


vcu_payloads = st.tuples(st.binary(min_size=7, max_size=7), st.integers(0, 255))


class _Board:
    rx_dlc = 8

    def __init__(self, frames):
        self.rx = list(frames)

    def can_recv(self, buf):
        if not self.rx:
            return -1
        buf[:] = self.rx.pop(0)
        return can_codec.VCU_REQUEST_ID

    def can_send(self, can_id, buf, dlc):
        pass

    def storage_read(self, name):
        return key_record() if name == "vcu_key" else None


@SLOW
@given(st.lists(vcu_payloads, min_size=1, max_size=30))
def test_a_frame_with_a_wrong_crc_never_closes(frames):
    """Law: a VCU_Request whose CRC byte is not the CRC-8 SAE J1850 of the data ID and bytes
    0..6 is never taken: it closes nothing, refreshes nothing, and is counted."""
    data = []
    for payload, crc in frames:
        good = crc8_j1850(bytes((0, 3)) + payload, 9)
        data.append(payload + bytes((crc if crc != good else (crc + 1) & 0xFF,)))
    comm = Comm(_Board(data), NMC, Data(NMC))
    while comm.poll(0):  # the receive budget may leave frames for another pass
        pass
    assert comm.vcu_close == 0 and not comm.vcu_e2e.seen
    assert comm.vcu_stale(comm.cfg.vcu_stale_ms + 1)
    assert comm.vcu_errors == len(frames)


@SLOW
@given(st.lists(st.binary(min_size=7, max_size=7), min_size=1, max_size=40))
def test_a_frame_with_the_right_crc_but_no_key_behind_it_never_closes(payloads):
    """Law: a VCU_Request with a correct E2E CRC (anyone can compute one) whose MAC was not made
    with the vehicle's key is never taken, whatever its counter and freshness bits say."""
    data = [p + bytes((crc8_j1850(bytes((0, 3)) + p, 9),)) for p in payloads]
    comm = Comm(_Board(data), NMC, Data(NMC))
    while comm.poll(0):  # the receive budget may leave frames for another pass
        pass
    assert comm.vcu_close == 0 and not comm.vcu_e2e.seen
    assert comm.vcu_stale(comm.cfg.vcu_stale_ms + 1)
    assert comm.vcu_errors == len(payloads)


cell_mv = st.integers(2500, 4400)


@SLOW
@given(
    st.lists(cell_mv, min_size=1, max_size=12),
    st.lists(st.tuples(st.integers(-100000, 100000), st.integers(0, 2000)), max_size=80),
)
def test_soc_stays_in_range(cells, steps):
    """Law: pack, min, max and every cell SOC stay within 0..10000 and min <= pack <= max."""
    cfg, m = fresh({"cell_count": len(cells), "capacity_mah": 100})
    for i, v in enumerate(cells):
        m.cell_mv[i] = v
    est = estimator(cfg)
    est.update(m, 100, 0)
    for i_ma, dt in steps:
        m.current_ma = i_ma
        est.update(m, dt, 0)
        assert 0 <= est.out.soc_min <= est.out.soc <= est.out.soc_max <= 10000
        for i in range(len(cells)):
            assert est.out.soc_min <= cell_soc(est.out, i) <= est.out.soc_max


@SLOW
@given(st.lists(st.tuples(st.integers(-200000, 200000), st.integers(0, 1000)), max_size=200))
def test_coulomb_counting_is_exact(steps):
    """Law: away from full and empty, the counter equals the integral of current, to the mA*ms."""
    cfg, m = fresh({"capacity_mah": 200000}, mv=soc_to_ocv(5000, NMC.ocv_mv))
    est = estimator(cfg)
    est.update(m, 100, 0)
    total = 0
    for i_ma, dt in steps:
        m.current_ma = i_ma
        est.update(m, dt, 0)
        total += i_ma * dt
    assert est.out.discharged_mas * 1000 + est._rem == total


@SLOW
@given(st.integers(0, 9000), st.integers(0, 9000))
def test_ocv_lookup_is_monotonic_and_clamped(a, b):
    """Law: a higher voltage never maps to a lower SOC; results stay within 0..10000."""
    for table in (NMC.ocv_mv, config.load({"chemistry": "LFP"}).ocv_mv):
        lo, hi = min(a, b), max(a, b)
        assert 0 <= ocv_to_soc(lo, table) <= ocv_to_soc(hi, table) <= 10000


@SLOW
@given(
    st.lists(st.integers(0, 6000), min_size=2, max_size=16),
    st.lists(st.integers(-600, 1600), min_size=1, max_size=16),
    st.booleans(),
    st.sampled_from(("NMC", "LFP")),
)
def test_limits_within_maxima_and_zero_when_open(cells, temps, open_required, chemistry):
    """Law: 0 <= limit <= configured maximum; both 0 when open_required, charge 0 at or above
    the CV target, discharge 0 at or below the minimum cell voltage."""
    cfg = config.load({"chemistry": chemistry, "cell_count": len(cells), "temp_count": len(temps)})
    m = Measurements(cfg)
    for i, v in enumerate(cells):
        m.cell_mv[i] = v
    for i, t in enumerate(temps):
        m.temp_dc[i] = t
    m.update_stats()
    lim = Limits(cfg)
    lim.update(m, open_required)
    assert 0 <= lim.out.charge_ma <= cfg.max_charge_ma
    assert 0 <= lim.out.discharge_ma <= cfg.max_discharge_ma
    if open_required:
        assert lim.out.charge_ma == 0 and lim.out.discharge_ma == 0
    if max(cells) >= cfg.cell_charge_max_mv:
        assert lim.out.charge_ma == 0
    if min(cells) <= cfg.cell_discharge_min_mv:
        assert lim.out.discharge_ma == 0


@SLOW
@given(
    st.lists(st.lists(st.integers(3700, 4000), min_size=20, max_size=20), min_size=1, max_size=8),
    st.integers(1, 6),
    st.integers(0, 1),
)
def test_lowest_cell_never_bleeds(rounds, max_cells, strategy):
    """Law: no cell at the minimum voltage or below balance_min_mv bleeds (voltage strategy) or
    at the lowest charge (SOC strategy), at most balance_max_cells bleed, and `count` equals the
    number of mask bits. Each round is one decision, at the end of a measurement window."""
    o = {"cell_count": 20, "balance_max_cells": max_cells, "balance_strategy": strategy}
    cfg, m = fresh(dict(o, meas_stale_ms=10000))  # fresh for all rounds
    est = estimator(cfg)
    est.update(m, 100, 0)
    bal = Balancer(cfg, est.data)
    now = 0
    bal.update(m, False, now)
    for cells in rounds:
        for i, v in enumerate(cells):
            m.cell_mv[i] = v
        m.update_stats()
        est.data.charge.anchor(m.cell_mv)  # as after a rest: each cell's charge from its OCV
        now += cfg.balance_measure_ms
        bal.update(m, False, now)
        bled = [i for i in range(20) if bal.out.mask[i >> 3] & (1 << (i & 7))]
        assert len(bled) == bal.out.count <= max_cells
        assert bal.out.count == 0 or bal.out.reason == ACTIVE
        lowest = min(est.data.charge.cell_mas) if bal.out.strategy == STRATEGY_SOC else min(cells)
        for i in bled:
            level = est.data.charge.cell_mas[i] if bal.out.strategy == STRATEGY_SOC else cells[i]
            assert level > lowest and cells[i] >= cfg.balance_min_mv
        bal.clear()  # back to the start of a measurement window
        bal.update(m, False, now)


@SLOW
@given(
    st.lists(st.tuples(st.integers(0, 1000), cell_mv, st.integers(-100000, 100000)), max_size=30)
)
def test_stale_always_opens(history):
    """Law: whatever happened before, a check with stale measurements requires open contactors
    at once and reports MeasurementStale."""
    cfg, m = fresh()
    prot = Protection(cfg)
    now = 0
    for dt, mv, i_ma in history:
        now += dt
        m.cell_mv[0] = mv
        m.current_ma = i_ma
        m.update_stats()
        prot.check(m, now, False, False)
        prot.request_reset()
    prot.check(m, now + 1, True, False)
    assert prot.out.open_required and prot.out.active & (1 << FAULT_MEAS_STALE)


@SLOW
@given(st.lists(st.integers(-70000, 70000), min_size=4, max_size=4), st.integers(0, 3))
def test_malformed_cell_values_are_never_plausible(values, group):
    """Law: a cell value outside the physical range (also beyond the array type) is implausible."""
    cfg, m = fresh()
    m.set_cells(group, values[0], values[1], values[2], values[3], 0)
    m.set_pack(0, sum(m.cell_mv), 0, 0)  # isolate the cell range rule
    ok = all(cfg.plaus_cell_min_mv <= v <= cfg.plaus_cell_max_mv for v in values)
    assert m.plausible() == ok


@SLOW
@given(
    st.integers(1, 40),  # cells
    st.data(),
    st.sampled_from(["NMC", "LFP"]),
    st.integers(0, 500),  # sense line, milliohm
    st.integers(10, 100),  # bleed resistor, ohm
    st.floats(-5.0, 5.0),  # pack current, A (positive = discharge)
)
def test_sense_line_compensation_recovers_plant_voltages(n, data, chem, sense_mohm, bleed, amps):
    """Law: compensating the plant's sense-line error (sim/sensors.py, noise off) with the mask
    that was on recovers the plant's true terminal voltages within 3 mV (quantisation and
    rounding), for any bleed pattern, including both end cells."""
    bleeding = data.draw(st.lists(st.booleans(), min_size=n, max_size=n))
    soc = data.draw(st.floats(0.1, 1.0))
    pack = Pack(PackConfig(chemistry=chem, n_cells=n, soc_mean=soc, bleed_ohm=float(bleed)))
    pack.set_balancing(np.array(bleeding))
    pack.step(0.1, amps)
    exact = {k: 0.0 for k in ("cell_noise_v", "cell_offset_sigma_v", "temp_noise_c")}
    exact.update({k: 0.0 for k in ("current_noise_a", "current_offset_a", "pack_noise_v")})
    sensed = SensorModel(**exact, sense_line_ohm=sense_mohm / 1000).measure(pack).cell_mv
    cfg = config.load(
        {
            "chemistry": chem,
            "cell_count": n,
            "balance_sense_mohm": sense_mohm,
            "balance_bleed_mohm": bleed * 1000,
        }
    )
    m = Measurements(cfg)
    raw = [int(v) for v in sensed] + [0, 0, 0]
    for g in range((n + 3) // 4):
        m.set_cells(g, raw[4 * g], raw[4 * g + 1], raw[4 * g + 2], raw[4 * g + 3], 0)
    mask = bytearray((n + 7) // 8)
    for i in range(n):
        if bleeding[i]:
            mask[i >> 3] |= 1 << (i & 7)
    m.compensate(mask)
    true_mv = pack.cell_voltage_v * 1000
    err = np.abs(np.array(list(m.cell_mv)) - true_mv)
    assert err.max() <= 3.0, (err.max(), list(m.cell_mv), true_mv)


_PERIOD = 1 << 30  # the tick counters' wrap


@settings(max_examples=300, deadline=None)
@given(
    now=st.one_of(st.integers(0, 1000), st.integers(_PERIOD - 1000, _PERIOD - 1)),
    ages=st.lists(st.integers(-800, 800), min_size=8, max_size=8),
    unseen=st.integers(-1, 7),
)
def test_stale_verdict_matches_the_age_of_every_slot(now, ages, unseen):
    # The fast path (oldest and newest stamp) agrees with judging each slot, across the wrap.
    cfg = config.load({"cell_count": 8, "temp_count": 8, "meas_stale_ms": 500})
    m = Measurements(cfg)
    slots = len(m._rx_ms)
    for s in range(slots):
        m._rx_ms[s] = (now - ages[s % len(ages)]) % _PERIOD
        m._seen[s] = 1
    if unseen >= 0:
        m._seen[unseen % slots] = 0
    want = unseen >= 0 or any(not -500 <= ages[s % len(ages)] <= 500 for s in range(slots))
    assert m._stale(now) == want
    if want and unseen < 0:  # the stale slots are the ones found stale, and stay so
        assert [m._seen[s] for s in range(slots)] == [
            1 if -500 <= ages[s % len(ages)] <= 500 else 0 for s in range(slots)
        ]


@given(st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=40))
def test_stats_take_the_first_index_of_min_and_max(values):
    from array import array

    from firmware.measurement import _scan

    r = array("i", [0] * 6)
    _scan(array("H", values), r, 0)
    n = len(values)
    assert list(r) == [
        min(values),
        values.index(min(values)),
        max(values),
        values.index(max(values)),
        sum(values),
        (sum(values) + n // 2) // n,
    ]


@settings(max_examples=200, deadline=None)
@given(
    bits=st.integers(0, (1 << 29) - 1),
    conds=st.integers(0, (1 << 29) - 1),
    pending=st.integers(0, (1 << 29) - 1),
    latched=st.integers(0, (1 << 29) - 1),
    now=st.integers(0, 5000),
)
def test_rules_at_once_equal_one_rule_per_bit(bits, conds, pending, latched, now):
    cfg = config.load()
    a = Protection(cfg)
    b = Protection(cfg)
    for p in (a, b):
        p._pending = pending
        p._latched = latched
        for k in range(29):
            p._since[k] = 37 * k
    a._rules(bits, conds, now)
    for k in range(29):
        if bits >> k & 1:
            b._rule(k, bool(conds >> k & 1), now)
    assert (a._pending, a._latched, list(a._since)) == (b._pending, b._latched, list(b._since))
