"""Fault memory: stored faults with first and last occurrence, count and a freeze frame.

Owns the operating-seconds counter (the firmware's notion of time across resets, once the
integrator's persistence restores it) and one fixed 32-byte record per fault bit of the catalogue:
the size is bounded by construction and nothing is ever replaced. A fault's record is created at
its first occurrence (a rising edge of its active bit), with the freeze frame of that moment:

    first_s, last_s  operating seconds of the first and the latest occurrence
    count            occurrences (rising edges), saturating at 65535
    freeze frame     lowest and highest cell mV with cell numbers, coldest and hottest
                     temperature 0.1 degC with sensor numbers, pack current mA, pack voltage mV,
                     SOC 0.01 % (the latest measurement set, whatever its freshness: a
                     MeasurementStale record freezes the values that went stale)

Later occurrences update last_s and count only. clear() (DIAG_Request CLEAR) empties every record;
the counter keeps running. Serialisation for persistence: `state_size`, `save_state(buf)`,
`restore_state(buf)` (False and an empty memory on implausible content) and `dirty` (a record
changed since the last save; the seconds counter alone does not set it).
"""

import struct

from .compat import const
from .protection import FAULT_BITS

_REC = "<IIHHHBBhhBBiIH"  # first, last, count, vmin, vmax, vmin#, vmax#, tmin, tmax, tmin#,
# tmax#, current, pack, soc
_REC_SIZE = const(32)
_HDR = "<HHII"  # magic, record size, stored mask, operating seconds
_HDR_SIZE = const(12)
_MAGIC = const(0x4D46)  # "FM"
_DTC_BASE = const(0x1A00)  # DTC of bit b: P1A00 + b (firmware/protection.py's table)


class FaultMemory:
    """Active and stored faults; see the module docstring."""

    def __init__(self, cfg):
        self._cfg = cfg
        self._buf = bytearray(FAULT_BITS * _REC_SIZE)
        self.state_size = _HDR_SIZE + FAULT_BITS * _REC_SIZE
        self.stored = 0  # bit b = fault b has a record
        self.active = 0  # the active faults seen by the last update()
        self.op_s = 0
        self._ms = 0
        self.dirty = False

    def update(self, active, meas, soc, dt_ms):
        """Advance the operating time by dt_ms and record the faults that became active."""
        ms = self._ms + dt_ms
        while ms >= 1000:
            ms -= 1000
            self.op_s += 1
        self._ms = ms
        new = active & ~self.active
        self.active = active
        buf = self._buf
        s = self.op_s
        b = 0
        while new:
            if new & 1:
                o = b * _REC_SIZE
                if self.stored >> b & 1:  # last occurrence (bytes 4..7) and count (8..9)
                    count = buf[o + 8] | buf[o + 9] << 8
                    struct.pack_into("<IH", buf, o + 4, s, min(count + 1, 65535))
                else:
                    self.stored |= 1 << b
                    m = meas
                    struct.pack_into(
                        _REC, buf, o, s, s, 1, m.vmin_mv, m.vmax_mv, m.vmin_cell, m.vmax_cell,
                        m.tmin_dc, m.tmax_dc, m.tmin_sensor, m.tmax_sensor, m.current_ma,
                        m.pack_mv, soc,
                    )  # fmt: skip
                self.dirty = True
            new >>= 1
            b += 1

    def entry(self, b):
        """The 16 BMS_FaultMemory values of fault b's record (see dbc/cellguard.dbc): a new list,
        only while a tester reads the memory."""
        r = struct.unpack_from(_REC, self._buf, b * _REC_SIZE)
        e = [0] * 16
        e[0] = _DTC_BASE + b
        e[1] = min(r[2], 32767)
        e[2] = r[0]
        e[3] = self.active >> b & 1
        e[4] = r[1]
        e[5] = r[13]
        e[6] = r[12]
        e[7] = max(-32768, min(32767, r[11] // 100 if r[11] >= 0 else -(-r[11] // 100)))
        e[8] = r[3]
        e[9] = r[5]
        e[10] = r[4]
        e[11] = r[6]
        e[12] = r[9]
        e[13] = r[7]
        e[14] = r[10]
        e[15] = r[8]
        return e

    def clear(self):
        buf = self._buf
        for i in range(len(buf)):
            buf[i] = 0
        self.stored = 0
        self.dirty = True

    def save_state(self, buf):
        """Write the state (state_size bytes) into buf; clears `dirty`."""
        struct.pack_into(_HDR, buf, 0, _MAGIC, _REC_SIZE, self.stored, self.op_s)
        buf[_HDR_SIZE : self.state_size] = self._buf
        self.dirty = False

    def restore_state(self, buf):
        """Take a saved state; on implausible content keep nothing and return False."""
        ok = len(buf) >= self.state_size
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
                    )
                else:
                    ok = not any(buf[o : o + _REC_SIZE])
                b += 1
        if ok:
            self._buf[:] = buf[_HDR_SIZE : self.state_size]
            self.stored = stored
            self.op_s = op_s
        else:
            self.clear()
            self.op_s = 0
        self._ms = 0
        self.dirty = False
        return ok
