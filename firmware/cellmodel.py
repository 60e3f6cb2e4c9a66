"""The cell model at run time: integer tables of one cell type and their bilinear lookup.

Built by firmware/profile.py (from a profile, or the built-in default) at start-up; read by the
estimator and the power limits every cycle. Tables are indexed [temperature][SOC], flattened row
by row, unsigned 16-bit integers: SOC 0.01 %, temperature 0.1 degC, OCV and hysteresis 0.1 mV,
resistance 10 micro-ohm, time constant 0.1 s. `locate(soc, dc)` finds the cell of the grid once
per cycle; `at(table)` then interpolates any table bilinearly there (clamped at the ends) in
integers: with an 8-bit fraction and 16-bit values no product leaves the small-int range.
"""

from array import array

from .compat import const

_FRAC = const(256)
# Without a profile: R0, R1, tau1, R2, tau2 at 25 degC of the cell classes the plant models
# (sim/cells.py: a 5 Ah NMC 21700, a 2.3 Ah LFP 26650, typical datasheet values). Resistances in
# 10 micro-ohm times Ah, so they scale inversely with the configured capacity; time constants in
# 0.1 s. At 0 degC x3 (the plant's Arrhenius rise is x2.9 for NMC): conservative in the cold,
# where the power limits matter most. No hysteresis.
_DEFAULT_RC = {"NMC": (9000, 4000, 100, 6000, 2000), "LFP": (2300, 920, 100, 1380, 2000)}


class Profile:
    """Validated tables of one cell type; see the module docstring for the units."""

    def __init__(self, chem, capacity_mah, vmin_mv, vmax_mv, eta_ppm, gamma_milli, soc, temp):
        self.chemistry = chem
        self.capacity_mah = capacity_mah
        self.vmin_mv = vmin_mv
        self.vmax_mv = vmax_mv
        self.eta_ppm = eta_ppm  # coulombic efficiency, parts per million
        self.gamma_milli = gamma_milli  # hysteresis rate, 1/1000 per Ah
        self.soc = soc
        self.temp = temp
        self.n = len(soc)
        self._k = 0  # located SOC segment and fraction, temperature segment and fraction
        self._fs = 0
        self._j = 0
        self._ft = 0

    def locate(self, soc, dc):
        """Select the grid cell at `soc` (0.01 %) and `dc` (0.1 degC) for the next `at` calls."""
        self._k, self._fs = _find(self.soc, soc)
        self._j, self._ft = _find(self.temp, dc)

    def at(self, table):
        """`table` interpolated at the located point, integer units of that table."""
        n = self.n
        i = self._j * n + self._k
        fs = self._fs
        a = table[i] + (((table[i + 1] - table[i]) * fs) >> 8)
        if len(self.temp) == 1:
            return a
        i += n
        b = table[i] + (((table[i + 1] - table[i]) * fs) >> 8)
        return a + (((b - a) * self._ft) >> 8)

    def slope(self, k=-1):
        """dOCV/dSOC (0.1 mV per 1 % SOC) of the located SOC segment (or segment `k`) at the
        located temperature."""
        n = self.n
        if k < 0:
            k = self._k
        ocv = self.ocv
        i = self._j * n + k
        ds = self.soc[k + 1] - self.soc[k]
        rise = ocv[i + 1] - ocv[i]
        if len(self.temp) > 1:
            rise += ((ocv[i + n + 1] - ocv[i + n] - rise) * self._ft) >> 8
        return rise * 100 // ds

    def bend(self):
        """How far OCV may depart from the located segment's straight line between its table
        points: 0.1 mV, the larger slope change to a neighbouring segment times the segment width
        (a curve bending by that much inside the segment misses its chord by a fraction of it)."""
        k = self._k
        s = self.slope()
        b = abs(s - self.slope(k - 1)) if k else 0
        if k < self.n - 2:
            b = max(b, abs(self.slope(k + 1) - s))
        return b * (self.soc[k + 1] - self.soc[k]) // 100

    def soc_at(self, ocv, dc):
        """SOC (0.01 %) whose OCV at `dc` is `ocv` (0.1 mV), clamped to the table."""
        j, ft = _find(self.temp, dc)
        soc = self.soc
        n = self.n
        lo = self._col(j, ft, 0)
        if ocv <= lo:
            return 0
        for k in range(n - 1):
            hi = self._col(j, ft, k + 1)
            if ocv < hi:
                return soc[k] + (ocv - lo) * (soc[k + 1] - soc[k]) // (hi - lo)
            lo = hi
        return 10000

    def _col(self, j, ft, k):
        # OCV at SOC point k, interpolated between temperature rows j and j + 1.
        ocv = self.ocv
        i = j * self.n + k
        a = ocv[i]
        return a if len(self.temp) == 1 else a + (((ocv[i + self.n] - a) * ft) >> 8)


def _find(axis, x):
    # Segment k with axis[k] <= x < axis[k + 1] and the 8-bit fraction of x in it, clamped.
    last = len(axis) - 1
    if last == 0 or x <= axis[0]:
        return 0, 0
    if x >= axis[last]:
        return last - 1, _FRAC
    k = 0
    while axis[k + 1] <= x:
        k += 1
    return k, (x - axis[k]) * _FRAC // (axis[k + 1] - axis[k])


def default(chem, capacity_mah, ocv_mv):
    """The profile without a configured one: `ocv_mv` (SOC 0, 5, ..., 100 %) and _DEFAULT_RC."""
    n = len(ocv_mv)
    p = Profile(
        chem,
        capacity_mah,
        ocv_mv[0],
        ocv_mv[n - 1],
        1000000,
        0,
        array("h", [k * 10000 // (n - 1) for k in range(n)]),
        array("h", (0, 250)),
    )
    p.ocv = array("H", [10 * v for v in ocv_mv] * 2)
    p.hysteresis = array("H", [0] * (2 * n))
    rc = _DEFAULT_RC[chem]
    # Per cell of the configured capacity: resistance scales inversely with capacity.
    for m, name in enumerate(("r0", "r1", "tau1", "r2", "tau2")):
        v = rc[m] if m in (2, 4) else min(21845, rc[m] * 1000 // capacity_mah)
        setattr(p, name, array("H", [3 * v if m not in (2, 4) else v] * n + [v] * n))
    return p
