"""Fault memory: stored faults (DTCs) with their ISO 14229 status, occurrences and freeze frame.

Owns the operating-seconds counter (the firmware's notion of time across resets), one fixed
32-byte record per fault bit of the catalogue (firmware/protection.py; the size is bounded by
construction and nothing is ever replaced) and one ISO 14229-1 DTC status byte per bit. A fault's
record is created at its first occurrence (a rising edge of its active bit), with the freeze frame
of that moment:

    first_s, last_s  operating seconds of the first and the latest occurrence
    count            occurrences (rising edges), saturating at 65535
    freeze frame     lowest and highest cell mV with cell numbers, coldest and hottest
                     temperature 0.1 degC with sensor numbers, pack current mA, pack voltage mV,
                     SOC 0.01 % (the latest measurement set, whatever its freshness: a
                     MeasurementStale record freezes the values that went stale); 22 bytes,
                     little endian, in this order: `FREEZE_FMT`

The two stale faults (MeasurementStale, VcuRequestStale) are active from boot until the first
samples arrive: that is the start of an operation cycle, not a failure. Their edges are judged
once the start-up window (the longer of meas_stale_ms and vcu_stale_ms since boot) has passed, so
a board whose inputs arrive in time stores nothing, and one whose inputs never arrive stores the
fault at the end of the window. Protection still reports them (and opens) from the first cycle.

Later occurrences update last_s and count only. DTC of bit b: P1A00 + b, as a UDS DTC the three
bytes 0x1A, b, 0x00 (failure type 0).

Status bits (ISO 14229-1 D.2), per DTC, an operation cycle being one start of the firmware:
0 testFailed (active now), 1 testFailedThisOperationCycle, 2 pendingDTC (failed in this or the
previous operation cycle), 3 confirmedDTC (protection has already qualified every fault, so a
failure is confirmed; it stays until cleared: no ageing), 4 testNotCompletedSinceLastClear,
5 testFailedSinceLastClear, 6 testNotCompletedThisOperationCycle, 7 warningIndicatorRequested
(active with an open or derate tier). A test counts as completed in the first cycle whose
measurements were valid (every rule looked), or when it failed.

clear(mask) (UDS 0x14) erases the records and resets the status (0x50) of the DTCs in `mask`,
except those active at the time: a fault that is still there keeps its record and reads as failed
since the clear. `frozen` (UDS 0x85 off) stops recording; the edges are judged again when it ends.
The control cycle calls update(); it costs a loop over the bits only when an active bit changed.

Serialisation for persistence: `state_size`, `save_state(buf)`, `restore_state(buf)` (False and an
empty memory on implausible content) and `dirty` (a record or a status changed since the last
save; the seconds counter alone does not set it).
"""

import struct

from .compat import const
from .protection import DERATE_MASK, FAULT_BITS, FAULT_MEAS_STALE, FAULT_VCU_STALE, OPEN_MASK

_REC = "<IIHHHBBhhBBiIH"  # first, last, count, vmin, vmax, vmin#, vmax#, tmin, tmax, tmin#,
# tmax#, current, pack, soc
FREEZE_FMT = "<HHBBhhBBiIH"  # the freeze frame: bytes 10..32 of a record
FREEZE_OFS = const(10)
FREEZE_SIZE = const(22)
_REC_SIZE = const(32)
_HDR = "<HHII"  # magic, record size, stored mask, operating seconds
_HDR_SIZE = const(12)
_MAGIC = const(0x5346)  # "FS": records plus status bytes
DTC_HIGH = const(0x1A)  # DTC of bit b: 0x1A, b, 0x00 (P1A00 + b)
STATUS_MASK = const(0xFF)  # every status bit is supported
_CLEARED = const(0x50)  # testNotCompletedSinceLastClear | testNotCompletedThisOperationCycle
_FAILED = const(0x2F)  # testFailed | TFThisOC | pending | confirmed | TFSinceLastClear
_WIR_MASK = OPEN_MASK | DERATE_MASK
_STARTUP_MASK = (1 << FAULT_MEAS_STALE) | (1 << FAULT_VCU_STALE)


class FaultMemory:
    """Active and stored faults; see the module docstring."""

    def __init__(self, cfg):
        self._cfg = cfg
        self._buf = bytearray(FAULT_BITS * _REC_SIZE)
        self.status = bytearray(FAULT_BITS)
        for b in range(FAULT_BITS):
            self.status[b] = _CLEARED
        self.state_size = _HDR_SIZE + FAULT_BITS * _REC_SIZE + FAULT_BITS
        self.stored = 0  # bit b = fault b has a record
        self.active = 0  # the active faults seen by the last update()
        self.op_s = 0
        self._ms = 0
        self._tested = False  # every test completed in this operation cycle
        self.frozen = False
        self.dirty = False
        self._startup_ms = max(cfg.meas_stale_ms, cfg.vcu_stale_ms)  # counts down after boot

    def update(self, active, meas, soc, dt_ms, valid=True):
        """Advance the operating time by dt_ms and record the faults that became active;
        `valid`: the rules saw valid measurements in this cycle (their tests completed)."""
        ms = self._ms + dt_ms
        while ms >= 1000:
            ms -= 1000
            self.op_s += 1
        self._ms = ms
        if self._startup_ms > 0:
            self._startup_ms -= dt_ms
            if self._startup_ms >= 0:
                active &= ~_STARTUP_MASK
        if self.frozen:
            return
        if valid and not self._tested:
            self._tested = True
            st = self.status
            for b in range(FAULT_BITS):
                st[b] &= 0xAF  # bits 4 and 6: tests completed
            self.dirty = True
        changed = active ^ self.active
        if not changed:
            return
        new = active & changed
        self.active = active
        self.dirty = True
        buf = self._buf
        st = self.status
        s = self.op_s
        b = 0
        while changed:
            if changed & 1:
                if new >> b & 1:
                    st[b] = (st[b] | _FAILED) & 0xAF
                    if _WIR_MASK >> b & 1:
                        st[b] |= 0x80
                    o = b * _REC_SIZE
                    if self.stored >> b & 1:  # last occurrence (bytes 4..7) and count (8..9)
                        count = buf[o + 8] | buf[o + 9] << 8
                        struct.pack_into("<IH", buf, o + 4, s, min(count + 1, 65535))
                    else:
                        self.stored |= 1 << b
                        m = meas
                        struct.pack_into(
                            _REC, buf, o, s, s, 1, m.vmin_mv, m.vmax_mv, m.vmin_cell,
                            m.vmax_cell, m.tmin_dc, m.tmax_dc, m.tmin_sensor, m.tmax_sensor,
                            m.current_ma, m.pack_mv, soc,
                        )  # fmt: skip
                else:
                    st[b] &= 0x7E  # passed: testFailed and the warning indicator off
            changed >>= 1
            b += 1

    # ---- read-out (UDS 0x19) -----------------------------------------------------------------
    def occurrences(self, b):
        """(count, first_s, last_s) of fault b's record."""
        o = b * _REC_SIZE
        first, last, count = struct.unpack_from("<IIH", self._buf, o)
        return count, first, last

    def freeze_frame(self, b, out, pos):
        """Copy fault b's freeze frame (FREEZE_SIZE bytes, FREEZE_FMT) into out[pos:]."""
        o = b * _REC_SIZE + FREEZE_OFS
        out[pos : pos + FREEZE_SIZE] = self._buf[o : o + FREEZE_SIZE]

    # ---- clear (UDS 0x14) --------------------------------------------------------------------
    def clear(self, mask=(1 << FAULT_BITS) - 1):
        """Erase the DTCs in `mask` except the active ones (those stay, failed since the clear)."""
        buf = self._buf
        st = self.status
        active = self.active
        for b in range(FAULT_BITS):
            if not mask >> b & 1:
                continue
            if active >> b & 1:
                st[b] = (_FAILED | (st[b] & 0x80)) & 0xAF
                continue
            st[b] = _CLEARED
            self.stored &= ~(1 << b)
            o = b * _REC_SIZE
            for i in range(o, o + _REC_SIZE):
                buf[i] = 0
        self._tested = False
        self.dirty = True

    # ---- persistence -------------------------------------------------------------------------
    def save_state(self, buf):
        """Write the state (state_size bytes) into buf; clears `dirty`."""
        struct.pack_into(_HDR, buf, 0, _MAGIC, _REC_SIZE, self.stored, self.op_s)
        end = _HDR_SIZE + FAULT_BITS * _REC_SIZE
        buf[_HDR_SIZE:end] = self._buf
        buf[end : self.state_size] = self.status
        self.dirty = False

    def restore_state(self, buf):
        """Take a saved state (a new operation cycle begins); on implausible content keep
        nothing and return False."""
        ok = len(buf) >= self.state_size
        end = _HDR_SIZE + FAULT_BITS * _REC_SIZE
        if ok:
            magic, size, stored, op_s = struct.unpack_from(_HDR, buf, 0)
            n = FAULT_BITS
            ok = magic == _MAGIC and size == _REC_SIZE and not stored >> n
            cells = self._cfg.cell_count
            temps = self._cfg.temp_count
            b = 0
            while ok and b < n:
                o = _HDR_SIZE + b * _REC_SIZE
                r = struct.unpack_from(_REC, buf, o)
                if stored >> b & 1:
                    ok = (
                        r[2] >= 1
                        and r[0] <= r[1] <= op_s
                        and r[5] <= cells  # cell and sensor numbers: 0 = not available
                        and r[6] <= cells
                        and r[9] <= temps
                        and r[10] <= temps
                        and r[13] <= 10000
                        and buf[end + b] & 0x28 == 0x28  # stored: confirmed, failed since clear
                    )
                else:
                    ok = not any(buf[o : o + _REC_SIZE]) and not buf[end + b] & 0x2F
                b += 1
        if ok:
            self._buf[:] = buf[_HDR_SIZE:end]
            st = self.status
            for b in range(FAULT_BITS):
                s = buf[end + b]
                # The new operation cycle: nothing tested yet; pending only if it failed in the
                # last one (or that one never completed its test).
                pending = s & 0x02 or (s & 0x44 == 0x44)
                st[b] = (s & 0x38) | 0x40 | (0x04 if pending else 0)
            self.stored = stored
            self.op_s = op_s
        else:
            self.active = 0
            self.clear()
            self.op_s = 0
        self.active = 0
        self._tested = False
        self._ms = 0
        self.dirty = False
        return ok
