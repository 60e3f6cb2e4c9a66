"""When the garbage collector runs: between control cycles, not inside one.

After each cycle, outside its timed part (app.Bms.guarded_cycle), `between` runs a collection
when the garbage of the next cycles could exceed the free heap. It measures the heap that stays
(`live`, which the BMS reports on CAN), the heap's size, and how much the heap grew per cycle
since the previous collection; the next collection is due after (size - live) // (2 * growth)
cycles, at least 1 and at most _MAX_EVERY, with growth the largest seen so far and never less
than CYCLE_BLOCKS (so neither a quiet stretch nor a start without measurements stretches the
schedule). A cycle that failed is followed by a collection at once. In steady state no cycle
fills the heap, so MicroPython's automatic collection (which runs only when an allocation finds
no free block) never runs inside one: tests/firmware/test_alloc.py checks that on the heap in
use across every cycle.

Automatic collection stays on inside the cycles all the same: it is the backstop for a burst the
schedule did not foresee (catch-up, a diagnostic session, a flood's frames). With it off, such a
burst would be a MemoryError inside the cycle, and a BMS that fails safe on every cycle for want
of heap is a BMS out of service; with it on, the burst costs one slow cycle. Where the free heap
after a collection does not hold two cycles' garbage (an .mpy bundle whose bytecode fills a small
board's heap) the schedule cannot keep collections out of the cycles: those cycles are counted
(`tight`).

The measurements (gc.mem_alloc, gc.mem_free) each scan the heap's allocation table (on a 192 KiB
heap about as long as the collection itself), so they run only next to a collection, never per
cycle, and there for two collections in every 8 (or each one with `probe`): the heap before the
collection (the growth) and after it (`live`). Under CPython there is nothing to schedule.
"""

import gc
import sys

from .compat import IS_MICROPYTHON, const

_MAX_EVERY = const(16)  # cycles between collections at most
BLOCK_BYTES = 32 if sys.maxsize > 2**32 else 16


def _floats_box():
    # Whether a float result takes a heap block. MicroPython's default object model boxes every
    # float; a build with MICROPY_OBJ_REPR_C (the Cortex-M image, docs/boards.md) keeps a 30-bit
    # float in the object word, and the float filters then allocate nothing.
    if not IS_MICROPYTHON:
        return True
    x = [0.5]
    a = gc.mem_alloc()
    y = x[0] * 3.0
    return gc.mem_alloc() > a and y > 0


FLOATS_BOX = _floats_box()
# What one steady-state control cycle may leave on the heap, in heap blocks (4 words each): 16
# (256 B on a 32-bit board), plus, where floats box, the float filters' garbage (the estimator's
# pack EKF and the power prediction: about 870 blocks at 16 cells). tests/firmware/test_alloc.py
# holds a cycle to it. The schedule assumes at least this much per cycle: a growth measured while
# the filters did not run yet (no measurements) must not stretch it.
CYCLE_BLOCKS = 976 if FLOATS_BOX else 16


class Collector:
    """The collection schedule of one BMS; see the module docstring."""

    def __init__(self):
        self.live = 0  # heap in use after the last collection, bytes
        self.collections = 0
        self.before = -1  # heap in use just before the last collection, bytes; -1: not taken
        self.probe = False  # take `before` at every collection
        self._heap = 0  # the heap's size, bytes
        self.every = 1  # cycles between collections, as last scheduled
        self._growth = CYCLE_BLOCKS * BLOCK_BYTES  # largest heap growth per cycle seen, bytes
        self._cycles = 0  # cycles since the last collection
        # The free heap after a collection holds two cycles' garbage: the schedule keeps
        # collections out of the cycles. Not yet known before the first collection.
        self.room = False
        self.tight = 0  # cycles without room for their garbage (module docstring)

    def cycle_begin(self):
        """A cycle starts: counted in `tight` when the schedule found no room for it."""
        if not self.room and IS_MICROPYTHON:
            self.tight += 1

    def between(self, now=False):
        """After a cycle: collect if the next one might not find enough free heap (or `now`: the
        cycle failed, maybe for want of heap). True when it collected and measured `live`
        anew."""
        if not IS_MICROPYTHON:
            return False
        self._cycles += 1
        if self._cycles < self.every and not now:
            return False
        n = self.collections
        # The heap in use before collecting (a scan of its own) only for every 8th collection,
        # or each one with `probe` (benchmarks and tests that check every cycle).
        self.before = -1
        measure = self.probe or n & 7 < 2  # the first two of every 8
        if measure:
            used = self.before = gc.mem_alloc()
            g = (used - self.live) // self._cycles if n else 0  # the first: since the start
            if g > self._growth:
                self._growth = g
        gc.collect()
        self.collections = n + 1
        self._cycles = 0
        if measure:
            self.live = gc.mem_alloc()
            if not self._heap:
                self._heap = self.live + gc.mem_free()
        every = (self._heap - self.live) // (2 * self._growth)
        self.room = every > 0
        self.every = max(1, min(_MAX_EVERY, every))
        return measure
