"""Fault memory: bounded records with first/last occurrence, count and freeze frame; the
persistence hooks (round trip, implausible content rejected). Runs under CPython and MicroPython.
"""

from fw_support import fresh

from firmware import protection as p
from firmware.fault_memory import FaultMemory


def _bit(b):
    return 1 << b


def _fm():
    cfg, m = fresh(mv=3700, dc=250, current_ma=-1234)
    m.cell_mv[3] = 3650
    m.cell_mv[9] = 3800
    m.temp_dc[2] = 200
    m.temp_dc[11] = 310
    m.update_stats()
    return cfg, m, FaultMemory(cfg)


def test_first_occurrence_freezes_the_measurements():
    cfg, m, fm = _fm()
    fm.update(0, m, 5000, 2500)  # 2.5 s of operation, nothing active
    assert fm.op_s == 2 and fm.stored == 0 and not fm.dirty
    fm.update(_bit(p.FAULT_CELL_OV), m, 5000, 100)
    assert fm.stored == _bit(p.FAULT_CELL_OV) and fm.dirty
    e = list(fm.entry(p.FAULT_CELL_OV))
    assert e[0] == 0x1A00  # DTC P1A00
    assert e[1] == 1  # count
    assert e[2] == 2 and e[4] == 2  # first and last occurrence, operating seconds
    assert e[3] == 1  # active
    assert e[5] == 5000  # SOC 0.01 %
    assert e[6] == m.pack_mv and e[7] == -12  # pack mV, current 0.1 A (toward zero)
    assert (e[8], e[9], e[10], e[11]) == (3650, 4, 3800, 10)  # cells numbered from 1
    assert (e[12], e[13], e[14], e[15]) == (3, 200, 12, 310)


def test_later_occurrences_count_and_keep_the_first_freeze_frame():
    cfg, m, fm = _fm()
    ov = _bit(p.FAULT_CELL_OV)
    fm.update(ov, m, 5000, 1000)
    fm.update(ov, m, 5000, 1000)  # still active: not a new occurrence
    m.cell_mv[3] = 3600
    m.update_stats()
    fm.update(0, m, 4000, 1000)
    fm.update(ov, m, 4000, 3000)
    e = fm.entry(p.FAULT_CELL_OV)
    assert e[1] == 2 and e[2] == 1 and e[4] == 6
    assert e[8] == 3650 and e[5] == 5000  # the freeze frame of the first occurrence
    fm.update(0, m, 4000, 100)
    assert fm.entry(p.FAULT_CELL_OV)[3] == 0  # stored, no longer active


def test_bounded_one_record_per_fault_and_count_saturates():
    cfg, m, fm = _fm()
    every = (1 << p.FAULT_BITS) - 1
    size = len(fm._buf)
    for _ in range(3):
        fm.update(every, m, 0, 100)
        fm.update(0, m, 0, 100)
    assert fm.stored == every and len(fm._buf) == size == p.FAULT_BITS * 32
    fm._buf[8] = 0xFE  # bit 0's count: 65534
    fm._buf[9] = 0xFF
    for _ in range(3):
        fm.update(1, m, 0, 0)
        fm.update(0, m, 0, 0)
    assert fm._buf[8] | fm._buf[9] << 8 == 65535  # saturated
    assert fm.entry(0)[1] == 32767  # the CAN signal's range


def test_clear_empties_the_records_not_the_clock():
    cfg, m, fm = _fm()
    fm.update(_bit(p.FAULT_CELL_UV), m, 0, 7000)
    fm.dirty = False
    fm.clear()
    assert fm.stored == 0 and fm.dirty and fm.op_s == 7
    assert not any(fm._buf)


def test_save_and_restore_round_trip():
    cfg, m, fm = _fm()
    fm.update(_bit(p.FAULT_CELL_OV) | _bit(p.FAULT_STORAGE), m, 4321, 12000)
    buf = bytearray(fm.state_size)
    fm.save_state(buf)
    assert not fm.dirty
    other = FaultMemory(cfg)
    assert other.restore_state(buf)
    assert other.stored == fm.stored and other.op_s == 12 and not other.dirty
    for b in (p.FAULT_CELL_OV, p.FAULT_STORAGE):
        assert list(other.entry(b))[:3] == list(fm.entry(b))[:3]
        assert list(other.entry(b))[4:] == list(fm.entry(b))[4:]


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
