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


def crc8_j1850(data, n, crc=0xFF):
    """CRC-8 SAE J1850 (poly 0x1D, init 0xFF, xor-out 0xFF) of data[0:n]; `crc` continues a
    previous result (pass it xor 0xFF). Bitwise, no table: a few bytes per 100 ms."""
    for k in range(n):
        crc ^= data[k]
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1D) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
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
