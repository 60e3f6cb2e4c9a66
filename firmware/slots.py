"""Firmware images in A/B slots: download into the inactive slot and verification before a switch.

Owns the content of the two slot folders on the board's filesystem (`board.storage_path`):
"slot_a" and "slot_b", each a `firmware/` package of .mpy files plus its `manifest`; which one
boots is the boot record's (firmware/bootrec.py). Used by the programming server only
(firmware/uds_prog.py).

Image (the byte stream UDS 0x36 delivers, little endian):

    header   16 bytes: b"CGIM", version 1, file count, 2 reserved, total length (4), 4 reserved
    entries  per file: name length (1), name ("firmware/<module>.mpy"), size (4), the bytes
    trailer  SHA-256 of header and entries (32), MAC (32; firmware/security.py image_mac)

Download writes into the slot that is neither active nor good, after erasing it; the files are
unpacked as they arrive and the header, entry heads and trailer go to the slot's manifest. Only
Check (UDS routine 0x0202) switches: it reads everything back from the filesystem, recomputes
the hash, checks it and the MAC, and only then writes the boot record (active = the new slot,
trial). A power loss at any byte before that leaves the record, and so the running image, as it
was; a loss after it boots the new image on trial.
"""

import hashlib
import os
import struct

from .bootrec import read, slot_path, write
from .compat import const

MAX_IMAGE = const(524288)
_HDR = const(16)
_TRAILER = const(64)
_CHUNK = const(512)
# Download states
_S_HDR = const(0)
_S_NAME_LEN = const(1)
_S_NAME = const(2)
_S_SIZE = const(3)
_S_DATA = const(4)
_S_TRAILER = const(5)
_S_DONE = const(6)
_S_BAD = const(7)


def _erase(path):
    for sub in ("/firmware", ""):
        try:
            names = os.listdir(path + sub)
        except OSError:
            continue
        for n in names:
            try:
                os.remove(path + sub + "/" + n)
            except OSError:
                pass


def _mkdir(path):
    try:
        os.mkdir(path)
    except OSError:
        pass  # exists


def _name_ok(name):
    if len(name) < 14 or len(name) > 48 or not name.startswith(b"firmware/"):
        return False
    if not name.endswith(b".mpy"):
        return False
    for ch in name[9:-4]:
        if not (97 <= ch <= 122 or 48 <= ch <= 57 or ch == 95):  # a-z 0-9 _
            return False
    return True


class Download:
    """Unpacks one image stream into a slot; see the module docstring."""

    def __init__(self, board, slot, size):
        self.slot = slot
        self.size = size
        self.received = 0
        self.path = slot_path(board, slot)
        p = self.path
        _mkdir(p)
        _erase(p)
        _mkdir(p + "/firmware")
        self._manifest = open(p + "/manifest", "wb")
        self._state = _S_HDR
        self._scratch = bytearray(64)
        self._fill = 0
        self._need = _HDR
        self._file = None
        self._left = 0
        self._files = 0
        self._name = b""
        self.error = ""

    def write(self, data, start, end):
        """Take data[start:end]; False (and `error`) when the stream is not a valid image."""
        if self.received + end - start > self.size:
            self.error = "more data than announced"
            self._state = _S_BAD
        mv = memoryview(data)
        i = start
        while i < end and self._state != _S_BAD:
            if self._state == _S_DATA:
                n = min(end - i, self._left)
                self._file.write(mv[i : i + n])
                self._left -= n
                i += n
                if not self._left:
                    self._file.close()
                    self._file = None
                    self._next_entry()
                continue
            n = min(end - i, self._need - self._fill)
            self._scratch[self._fill : self._fill + n] = mv[i : i + n]
            self._fill += n
            i += n
            if self._fill == self._need:
                self._field()
        self.received += i - start
        return self._state != _S_BAD

    def _field(self):
        s = self._scratch
        st = self._state
        self._manifest.write(memoryview(s)[: self._need])
        self._fill = 0
        if st == _S_HDR:
            total = struct.unpack_from("<I", s, 8)[0]
            if s[0:4] != b"CGIM" or s[4] != 1 or total != self.size:
                self._fail("not a cellguard image (or a length other than announced)")
                return
            self._files = s[5]
            self._next_entry()
        elif st == _S_NAME_LEN:
            self._state = _S_NAME
            self._need = s[0]
            if not 1 <= s[0] <= 48:
                self._fail("bad file name length")
        elif st == _S_NAME:
            name = bytes(s[: self._need])
            if not _name_ok(name):
                self._fail("bad file name")
                return
            self._name = name
            self._state = _S_SIZE
            self._need = 4
        elif st == _S_SIZE:
            self._left = struct.unpack_from("<I", s, 0)[0]
            self._file = open(self.path + "/" + self._name.decode(), "wb")
            self._state = _S_DATA
            if not self._left:
                self._file.close()
                self._file = None
                self._next_entry()
        elif st == _S_TRAILER:
            self._manifest.close()
            self._manifest = None
            self._state = _S_DONE

    def _next_entry(self):
        if self._files:
            self._files -= 1
            self._state = _S_NAME_LEN
            self._need = 1
        else:
            self._state = _S_TRAILER
            self._need = _TRAILER

    def _fail(self, why):
        self.error = why
        self._state = _S_BAD

    @property
    def complete(self):
        return self._state == _S_DONE and self.received == self.size

    def close(self):
        for f in (self._file, self._manifest):
            if f is not None:
                f.close()
        self._file = self._manifest = None


class Check:
    """Verifies a slot from what is on the filesystem, a bounded piece per step()."""

    def __init__(self, board, slot):
        self.board = board
        self.slot = slot
        self.path = slot_path(board, slot)
        self.ok = False
        self.error = ""
        self._h = hashlib.sha256()
        self._buf = bytearray(_CHUNK)
        self._m = None
        self._f = None
        self._left = 0
        self._files = 0
        try:
            self._m = open(self.path + "/manifest", "rb")
            hdr = self._m.read(_HDR)
            if len(hdr) != _HDR or hdr[0:4] != b"CGIM":
                raise OSError
            self._files = hdr[5]
            self._h.update(hdr)
        except OSError:
            self._stop("no complete image in the slot")

    def _stop(self, why):
        self.error = why
        for f in (self._f, self._m):
            if f is not None:
                f.close()
        self._f = self._m = None

    def step(self, security):
        """Hash one more piece; returns True when done (then see `ok` and `error`)."""
        if self._m is None:
            return True
        try:
            if self._f is not None:
                n = self._f.readinto(memoryview(self._buf)[: min(_CHUNK, self._left)])
                if not n:
                    raise OSError
                self._h.update(memoryview(self._buf)[:n])
                self._left -= n
                if not self._left:
                    self._f.close()
                    self._f = None
                return False
            if self._files:
                self._files -= 1
                ln = self._m.read(1)
                name = self._m.read(ln[0])
                size = self._m.read(4)
                if len(size) != 4 or not _name_ok(name):
                    raise OSError
                self._h.update(ln)
                self._h.update(name)
                self._h.update(size)
                self._left = struct.unpack("<I", size)[0]
                if self._left:
                    self._f = open(self.path + "/" + name.decode(), "rb")
                return False
            trailer = self._m.read(_TRAILER)
            self._stop("")
            if len(trailer) != _TRAILER:
                self.error = "no trailer"
            elif self._h.digest() != trailer[:32]:
                self.error = "hash mismatch"
            elif not security.mac_ok(trailer[:32], trailer[32:]):
                self.error = "MAC mismatch"
            else:
                self.ok = True
                r = read(self.board)
                r[0] = self.slot
                r[2] = 1
                r[3] = 0
                write(self.board, r)
            return True
        except (OSError, IndexError):
            self._stop("slot unreadable or incomplete")
            return True
