"""Authenticated vehicle requests in the manner of AUTOSAR SecOC: a truncated MAC over the data ID,
the request and a freshness value, with the per-vehicle key from the board's secret store.

VCU_Request (dbc/cellguard.dbc) carries, besides its E2E counter and CRC (firmware/e2e.py), the low
16 bits of the VCU's freshness value FV (bytes 1..2) and a 4-byte MAC (bytes 3..6):

    MAC = HMAC-SHA-256(key, 0x03 || data ID 0x00 0x03 || byte 0 || FV as 4 bytes big-endian)[0:4]

FV counts the VCU's requests; it never repeats, across resets too: the VCU keeps it in
non-volatile memory (reserving blocks ahead, so a reset skips forward instead of reusing values).
The BMS takes a frame only when its MAC is right and its FV is newer than the last one taken: it
rebuilds the full FV from the 16 transmitted bits as the next value above the last one with those
low bits, and refuses one more than WINDOW ahead (the bounded resynchronisation: a VCU that
skipped forward after a reset is followed, a guess far ahead is not). The last FV taken is
persisted (the record "secoc", firmware/persistence.py: on every close request taken and at the
periodic interval), so after a BMS reset recorded frames older than the record are replays.

Why HMAC-SHA-256 and not AES-128-CMAC: MicroPython's `cryptolib` (AES) exists only where the port
enables it (with its TLS stack: ESP32 yes, the NUCLEO-F413ZH build and the QEMU image no), while
`hashlib.sha256` is in every port the firmware runs on; one MAC on every board keeps the VCU's
side single. The seed/key and image MAC already use the same construction (firmware/security.py).

The key: 16 random bytes per vehicle, the record "vcu_key" in the board's storage (written when
the vehicle is provisioned; the sim board's DUT and the bench share one generated per run):

    offset  size  field
    0       4     magic b"CGK1"
    4       16    key
    20      4     CRC-32 of bytes 0..20

No key (or a damaged record): no request is ever taken, so the contactors never close.
"""

import binascii

from .compat import const
from .mac import hmac_sha256

WINDOW = const(4096)  # how far ahead of the last FV taken a frame may be (bounded resync)
_FV_LIMIT = const(0x3FFF0000)  # FVs stay small ints on a 32-bit port: past this, nothing is taken
_KEY_REC_LEN = const(24)
_KEY_MAGIC = b"CGK1"
_MAC_PREFIX = const(3)  # keeps this MAC apart from the seed/key (1) and image (2) MACs
_MAC_LEN = const(4)
_STATE_MAGIC = const(0x5C)


def parse_key(data):
    """The 16-byte key of a "vcu_key" record, or None when absent or damaged."""
    if data is None or len(data) != _KEY_REC_LEN or data[0:4] != _KEY_MAGIC:
        return None
    crc = data[20] | data[21] << 8 | data[22] << 16 | data[23] << 24
    if binascii.crc32(data[0:20]) != crc:
        return None
    return bytes(data[4:20])


class SecOc:
    """Verification state of VCU_Request; see the module docstring."""

    def __init__(self, board):
        self._key = parse_key(board.storage_read("vcu_key"))
        self.last = 0  # the last FV taken (restored from the record "secoc")
        self._msg = bytearray(7)  # data ID, byte 0, FV
        self._msg[0] = 0x00
        self._msg[1] = 0x03
        self.state_size = 5
        self.dirty = False

    @property
    def keyed(self):
        return self._key is not None

    def freshness(self, rx):
        """The full FV of the frame in `rx` if it is newer than the last taken and within WINDOW
        of it, else -1."""
        last = self.last
        if last >= _FV_LIMIT:
            return -1
        fv = (last & 0x3FFF0000) | rx[1] | rx[2] << 8
        if fv <= last:
            fv += 0x10000
        if fv - last > WINDOW:
            return -1
        return fv

    def verify(self, rx):
        """The frame's FV when its MAC is right and its FV fresh (module docstring), else -1."""
        if self._key is None:
            return -1
        fv = self.freshness(rx)
        if fv < 0:
            return -1
        m = self._msg
        m[2] = rx[0]
        m[3] = fv >> 24
        m[4] = (fv >> 16) & 0xFF
        m[5] = (fv >> 8) & 0xFF
        m[6] = fv & 0xFF
        ref = hmac_sha256(self._key, _MAC_PREFIX, m)
        d = 0  # every byte compared whatever differs first: the time tells nothing
        for i in range(_MAC_LEN):
            d |= rx[3 + i] ^ ref[i]
        return fv if d == 0 else -1

    def take(self, fv, keep):
        """`fv` was authentic and fresh: nothing at or below it is taken again. `keep`: write
        the record soon (a close request), not only at the periodic interval."""
        self.last = fv
        if keep:
            self.dirty = True

    # ---- persistence -------------------------------------------------------------------------
    def save_state(self, buf):
        v = self.last
        buf[0] = _STATE_MAGIC
        buf[1] = v & 0xFF
        buf[2] = (v >> 8) & 0xFF
        buf[3] = (v >> 16) & 0xFF
        buf[4] = v >> 24
        self.dirty = False

    def restore_state(self, buf):
        if buf[0] != _STATE_MAGIC or buf[4] > 0x3F:
            return False
        self.last = buf[1] | buf[2] << 8 | buf[3] << 16 | buf[4] << 24
        return True
