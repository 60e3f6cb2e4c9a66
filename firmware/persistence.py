"""Persistence: the state that must survive a reset or a power loss, kept as A/B records.

Owns the record format on the board's storage, the choice between the two copies at start-up and
the write policy that bounds flash wear. It does not know what a record holds: each client (the
estimator, the fault memory, ...) provides `state_size` (bytes, constant), `save_state(buf)` and
`restore_state(buf) -> bool` (False: content implausible, the client keeps its defaults).

A record, little endian:

    offset  size  field
    0       2     magic b"CG", or b"CS" for a record written at orderly shutdown (flush)
    2       2     payload length (the client's state_size when it was written)
    4       4     sequence number, +1 per write of this client
    8       n     payload
    8+n     4     CRC-32 (binascii.crc32, as zlib) of bytes 0..8+n

Each client has two slots, "<name>.a" and "<name>.b". A save goes to the slot that does not hold
the newest valid record, so a power loss in the middle of a write (or a storage that cannot rename
atomically, such as FAT) can only damage the copy being written: the other one is still whole.
At start-up both slots are read and the valid one with the higher sequence number wins; `clean`
says whether it was written at an orderly shutdown (the state then was exactly that) or by the
periodic policy (the state may have moved on before the power went: the client's restore widens
what it reports, see app.py).

The first successful write also leaves a marker file, "records" (its content is not read: a
damaged marker still counts): a later start that finds a client's two slots missing while the
marker is there reports ERASED instead of EMPTY, so erased storage is a fault, not a first start.

Status of a client after restore() (0 is fine; the worst is `status`):

    0  OK             the newest copy was valid and accepted
    1  FALLBACK       the newer copy was damaged: the older one was used (the state may be older)
    2  EMPTY          no record at all (first start, erased storage): defaults
    3  CORRUPT        records present, none valid or the client rejected the content: defaults
    4  WRITE_FAILED   the last write raised OSError (storage full or broken); retried later
    5  ERASED         no record, but records were written before (the marker file): defaults

Write policy: a client is written when its payload differs from the last record written (CRC
compared, so no second buffer) and at least its interval has passed since its last write; a
client that sets a `dirty` flag (an event worth keeping, e.g. a new fault record) or that the
owner marked `due` (its state moved enough: the SOC by persist_soc_step, app.py) is written as
soon as `dirty_ms` has passed instead; flush() writes at once (shutdown), also an unchanged state
whose last record was not a shutdown one.

Flash-wear budget (the estimator's record, the one that moves most): at most one write per
120 s while its state changes, plus one per 1 % of SOC moved (persist_soc_step), never two
within persist_dirty_ms. A pack driven one hour a day through 30 % of its SOC and charged back
in another hour writes at most 60 time-based + 60 charge-based = 120 records a day (the two
overlap): 60 per slot, about 220 000 per slot in ten years, beyond the 100 000 erase cycles of
raw MCU flash, so the records rely on the wear levelling of littlefs (the boards' filesystem:
copy-on-write spreads each write, one or two block erases, over the free blocks; with 64 free
4 KB blocks that is 7 000 to 14 000 erases per block in ten years). Records whose state does
not change (a pack at rest) are not written at all.
"""

import binascii
import struct

from .compat import const, ticks_diff

OK = const(0)
FALLBACK = const(1)
EMPTY = const(2)
CORRUPT = const(3)
WRITE_FAILED = const(4)
ERASED = const(5)

_MAGIC = b"CG"
_MAGIC_CLEAN = b"CS"
_MARKER = "records"
_HEADER = const(8)
_CRC = const(4)
_SLOTS = (".a", ".b")


def _parse(data, size):
    """Sequence number of a valid record of payload `size` in `data`, or -1."""
    if data is None or len(data) != _HEADER + size + _CRC or data[0] != 67:  # "C"
        return -1
    if data[1] != 71 and data[1] != 83:  # "G", "S"
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
        self.clean = False  # the restored record was written at an orderly shutdown
        self.written_clean = False  # the newest record on storage is a shutdown one
        self.due = False  # the owner asks for a write as soon as dirty_ms allows
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
        self._marked = False  # the marker file exists (see the module docstring)
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
        try:
            self._marked = self._board.storage_read(_MARKER) is not None
        except OSError:
            self._marked = True  # unreadable storage: records may well have been there
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
            c.restored = CORRUPT if present else ERASED if self._marked else EMPTY
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
        c.clean = c.written_clean = best_data[1] == 83

    def service(self, now_ms):
        """Write the clients that are due. Call between control cycles (a write may take ms)."""
        for c in self._clients:
            if c.last_ms is None:
                c.last_ms = now_ms
                continue
            soon = c.due or getattr(c.obj, "dirty", False)
            wait = self._dirty_ms if soon else c.interval_ms
            if ticks_diff(now_ms, c.last_ms) >= wait:
                self._save(c, now_ms, False)

    def flush(self, now_ms):
        """Write every client, now, as a shutdown record (orderly shutdown, end of a drive);
        unless its newest record already is one of this very state."""
        for c in self._clients:
            self._save(c, now_ms, True)

    def _save(self, c, now_ms, clean):
        size = c.obj.state_size
        buf = c.buf
        payload = memoryview(buf)[_HEADER : _HEADER + size]
        c.obj.save_state(payload)
        crc = binascii.crc32(payload)
        c.last_ms = now_ms
        c.due = False
        if crc == c.crc and not c.write_failed and (c.written_clean or not clean):
            return
        seq = c.seq + 1
        buf[0:2] = _MAGIC_CLEAN if clean else _MAGIC
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
        c.written_clean = clean
        if not self._marked:
            try:
                self._board.storage_write(_MARKER, b"1")
                self._marked = True
            except OSError:
                pass  # tried again with the next write
