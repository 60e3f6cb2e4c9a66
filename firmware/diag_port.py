"""Resident part of diagnostics: loads the UDS server while a tester talks, confirms new images.

Owns the lifetime of the diagnostic server (firmware/uds.py with its ISO-TP buffer, about a
third of the firmware's code) and the confirmation of an image on trial (firmware/slots.py). The
server is imported and built at the first frame on a diagnostic request id (from the receive
path, between cycles) and dropped again after UNLOAD_MS in the default session without a request,
so a BMS that no tester talks to keeps that heap free. A between-cycle service (`Bms.services`).

An image on trial is confirmed once the firmware has completed slots.CONFIRM_CYCLES control
cycles (Bms.alive advanced that often), whether or not a tester is present.
"""

import gc
import sys

from .compat import const, ticks_diff

UNLOAD_MS = const(30000)
_MODULES = ("uds", "isotp", "security", "slots", "uds_table", "diag_config")


class DiagPort:
    """See the module docstring."""

    def __init__(self, bms):
        self.bms = bms
        self.server = None
        self.loads = 0
        self.config_pending = 0  # configuration keys written since start (applied at reset)
        from . import slots

        self._trial = slots.read(bms.board)[2]
        self._slots = slots if self._trial else None
        self._alive = -1
        self._cycles = 0
        if not self._trial:
            self._drop(("slots",))

    def on_frame(self, can_id, data, dlc, now_ms):
        """A frame of a diagnostic request id (called by the receive path)."""
        s = self.server
        if s is None:
            from .uds import Uds

            s = self.server = Uds(self.bms, self)
            self.loads += 1
        s.tp.on_frame(can_id, data, dlc, now_ms)

    def service(self, now_ms):
        if self._trial:
            a = self.bms.alive
            if a != self._alive:
                self._alive = a
                self._cycles += 1
                if self._cycles > self._slots.CONFIRM_CYCLES:
                    self._slots.confirm(self.bms.board)
                    self._trial = 0
                    self._slots = None
        s = self.server
        if s is None:
            return
        s.service(now_ms)
        if s.idle and ticks_diff(now_ms, s.last_ms) > UNLOAD_MS:
            self.server = None
            self._drop(_MODULES)

    def _drop(self, names):
        pkg = __name__[: __name__.rfind(".")]
        for n in names:
            sys.modules.pop(pkg + "." + n, None)
            if hasattr(sys.modules[pkg], n):
                delattr(sys.modules[pkg], n)
        gc.collect()
