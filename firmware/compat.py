"""The one place that papers over MicroPython/CPython differences.

Firmware modules import `const`, the tick functions and `IS_MICROPYTHON` from here instead of
sprinkling `try/except ImportError` around.
"""

import sys

IS_MICROPYTHON = sys.implementation.name == "micropython"

if IS_MICROPYTHON:
    from time import ticks_add, ticks_diff, ticks_ms, ticks_us  # noqa: F401

    from micropython import const  # noqa: F401
else:
    import time as _time

    _TICKS_PERIOD = 1 << 30
    _TICKS_HALF = _TICKS_PERIOD // 2

    def const(x):
        return x

    def ticks_ms():
        return int(_time.monotonic() * 1000) % _TICKS_PERIOD

    def ticks_us():
        return int(_time.monotonic() * 1_000_000) % _TICKS_PERIOD

    def ticks_add(t, delta):
        return (t + delta) % _TICKS_PERIOD

    def ticks_diff(a, b):
        # Same wrap-around semantics as MicroPython's time.ticks_diff.
        return ((a - b + _TICKS_HALF) % _TICKS_PERIOD) - _TICKS_HALF
