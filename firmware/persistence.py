"""Persistence: the state that must survive a reset or a power loss, kept as A/B records.

Owns the record format on the board's storage, the choice between the two copies at start-up and
the write policy that bounds flash wear. It does not know what a record holds: each client (the
estimator, the fault memory, ...) provides `state_size` (bytes, constant), `save_state(buf)` and
`restore_state(buf) -> bool` (False: content implausible, the client keeps its defaults).

A record, little endian:

    offset  size  field
    0       2     magic b"CG"
    2       2     payload length (the client's state_size when it was written)
    4       4     sequence number, +1 per write of this client
    8       n     payload
    8+n     4     CRC-32 (binascii.crc32, as zlib) of bytes 0..8+n

Each client has two slots, "<name>.a" and "<name>.b". A save goes to the slot that does not hold
the newest valid record, so a power loss in the middle of a write (or a storage that cannot rename
atomically, such as FAT) can only damage the copy being written: the other one is still whole.
At start-up both slots are read and the valid one with the higher sequence number wins.

Status of a client after restore() (0 is fine; the worst is `status`):

    0  OK             the newest copy was valid and accepted
    1  FALLBACK       the newer copy was damaged: the older one was used (the state may be older)
    2  EMPTY          no record at all (first start, erased storage): defaults
    3  CORRUPT        records present, none valid or the client rejected the content: defaults
    4  WRITE_FAILED   the last write raised OSError (storage full or broken); retried later

Write policy: a client is written when its payload differs from the last record written (CRC
compared, so no second buffer) and at least its interval has passed since its last write; a
client that sets a `dirty` flag (an event worth keeping, e.g. a new fault record) is written as
soon as `dirty_ms` has passed instead; flush() writes at once (shutdown). At 120 s, a pack that
drives one hour a day writes each of its two slots 15 times a day: about 55 000 writes in ten
years, inside the 100 000 erase cycles of typical MCU flash even without the wear levelling
littlefs adds. Records whose state does not change (a pack at rest) are not written at all.
"""

import binascii
import struct

from .compat import const, ticks_diff

OK = const(0)
FALLBACK = const(1)
EMPTY = const(2)
CORRUPT = const(3)
WRITE_FAILED = const(4)

_MAGIC = b"CG"
_HEADER = const(8)
_CRC = const(4)
_SLOTS = (".a", ".b")


def _parse(data, size):
    """Sequence number of a valid record of payload `size` in `data`, or -1."""
    if data is None or len(data) != _HEADER + size + _CRC or data[0:2] != _MAGIC:
        return -1
    length, seq = struct.unpack_from("<HI", data, 2)
    if length != size:
        return -1
    crc = struct.unpack_from("<I", data, _HEADER + size)[0]
    if binascii.crc32(memoryview(data)[: _HEADER + size]) != crc:
        return -1
    return seq


class _Client:
    def __init__(self, name, obj, interval_ms):
        self.name = name
        self.obj = obj
        self.interval_ms = interval_ms
        self.buf = bytearray(_HEADER + obj.state_size + _CRC)
        self.seq = 0
        self.slot = 0  # slot the next write goes to
        self.crc = -1  # CRC of the payload last written (or restored)
        self.last_ms = None
        self.restored = EMPTY  # outcome of restore()
        self.write_failed = False

    @property
    def status(self):
        return WRITE_FAILED if self.write_failed else self.restored


class Persistence:
    """A/B records for every registered client; see the module docstring."""

    def __init__(self, board, dirty_ms=1000):
        self._board = board
        self._dirty_ms = dirty_ms
        self._clients = []
        self.writes = 0

    def register(self, name, obj, interval_ms):
        """Persist `obj` under `name`, written at most every `interval_ms` while it changes."""
        c = _Client(name, obj, interval_ms)
        self._clients.append(c)
        return c

    @property
    def status(self):
        """The worst status of any client (see the module docstring)."""
        worst = OK
        for c in self._clients:
            if c.status > worst:
                worst = c.status
        return worst

    @property
    def write_failed(self):
        """True while the last write of any client failed."""
        for c in self._clients:
            if c.write_failed:
                return True
        return False

    def client_status(self, name):
        for c in self._clients:
            if c.name == name:
                return c.status
        raise KeyError(name)

    def restore(self):
        """Read both slots of every client and hand the newest valid payload to it."""
        for c in self._clients:
            self._restore(c)

    def _restore(self, c):
        size = c.obj.state_size
        best = -1
        best_slot = 0
        best_data = None
        present = 0
        seqs = [-1, -1]
        for k in range(2):
            try:
                data = self._board.storage_read(c.name + _SLOTS[k])
            except OSError:
                data = None
            if data is not None:
                present += 1
            seq = _parse(data, size)
            seqs[k] = seq
            if seq > best:
                best = seq
                best_slot = k
                best_data = data
        if best < 0:
            c.restored = CORRUPT if present else EMPTY
            return
        view = memoryview(best_data)[_HEADER : _HEADER + size]
        if not c.obj.restore_state(view):
            c.restored = CORRUPT
            return
        other = seqs[1 - best_slot]
        # The other slot is the older copy, or a newer write that did not survive.
        c.restored = FALLBACK if present == 2 and other < 0 else OK
        c.seq = best
        c.slot = 1 - best_slot
        c.crc = binascii.crc32(view)

    def service(self, now_ms):
        """Write the clients that are due. Call between control cycles (a write may take ms)."""
        for c in self._clients:
            if c.last_ms is None:
                c.last_ms = now_ms
                continue
            wait = self._dirty_ms if getattr(c.obj, "dirty", False) else c.interval_ms
            if ticks_diff(now_ms, c.last_ms) >= wait:
                self._save(c, now_ms)

    def flush(self, now_ms):
        """Write every client whose state changed, now (shutdown, end of a drive)."""
        for c in self._clients:
            self._save(c, now_ms)

    def _save(self, c, now_ms):
        size = c.obj.state_size
        buf = c.buf
        payload = memoryview(buf)[_HEADER : _HEADER + size]
        c.obj.save_state(payload)
        crc = binascii.crc32(payload)
        c.last_ms = now_ms
        if crc == c.crc and not c.write_failed:
            return
        seq = c.seq + 1
        buf[0:2] = _MAGIC
        struct.pack_into("<HI", buf, 2, size, seq)
        end = _HEADER + size
        struct.pack_into("<I", buf, end, binascii.crc32(memoryview(buf)[:end]))
        try:
            self._board.storage_write(c.name + _SLOTS[c.slot], buf)
        except OSError:
            c.write_failed = True
            return
        self.writes += 1
        c.seq = seq
        c.crc = crc
        c.slot = 1 - c.slot
        c.write_failed = False
