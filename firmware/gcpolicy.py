"""When the garbage collector runs: between control cycles, never inside one.

A control cycle runs with automatic collection off (`cycle_begin` / `cycle_end`), so no cycle
ever pays for a collection (on a 144 KiB heap one takes milliseconds of a Cortex-M's time).
After each cycle, outside its timed part (app.Bms.guarded_cycle), `between` runs a collection
when the garbage of the next cycles could exceed the free heap: at each collection it measures
the heap that stays (`live`), what is free, and how much the heap grew per cycle since the
previous collection (the largest growth seen so far, so a quiet stretch never stretches the
schedule); the next collection is due after free // (2 * growth) cycles, at least 1 and at most
_MAX_EVERY (so `live`, which the BMS reports on CAN, is at most that many cycles old). Until a
growth is measured it collects after every cycle.

Should a cycle still find the heap exhausted, MicroPython raises MemoryError there (it does not
collect while collection is off), and the cycle's guard takes the safe state: it fails safe.

The measurements (gc.mem_alloc, gc.mem_free) each scan the heap's allocation table, so they run
only next to a collection, never per cycle. Under CPython (tests) there is nothing to schedule.
"""

import gc

from .compat import IS_MICROPYTHON, const

_MAX_EVERY = const(16)  # cycles between collections at most


class Collector:
    """The collection schedule of one BMS; see the module docstring."""

    def __init__(self):
        self.live = 0  # heap in use after the last collection, bytes
        self.collections = 0
        self.before = 0  # heap in use just before the last collection, bytes
        self.every = 1  # cycles between collections, as last scheduled
        self._growth = 0  # largest heap growth per cycle seen, bytes
        self._cycles = 0  # cycles since the last collection
        self._enabled = True

    def cycle_begin(self):
        """Automatic collection off for the cycle (restored by `cycle_end`)."""
        self._enabled = gc.isenabled() if IS_MICROPYTHON else True
        gc.disable()

    def cycle_end(self):
        if self._enabled:
            gc.enable()

    def between(self):
        """After a cycle: collect if the next one might not find enough free heap. True when it
        collected (`live` is then fresh)."""
        if not IS_MICROPYTHON:
            return False
        self._cycles += 1
        if self._cycles < self.every:
            return False
        used = gc.mem_alloc()
        self.before = used
        grown = used - self.live
        if self.collections and grown > 0:
            g = grown // self._cycles
            if g > self._growth:
                self._growth = g
        gc.collect()
        self.collections += 1
        self._cycles = 0
        self.live = gc.mem_alloc()
        if self._growth:
            self.every = max(1, min(_MAX_EVERY, gc.mem_free() // (2 * self._growth)))
        return True
