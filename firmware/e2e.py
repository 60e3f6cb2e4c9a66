"""End-to-end protection of the safety inputs the BMS receives over CAN (AUTOSAR E2E profile 1/2
style): a CRC-8 SAE J1850 over a data ID and the payload, a 4-bit counter, a timeout per signal
group.

One `E2eCheck` per signal group (VCU_Request, the current sensor's current and its voltages).
`check()` says whether a frame's value may be taken:

- bad CRC: rejected, counted;
- the first frame after start, or after a counter jump: rejected, kept as the reference (AUTOSAR's
  re-synchronisation): the next frame in sequence is the first one taken, so a frame whose counter
  is arbitrary is never taken on its own;
- counter + 1 (mod 16): taken;
- repeated counter: rejected, counted, the reference kept;
- jumping counter (lost frames or a second sender): rejected, counted, the new reference.

Counting cannot be steered by interleaving: every rejected frame adds 2 to `bad` and every taken
one removes 1, so a sender whose frames are rejected as often as the genuine ones are taken (one
forged frame per genuine frame) still drives `bad` up (to twice the limit, where it stays while
that goes on); at `limit` (2 x the configured count of consecutive bad frames) the group is
`failed`: the application raises the group's fault and a
measurement group takes nothing more until `reset()` (FaultReset): a sensor whose frames are
being interfered with is no sensor, its values go stale and the contactors open.

The counter and CRC protect against a faulty sender or a corrupted path, not against an attacker
(anyone can compute a CRC): vehicle requests also carry a MAC (firmware/secoc.py).
"""

from .compat import const

_BAD_UP = const(2)  # added per rejected frame
_BAD_DOWN = const(1)  # removed per taken frame


# The CRC register after one more byte b is _TABLE[crc ^ b] (poly 0x1D, MSB first): a bytes
# constant, in flash on a board with frozen code, so a frame costs 7 lookups, not 56 shifts.
_TABLE = (
    b"\x00\x1d\x3a\x27\x74\x69\x4e\x53\xe8\xf5\xd2\xcf\x9c\x81\xa6\xbb"
    b"\xcd\xd0\xf7\xea\xb9\xa4\x83\x9e\x25\x38\x1f\x02\x51\x4c\x6b\x76"
    b"\x87\x9a\xbd\xa0\xf3\xee\xc9\xd4\x6f\x72\x55\x48\x1b\x06\x21\x3c"
    b"\x4a\x57\x70\x6d\x3e\x23\x04\x19\xa2\xbf\x98\x85\xd6\xcb\xec\xf1"
    b"\x13\x0e\x29\x34\x67\x7a\x5d\x40\xfb\xe6\xc1\xdc\x8f\x92\xb5\xa8"
    b"\xde\xc3\xe4\xf9\xaa\xb7\x90\x8d\x36\x2b\x0c\x11\x42\x5f\x78\x65"
    b"\x94\x89\xae\xb3\xe0\xfd\xda\xc7\x7c\x61\x46\x5b\x08\x15\x32\x2f"
    b"\x59\x44\x63\x7e\x2d\x30\x17\x0a\xb1\xac\x8b\x96\xc5\xd8\xff\xe2"
    b"\x26\x3b\x1c\x01\x52\x4f\x68\x75\xce\xd3\xf4\xe9\xba\xa7\x80\x9d"
    b"\xeb\xf6\xd1\xcc\x9f\x82\xa5\xb8\x03\x1e\x39\x24\x77\x6a\x4d\x50"
    b"\xa1\xbc\x9b\x86\xd5\xc8\xef\xf2\x49\x54\x73\x6e\x3d\x20\x07\x1a"
    b"\x6c\x71\x56\x4b\x18\x05\x22\x3f\x84\x99\xbe\xa3\xf0\xed\xca\xd7"
    b"\x35\x28\x0f\x12\x41\x5c\x7b\x66\xdd\xc0\xe7\xfa\xa9\xb4\x93\x8e"
    b"\xf8\xe5\xc2\xdf\x8c\x91\xb6\xab\x10\x0d\x2a\x37\x64\x79\x5e\x43"
    b"\xb2\xaf\x88\x95\xc6\xdb\xfc\xe1\x5a\x47\x60\x7d\x2e\x33\x14\x09"
    b"\x7f\x62\x45\x58\x0b\x16\x31\x2c\x97\x8a\xad\xb0\xe3\xfe\xd9\xc4"
)


def crc8_j1850(data, n, crc=0xFF):
    """CRC-8 SAE J1850 (poly 0x1D, init 0xFF, xor-out 0xFF) of data[0:n]; `crc` continues a
    previous result (pass it xor 0xFF)."""
    t = _TABLE
    for k in range(n):
        crc = t[crc ^ data[k]]
    return crc ^ 0xFF


def data_id_crc(can_id):
    """The CRC register after a frame's E2E data ID (its CAN id, low byte first): pass it as
    `crc` to crc8_j1850 over the payload."""
    return crc8_j1850(bytes((can_id & 0xFF, can_id >> 8)), 2) ^ 0xFF


class E2eCheck:
    """Counter, CRC and timeout state of one signal group; see the module docstring."""

    def __init__(self, can_id, bad_count):
        self.crc_init = data_id_crc(can_id)
        self.limit = _BAD_UP * bad_count
        # The count may climb past the limit (to twice it), so an attack one to one with the
        # genuine frames keeps it at the limit instead of letting each taken frame drop it below.
        self._ceiling = 2 * self.limit
        self.last = -1  # reference counter; -1: none yet
        self.bad = 0
        self.errors = 0  # rejected frames since start (diagnostics)
        self.rx_ms = 0
        self.seen = False

    def crc_ok(self, data, n, crc):
        """True when `crc` is the E2E CRC of data[0:n] under this group's data ID."""
        return crc8_j1850(data, n, self.crc_init) == crc

    @property
    def failed(self):
        return self.bad >= self.limit

    def reject(self):
        """Count a rejected frame (bad CRC, or a failed check made elsewhere, e.g. a MAC)."""
        self.errors += 1
        self.bad = min(self._ceiling, self.bad + _BAD_UP)

    def check(self, crc_ok, counter, now_ms):
        """True when a frame with this CRC verdict and counter may be taken (module docstring)."""
        if not crc_ok:
            self.reject()
            return False
        last = self.last
        self.last = counter
        if last < 0:
            return False  # reference only
        d = (counter - last) & 15
        if d != 1:
            if d == 0:
                self.last = last
            self.reject()
            return False
        if self.bad:
            self.bad -= _BAD_DOWN
        self.rx_ms = now_ms
        self.seen = True
        return True

    def reset(self):
        """FaultReset: count from zero, resynchronise on the next frame."""
        self.bad = 0
        self.last = -1
