"""The estimator's persistent record: what must survive a reset, and its plausibility check.

Little endian: magic, SOC, bound (0.01 %), hysteresis state (1e-4), current offset (mA), SOH
capacity (0.01 %) + confidence (%), SOH resistance + confidence, throughput (mAh), the RC pairs'
voltages (mV, signed: the polarisation a load left, docs/estimation.md), then every cell's SOC
(0.01 %, 2 bytes each). Persistence (persistence.py) owns the storage and the CRC; this
module owns the layout; the estimator's save_state/restore_state call it.
"""

import struct

from .compat import const
from .data import cell_soc

_FMT = "<HHHhiHBHBIhh"
HEAD = const(26)
_MAGIC = const(0xCE01)


def size(n):
    """Bytes of the record of `n` cells."""
    return HEAD + 2 * n


def save(buf, d, h, v1, v2):
    """Write SocData `d`, the hysteresis state `h` (1e-4) and the RC pairs' voltages `v1`, `v2`
    (mV, at most 2 V) to `buf`."""
    struct.pack_into(
        _FMT,
        buf,
        0,
        _MAGIC,
        d.soc,
        d.soc_bound,
        h,
        d.offset_ma,
        d.soh_cap,
        d.soh_cap_conf,
        d.soh_res,
        d.soh_res_conf,
        d.throughput_mah,
        v1,
        v2,
    )
    o = HEAD
    for i in range(len(d.soc0)):
        s = cell_soc(d, i)
        buf[o] = s & 255
        buf[o + 1] = s >> 8
        o += 2


def load(buf, n, offset_max_ma):
    """The header values (magic, SOC, bound, h, offset, SOH cap, conf, SOH res, conf, mAh, v1,
    v2) of the record of `n` cells in `buf`, or None when any value is implausible."""
    if len(buf) < HEAD + 2 * n:
        return None
    v = struct.unpack_from(_FMT, buf, 0)
    om = offset_max_ma
    if (
        v[0] != _MAGIC
        or v[1] > 10000
        or v[2] > 10000
        or not -10000 <= v[3] <= 10000
        or not -om <= v[4] <= om
        or not 0 < v[5] < 20000
        or v[6] > 100
        or not 0 < v[7] < 40000
        or v[8] > 100
        or not -2000 <= v[10] <= 2000
        or not -2000 <= v[11] <= 2000
    ):
        return None
    for i in range(n):
        if cell(buf, i) > 10000:
            return None
    return v


def cell(buf, i):
    """Cell `i`'s SOC (0.01 %) in the record `buf`."""
    return buf[HEAD + 2 * i] | buf[HEAD + 2 * i + 1] << 8
