"""Open-wire check of an LTC681x chain: the ADOW procedure of the datasheet.

Owns the verdict only; the chain traffic goes through the `Ltc681x` driver. Not a per-cycle
method: it allocates two scratch arrays per call (run it at start-up or on demand).
"""

from array import array

from ..compat import const

_ADOW = const(0x228)  # | MD << 7 | PUP << 6 | DCP << 4 | CH (0 = all cells)
OPEN_WIRE_MV = const(400)  # a pull-up minus pull-down difference below -400 mV: open


def check_open_wire(afe, out, now, repeats=2):
    """`repeats` pull-up ADOW conversions -> PU, `repeats` pull-down -> PD (at least two each,
    so the current charges the input filter). Pin C(k) of a module, k = 1..cells-1, is open if
    PU(k+1) - PD(k+1) < -400 mV; C0 if PU(1) = 0; C(cells) if PD(cells) = 0. `out`
    (n_modules * (cells + 1)) gets 1 per open pin. Returns the number of open pins, or -1 if a
    read failed (PEC error or missing module: no verdict)."""
    c = afe.cells
    pu = array("H", [0] * (afe.n * c))
    pd = array("H", [0] * (afe.n * c))
    for pup in (1, 0):
        for _ in range(repeats):
            afe.command(_ADOW | afe.md << 7 | pup << 6)
            afe.wait_adc()
        afe._pending = True  # read ADOW's results; read_cells then restarts ADCV
        afe.read_cells(pu if pup else pd, now)
        for f in afe.fresh:
            if not f:
                return -1
    found = 0
    for m in range(afe.n):
        b = m * c
        o = m * (c + 1)
        for k in range(c + 1):
            if k == 0:
                is_open = pu[b] == 0
            elif k == c:
                is_open = pd[b + c - 1] == 0
            else:
                is_open = pu[b + k] - pd[b + k] < -OPEN_WIRE_MV
            out[o + k] = 1 if is_open else 0
            found += out[o + k]
    return found
