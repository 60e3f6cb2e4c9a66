"""PEC15: the packet error code of the LTC681x family (CRC-15, polynomial 0x4599, seed 16).

Owns the 256-entry lookup table (built once at import: pure arithmetic, no hardware) and the
table-driven `pec15(buf, start, n)`. The 15-bit remainder is returned shifted left by one, as the
chip sends it: a 16-bit word whose LSB is always 0, high byte first on the wire.
"""

from array import array

from ..compat import const

_POLY = const(0x4599)
_SEED = const(16)


def _build():
    t = array("H", [0] * 256)
    for i in range(256):
        rem = i << 7
        for _ in range(8):
            if rem & 0x4000:
                rem = (rem << 1) ^ _POLY
            else:
                rem <<= 1
        t[i] = rem & 0xFFFF
    return t


_TABLE = _build()


def pec15(buf, start, n):
    """PEC of `buf[start:start + n]` (no slice is made); a 16-bit int, LSB 0."""
    t = _TABLE
    rem = _SEED
    for i in range(start, start + n):
        rem = ((rem << 8) ^ t[((rem >> 7) ^ buf[i]) & 0xFF]) & 0xFFFF
    return (rem << 1) & 0xFFFF
