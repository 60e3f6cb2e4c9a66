"""Configuration keys written by a diagnostic tester (UDS 0x2E), kept until the next start.

Owns the persisted list of (schema row, value) pairs that UDS writes add on top of the board's
own configuration file: at most `SLOTS` keys (a later write of the same key replaces its value).
A persistence client (A/B records with CRC, firmware/persistence.py) under the name "diagcfg".
`merged(board, overrides)` is what config.from_board applies at start-up.
"""

import struct

from .compat import const
from .persistence import Persistence

SLOTS = const(16)
_ENTRY = const(6)  # row u16, value i32


class DiagConfig:
    """The written keys; see the module docstring."""

    def __init__(self):
        self.state_size = 2 + SLOTS * _ENTRY
        self._buf = bytearray(self.state_size)
        self.count = 0
        self.dirty = False

    def entry(self, k):
        """(schema row, value) of entry k < count."""
        return struct.unpack_from("<Hi", self._buf, 2 + k * _ENTRY)

    def set(self, row, value):
        """Store row = value; False when every slot holds another key."""
        for k in range(self.count):
            if self.entry(k)[0] == row:
                break
        else:
            k = self.count
            if k >= SLOTS:
                return False
            self.count = k + 1
        struct.pack_into("<Hi", self._buf, 2 + k * _ENTRY, row, value)
        self.dirty = True
        return True

    def save_state(self, buf):
        self._buf[0] = self.count
        self._buf[1] = 0xD1
        buf[:] = self._buf
        self.dirty = False

    def restore_state(self, buf):
        if buf[1] != 0xD1 or buf[0] > SLOTS:
            return False
        self._buf[:] = buf
        self.count = buf[0]
        return True


def store(board):
    """The written keys of `board` and the persistence that keeps them."""
    dc = DiagConfig()
    p = Persistence(board)
    p.register("diagcfg", dc, 0)
    p.restore()
    return dc, p


def merged(board, overrides):
    """`overrides` (the board's configuration file, a dict or None) plus the written keys."""
    from .config import key_at

    dc, _ = store(board)
    if not dc.count:
        return overrides
    out = dict(overrides or {})
    for k in range(dc.count):
        row, value = dc.entry(k)
        name = key_at(row)
        if name is not None:
            out[name] = value
    return out
