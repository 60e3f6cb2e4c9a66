"""Diagnostics as a between-cycle service: the UDS server while a tester talks, image confirmation.

Owns the lifetime of the diagnostic server (firmware/uds.py with its ISO-TP layer, about 20 KB
of code and objects on the 64-bit unix port) and the confirmation of an image on trial
(firmware/bootrec.py): once the firmware has completed bootrec.CONFIRM_CYCLES control cycles
(Bms.alive advanced that often), whether or not a tester is present, the image becomes the good
one.

The server is loaded at the first frame on a diagnostic request id (from the receive path,
between cycles) and dropped again after UNLOAD_MS in the default session without a request, so
a BMS that no tester talks to keeps that heap for itself. MicroPython's heap is not compacted:
after minutes of cycles its free memory is many small holes (measured on the unix port at 16
cells: 33 KB free, the largest hole 512 bytes), too small for the server's larger pieces. So a
RESERVE of contiguous bytes is held from start-up (`reserve()`, called by main.py before the
firmware's code is imported) and freed just before the server is loaded: the small pieces fill
the holes, the large ones the reserve. When the application leaves less than LOAD_NEED
besides the reserve once it is built (or not PROBE bytes of it in one piece), the reserve is
given back and diagnostics stay off (`load_failures` -1). A load that still fails
(MemoryError) is counted in `load_failures` and leaves diagnostics silent; it never touches the
control loop. After an unload the reserve is
taken again (if the heap no longer has it in one piece, the next load goes without it).

`service` returns True while frames wait to go out or slow work is pending, so the loop does not
idle meanwhile.
"""

import gc
import sys

from .compat import IS_MICROPYTHON, const, ticks_diff

UNLOAD_MS = const(30000)
RESERVE = const(12288)
# Loading the server takes this much heap besides the reserve (64-bit unix port: 20 KB in all)
LOAD_NEED = const(16384)
PROBE = const(8192)
# The application's ISO-TP message buffer: its longest request or response is a read of 8 DIDs
# (at most 1 + 8 * 34 bytes); a longer first frame is answered with FC overflow. Downloads run in
# the programming server (firmware/uds_prog.py) with the full 4095 bytes.
DIAG_BUF = const(512)
_MODULES = ("uds", "isotp", "security", "uds_table", "diag_config")
_held = [None]


def reserve():
    """Take the RESERVE now: main.py calls this first, before the configuration and the
    firmware's code fill the heap (after them it has no RESERVE bytes in one piece)."""
    _held[0] = bytearray(RESERVE)


def release():
    """Give the reserve back (main.py, when the application does not fit beside it)."""
    _held[0] = None


class DiagPort:
    """See the module docstring."""

    def __init__(self, bms):
        self.bms = bms
        self.server = None
        self._reserve = _held[0]  # None without main.py (tests): loads go without it
        _held[0] = None
        gc.collect()
        if self._reserve is not None and not _room():
            # The pack leaves too little heap to load the server at all: the application gets
            # the reserve back (diagnostics unavailable on this board at this pack size).
            self._reserve = None
            self.load_failures = -1
            print("cellguard: too little heap for diagnostics at this pack size")
        self.loads = 0
        self.load_failures = 0
        self.config_pending = 0  # configuration keys written since start (applied at reset)
        from . import bootrec

        self._trial = bootrec.read(bms.board)[2]
        self._bootrec = bootrec if self._trial else None
        if not self._trial:
            _drop(("bootrec",))
        self._alive = -1
        self._cycles = 0

    def on_frame(self, can_id, data, dlc, now_ms):
        """A frame of a diagnostic request id (called by the receive path)."""
        s = self.server
        if s is None:
            if self.load_failures < 0:
                return
            s = self._load()
            if s is None:
                return
        s.tp.on_frame(can_id, data, dlc, now_ms)

    def _load(self):
        self._reserve = None
        gc.collect()
        try:
            from .uds import Uds

            self.server = Uds(self.bms, self, bytearray(DIAG_BUF))
            self.loads += 1
        except MemoryError:
            self.server = None
            self.load_failures += 1
            self._unload()
            if self.load_failures < 4:
                print("cellguard: diagnostics unavailable: too little heap to load them")
        return self.server

    def _unload(self):
        self.server = None
        _drop(_MODULES)
        try:
            self._reserve = bytearray(RESERVE)
        except MemoryError:
            self._reserve = None

    def service(self, now_ms):
        if self._trial:
            a = self.bms.alive
            if a != self._alive:
                self._alive = a
                self._cycles += 1
                if self._cycles > self._bootrec.CONFIRM_CYCLES:
                    self._bootrec.confirm(self.bms.board)
                    self._trial = 0
                    self._bootrec = None
                    _drop(("bootrec",))
        s = self.server
        if s is None:
            return False
        s.service(now_ms)
        if s.idle and ticks_diff(now_ms, s.last_ms) > UNLOAD_MS:
            self._unload()
            return False
        return s.busy


def _room():
    # LOAD_NEED free besides the reserve, and PROBE of it in one piece for what the application
    # allocates while it runs (a bus client's buffer, a storage record).
    if not IS_MICROPYTHON:
        return True  # CPython: no heap limit to speak of
    if gc.mem_free() < LOAD_NEED:
        return False
    try:
        probe = bytearray(PROBE)
    except MemoryError:
        return False
    del probe
    return True


def _drop(names):
    pkg = __name__[: __name__.rfind(".")]
    for n in names:
        sys.modules.pop(pkg + "." + n, None)
        if hasattr(sys.modules[pkg], n):
            delattr(sys.modules[pkg], n)
    gc.collect()
