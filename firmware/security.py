"""Security access (UDS 0x27) and image authentication: the board's secret and what it unlocks.

Owns the per-board secret, the seed/key exchange, its attempt counter and delay, and the MAC that
authenticates a downloaded firmware image. There is no fixed key anywhere: the secret (32 random
bytes) is generated when a board is provisioned (`cellguard flash --provision`; the sim board's
DUT generates one per run) and stored in the board's storage as the record "provision":

    offset  size  field
    0       4     magic b"CGP1"
    4       16    ECU serial number (ASCII, DID F18C)
    20      32    secret
    52      4     CRC-32 of bytes 0..52

The tester holds a copy of that record. Without one (or with a damaged one) security access is
refused (NRC 0x22) and no image is ever accepted.

Key of a seed (level 1): the first 8 bytes of HMAC-SHA-256(secret, 0x01 || seed); the seed is
8 bytes from the board's random source (`board.urandom` where the board has one, else
`os.urandom`; neither: NRC 0x22), fresh for every request, zero when already unlocked (ISO
14229-1). MAC of an image: HMAC-SHA-256(secret, 0x02 || SHA-256 of the image). The prefixes keep
the two uses apart, so a key answered to a seed is never a valid image MAC.

Attempts: every wrong key counts; at `MAX_ATTEMPTS` the exchange is refused with NRC 0x36 and
every request in the next `DELAY_MS` gets NRC 0x37. The count is persisted (`state_size`,
`save_state`, `restore_state`, `dirty`): a reset does not give an attacker fresh attempts, and a
board that starts with the count exhausted starts with the delay running.
"""

import binascii
import os

from .compat import const, ticks_diff
from .mac import hmac_sha256

MAX_ATTEMPTS = const(3)
DELAY_MS = const(10000)
SEED_LEN = const(8)
KEY_LEN = const(8)
_REC_LEN = const(56)
_MAGIC = b"CGP1"


def parse_provision(data):
    """(serial bytes, secret bytes) of a provisioning record, or None when absent or damaged."""
    if data is None or len(data) != _REC_LEN or data[0:4] != _MAGIC:
        return None
    crc = data[52] | data[53] << 8 | data[54] << 16 | data[55] << 24
    if binascii.crc32(data[0:52]) != crc:
        return None
    return bytes(data[4:20]), bytes(data[20:52])


def _equal(a, b, n):
    # Compares all n bytes whatever differs first: the time taken tells nothing about the key.
    d = len(a) ^ n | len(b) ^ n
    if d:
        return False
    for i in range(n):
        d |= a[i] ^ b[i]
    return d == 0


class Security:
    """Seed/key state of the diagnostic server; see the module docstring."""

    def __init__(self, board):
        p = parse_provision(board.storage_read("provision"))
        self.serial = p[0] if p else b"\x00" * 16
        self._secret = p[1] if p else None
        # The board's own entropy source where it has one, else the port's (the stm32 RNG, the
        # esp32 TRNG, the host's on the unix port); without either, access is refused.
        self._random = getattr(board, "urandom", None) or getattr(os, "urandom", None)
        self.seed = bytearray(SEED_LEN)
        self._seeded = False
        self.unlocked = False
        self.attempts = 0
        self._delay_from = None  # board ms the delay started; None: no delay running
        self.state_size = 2
        self.dirty = False

    @property
    def provisioned(self):
        return self._secret is not None

    def lock(self):
        """Back to locked (a session change or S3 timeout)."""
        self.unlocked = False
        self._seeded = False

    def delayed(self, now_ms):
        """True while the delay after too many wrong keys runs."""
        t = self._delay_from
        if t is None:
            return False
        if now_ms is not None and ticks_diff(now_ms, t) >= DELAY_MS:
            self._delay_from = None
            return False
        return True

    def request_seed(self, now_ms):
        """Fill `seed`; returns 0 or the NRC that refuses it."""
        if self._secret is None:
            return 0x22
        if self._delay_from is None and self.attempts >= MAX_ATTEMPTS:
            self._delay_from = now_ms  # a restored, exhausted count: the delay starts now
        if self.delayed(now_ms):
            return 0x37
        if self.attempts >= MAX_ATTEMPTS:  # the delay has passed: one more try
            self.attempts = MAX_ATTEMPTS - 1
            self.dirty = True
        s = self.seed
        if self.unlocked:
            for i in range(SEED_LEN):
                s[i] = 0
            return 0
        rand = self._random
        if rand is None:
            return 0x22  # no random source: a predictable seed would unlock for anyone
        r = rand(SEED_LEN)
        for i in range(SEED_LEN):
            s[i] = r[i]
        self._seeded = True
        return 0

    def send_key(self, key, now_ms):
        """Check a key against the last seed; returns 0 (unlocked) or the NRC."""
        if self.delayed(now_ms):
            return 0x37
        if not self._seeded:
            return 0x24  # no seed asked for (or already used): requestSequenceError
        self._seeded = False
        if _equal(key, self.key_for(self.seed), KEY_LEN):
            self.unlocked = True
            if self.attempts:
                self.attempts = 0
                self.dirty = True
            return 0
        self.attempts += 1
        self.dirty = True
        if self.attempts >= MAX_ATTEMPTS:
            self._delay_from = now_ms
            return 0x36
        return 0x35

    def key_for(self, seed):
        return hmac_sha256(self._secret, 1, seed)[:KEY_LEN]

    def image_mac(self, digest):
        """The MAC a genuine image of SHA-256 `digest` carries (None when not provisioned)."""
        if self._secret is None:
            return None
        return hmac_sha256(self._secret, 2, digest)

    def mac_ok(self, digest, mac):
        ref = self.image_mac(digest)
        return ref is not None and _equal(mac, ref, 32)

    # ---- persistence -------------------------------------------------------------------------
    def save_state(self, buf):
        buf[0] = 0xA5
        buf[1] = self.attempts
        self.dirty = False

    def restore_state(self, buf):
        if buf[0] != 0xA5 or buf[1] > MAX_ATTEMPTS:
            return False
        self.attempts = buf[1]
        return True
