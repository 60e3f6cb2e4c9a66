"""Fault memory: bounded records with first/last occurrence, count and freeze frame; the ISO
14229-1 DTC status bits per DTC; clearing never drops an active fault; the persistence hooks
(round trip, a new operation cycle at restore, implausible content rejected). Runs under CPython
and MicroPython.
"""

import struct

from fw_support import fresh

from firmware import protection as p
from firmware.fault_memory import FREEZE_FMT, FREEZE_SIZE, FaultMemory

TF = 0x01  # testFailed
TFTOC = 0x02  # testFailedThisOperationCycle
PENDING = 0x04
CONFIRMED = 0x08
TNCSLC = 0x10  # testNotCompletedSinceLastClear
TFSLC = 0x20  # testFailedSinceLastClear
TNCTOC = 0x40  # testNotCompletedThisOperationCycle
WIR = 0x80  # warningIndicatorRequested


def _bit(b):
    return 1 << b


# A start-up window (meas_stale_ms, vcu_stale_ms) shorter than every step of these tests: the
# tests of the window itself use the default configuration.
SHORT_STARTUP = {"cycle_ms": 10, "meas_stale_ms": 20, "vcu_stale_ms": 20}


def _fm():
    cfg, m = fresh(SHORT_STARTUP, mv=3700, dc=250, current_ma=-1234)
    m.cell_mv[3] = 3650
    m.cell_mv[9] = 3800
    m.temp_dc[2] = 200
    m.temp_dc[11] = 310
    m.update_stats()
    return cfg, m, FaultMemory(cfg)


def _freeze(fm, b):
    out = bytearray(FREEZE_SIZE)
    fm.freeze_frame(b, out, 0)
    return struct.unpack(FREEZE_FMT, out)


def test_first_occurrence_freezes_the_measurements():
    cfg, m, fm = _fm()
    fm.update(0, m, 5000, 2500)  # 2.5 s of operation, nothing active
    assert fm.op_s == 2 and fm.stored == 0
    fm.dirty = False
    fm.update(_bit(p.FAULT_CELL_OV), m, 5000, 100)
    assert fm.stored == _bit(p.FAULT_CELL_OV) and fm.dirty
    assert fm.occurrences(p.FAULT_CELL_OV) == (1, 2, 2)  # count, first and last operating s
    vmin, vmax, vmin_n, vmax_n, tmin, tmax, tmin_n, tmax_n, current, pack, soc = _freeze(fm, 0)
    assert (vmin, vmin_n, vmax, vmax_n) == (3650, 4, 3800, 10)  # cells numbered from 1
    assert (tmin_n, tmin, tmax_n, tmax) == (3, 200, 12, 310)
    assert current == -1234 and pack == m.pack_mv and soc == 5000


def test_later_occurrences_count_and_keep_the_first_freeze_frame():
    cfg, m, fm = _fm()
    ov = _bit(p.FAULT_CELL_OV)
    fm.update(ov, m, 5000, 1000)
    fm.update(ov, m, 5000, 1000)  # still active: not a new occurrence
    m.cell_mv[3] = 3600
    m.update_stats()
    fm.update(0, m, 4000, 1000)
    fm.update(ov, m, 4000, 3000)
    assert fm.occurrences(p.FAULT_CELL_OV) == (2, 1, 6)
    f = _freeze(fm, p.FAULT_CELL_OV)
    assert f[0] == 3650 and f[10] == 5000  # the freeze frame of the first occurrence


def test_bounded_one_record_per_fault_and_count_saturates():
    cfg, m, fm = _fm()
    every = (1 << p.FAULT_BITS) - 1
    size = len(fm._buf)
    for _ in range(3):
        fm.update(every, m, 0, 100)
        fm.update(0, m, 0, 100)
    assert fm.stored == every and len(fm._buf) == size == p.FAULT_BITS * 32
    assert len(fm.status) == p.FAULT_BITS
    fm._buf[8] = 0xFE  # bit 0's count: 65534
    fm._buf[9] = 0xFF
    for _ in range(3):
        fm.update(1, m, 0, 0)
        fm.update(0, m, 0, 0)
    assert fm.occurrences(0)[0] == 65535  # saturated


def test_status_bits_follow_iso_14229():
    # Law: a never-failed DTC reads 0x50 until its test completes, then 0x00; a failure sets
    # testFailed, this cycle, pending, confirmed and since clear (and the warning indicator for
    # an open or derate tier); passing again clears testFailed and the indicator only.
    cfg, m, fm = _fm()
    ov = p.FAULT_CELL_OV
    lo = p.FAULT_LOOP_OVERRUN  # a warning-tier fault: no warning indicator
    assert fm.status[ov] == TNCSLC | TNCTOC
    fm.update(0, m, 0, 100, valid=False)  # stale data: nothing tested yet
    assert fm.status[ov] == TNCSLC | TNCTOC
    fm.update(0, m, 0, 100)
    assert fm.status[ov] == 0 and fm.status[lo] == 0
    fm.update(_bit(ov) | _bit(lo), m, 0, 100)
    assert fm.status[ov] == TF | TFTOC | PENDING | CONFIRMED | TFSLC | WIR
    assert fm.status[lo] == TF | TFTOC | PENDING | CONFIRMED | TFSLC
    fm.update(0, m, 0, 100)
    assert fm.status[ov] == TFTOC | PENDING | CONFIRMED | TFSLC


def test_a_failure_without_valid_data_is_a_completed_test():
    cfg, m, fm = _fm()
    fm.update(_bit(p.FAULT_MEAS_STALE), m, 0, 100, valid=False)
    assert fm.status[p.FAULT_MEAS_STALE] & (TNCSLC | TNCTOC) == 0
    assert fm.status[p.FAULT_MEAS_STALE] & TF


def test_clear_never_drops_an_active_fault():
    cfg, m, fm = _fm()
    ov = p.FAULT_CELL_OV
    uv = p.FAULT_CELL_UV
    fm.update(_bit(uv), m, 0, 7000)
    fm.update(_bit(ov), m, 0, 100)  # undervoltage gone, overvoltage active
    fm.dirty = False
    fm.clear()
    assert fm.dirty and fm.op_s == 7
    assert fm.stored == _bit(ov)  # the active one keeps its record
    assert fm.occurrences(ov)[0] == 1
    assert fm.status[ov] & (TF | CONFIRMED | TFSLC) == TF | CONFIRMED | TFSLC
    assert fm.status[uv] == TNCSLC | TNCTOC
    assert not any(fm._buf[uv * 32 : uv * 32 + 32])


def test_clear_of_one_dtc_leaves_the_others():
    cfg, m, fm = _fm()
    fm.update(_bit(p.FAULT_CELL_UV) | _bit(p.FAULT_OT_CHARGE), m, 0, 100)
    fm.update(0, m, 0, 100)
    fm.clear(_bit(p.FAULT_CELL_UV))
    assert fm.stored == _bit(p.FAULT_OT_CHARGE)


def test_dtc_setting_off_records_nothing_until_it_ends():
    cfg, m, fm = _fm()
    fm.frozen = True
    fm.update(_bit(p.FAULT_CELL_OV), m, 0, 1000)
    assert fm.stored == 0 and fm.op_s == 1  # the clock keeps running
    fm.frozen = False
    fm.update(_bit(p.FAULT_CELL_OV), m, 0, 100)  # still active: recorded now
    assert fm.stored == _bit(p.FAULT_CELL_OV)


def test_save_and_restore_round_trip_starts_a_new_operation_cycle():
    cfg, m, fm = _fm()
    fm.update(0, m, 0, 100)
    fm.update(_bit(p.FAULT_CELL_OV) | _bit(p.FAULT_STORAGE), m, 4321, 12000)
    fm.update(_bit(p.FAULT_STORAGE), m, 4321, 100)
    buf = bytearray(fm.state_size)
    fm.save_state(buf)
    assert not fm.dirty
    other = FaultMemory(cfg)
    assert other.restore_state(buf)
    assert other.stored == fm.stored and other.op_s == 12 and not other.dirty
    for b in (p.FAULT_CELL_OV, p.FAULT_STORAGE):
        assert other.occurrences(b) == fm.occurrences(b)
        assert _freeze(other, b) == _freeze(fm, b)
        # Failed in the last cycle: pending; this cycle has tested nothing yet.
        assert other.status[b] == PENDING | CONFIRMED | TFSLC | TNCTOC
    other.update(0, m, 0, 100)  # a cycle without failure: the tests completed
    assert other.status[p.FAULT_CELL_OV] == PENDING | CONFIRMED | TFSLC
    again = FaultMemory(cfg)
    other.save_state(buf)
    assert again.restore_state(buf)  # a whole cycle without failure: no longer pending
    assert again.status[p.FAULT_CELL_OV] == CONFIRMED | TFSLC | TNCTOC


def _saved():
    cfg, m, fm = _fm()
    fm.update(_bit(p.FAULT_CELL_OV), m, 4321, 12000)
    buf = bytearray(fm.state_size)
    fm.save_state(buf)
    return cfg, buf


def _rejected(buf, cfg):
    fm = FaultMemory(cfg)
    ok = fm.restore_state(buf)
    return not ok and fm.stored == 0 and fm.op_s == 0 and not any(fm._buf)


def test_implausible_content_is_rejected_and_leaves_an_empty_memory():
    cfg, buf = _saved()
    end = 12 + p.FAULT_BITS * 32
    assert _rejected(bytes(buf[:-1]), cfg)  # truncated
    bad = bytearray(buf)
    bad[0] ^= 1  # magic
    assert _rejected(bad, cfg)
    bad = bytearray(buf)
    bad[4:8] = bytes((0, 0, 0, 0x80))  # a stored bit beyond the catalogue
    assert _rejected(bad, cfg)
    bad = bytearray(buf)
    bad[12 + 8] = bad[12 + 9] = 0  # a stored record with count 0
    assert _rejected(bad, cfg)
    bad = bytearray(buf)
    bad[12 + 4 : 12 + 8] = bytes((0, 0, 0, 1))  # last occurrence after the clock
    assert _rejected(bad, cfg)
    bad = bytearray(buf)
    bad[12 + 14] = 200  # lowest cell number beyond the 16 cells
    assert _rejected(bad, cfg)
    bad = bytearray(buf)
    bad[12 + 32 + 5] = 1  # data in a record that is not stored
    assert _rejected(bad, cfg)
    bad = bytearray(buf)
    bad[end + 1] = TF | CONFIRMED  # a failed status without a record
    assert _rejected(bad, cfg)
    bad = bytearray(buf)
    bad[end] = 0  # a stored record whose status never failed
    assert _rejected(bad, cfg)


STALE = _bit(p.FAULT_MEAS_STALE) | _bit(p.FAULT_VCU_STALE)


def test_inputs_that_arrive_within_the_start_up_window_store_no_stale_fault():
    """Law: the stale faults of the first meas_stale_ms/vcu_stale_ms after boot are the start of
    the operation cycle; they are stored only if still active when that window ends."""
    cfg, m = fresh(mv=3700, dc=250)
    fm = FaultMemory(cfg)
    window = max(cfg.meas_stale_ms, cfg.vcu_stale_ms)
    for _ in range(window // cfg.cycle_ms):
        fm.update(STALE, m, 5000, cfg.cycle_ms)
    fm.update(0, m, 5000, cfg.cycle_ms)  # the first samples arrived in time
    assert fm.stored == 0
    assert fm.status[p.FAULT_MEAS_STALE] & (TF | CONFIRMED) == 0


def test_inputs_that_never_arrive_are_stored_when_the_window_ends():
    cfg, m = fresh(mv=3700, dc=250)
    fm = FaultMemory(cfg)
    window = max(cfg.meas_stale_ms, cfg.vcu_stale_ms)
    for _ in range(window // cfg.cycle_ms):
        fm.update(STALE | _bit(p.FAULT_CELL_OV), m, 5000, cfg.cycle_ms)
    assert fm.stored == _bit(p.FAULT_CELL_OV)  # a real fault is stored at once
    fm.update(STALE, m, 5000, cfg.cycle_ms)
    assert fm.stored == STALE | _bit(p.FAULT_CELL_OV)
    assert fm.status[p.FAULT_MEAS_STALE] & (TF | CONFIRMED) == TF | CONFIRMED
