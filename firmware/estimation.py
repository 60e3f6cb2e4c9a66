"""State of charge (SOC) and state of health (SOH) of the pack and of every cell.

SOC starts from the open-circuit voltage of each cell (OCV table of the chemistry, integer
interpolation) on the first update, then follows the pack current by coulomb counting. All cells
of a series string carry the same current, so one shared counter (net discharged charge in mAs
plus a remainder in mA*ms, exact: no drift, no float) and one initial SOC per cell give every
cell's SOC in O(1) per cycle.

Counting stops at the ends: the string cannot take charge once its fullest cell is full, nor
deliver once its emptiest cell is empty. That also bounds the counter to +-capacity, inside
small-int range. SOH is not estimated yet: it reports 100 %. Re-anchoring from OCV after a rest
period is left to the Kalman filter that replaces this estimator.

Units: SOC 0.01 % (0..10000), charge mAs, SOH 0.5 % (200 = 100 %).
"""

from array import array

from .compat import const

_SOC_FULL = const(10000)
_SOC_STEP = const(500)  # OCV table pitch: 5 % in 0.01 %


def ocv_to_soc(mv, table):
    """SOC (0.01 %) of a cell at rest with open-circuit voltage `mv`; clamped to 0..10000."""
    if mv <= table[0]:
        return 0
    last = len(table) - 1
    if mv >= table[last]:
        return _SOC_FULL
    k = 0
    while table[k + 1] <= mv:
        k += 1
    return k * _SOC_STEP + (mv - table[k]) * _SOC_STEP // (table[k + 1] - table[k])


def soc_to_ocv(soc, table):
    """Open-circuit voltage (mV) at `soc` (0.01 %, clamped to 0..10000)."""
    if soc <= 0:
        return table[0]
    if soc >= _SOC_FULL:
        return table[len(table) - 1]
    k = soc // _SOC_STEP
    return table[k] + (table[k + 1] - table[k]) * (soc - k * _SOC_STEP) // _SOC_STEP


def _mas_to_soc(q, mas_per_pct):
    # Split at whole percent so that no product exceeds 100 * mas_per_pct (< 2**30). No divmod:
    # its tuple would allocate.
    return (q // mas_per_pct) * 100 + (q % mas_per_pct) * 100 // mas_per_pct


def _soc_to_mas(soc, mas_per_pct):
    return (soc // 100) * mas_per_pct + (soc % 100) * mas_per_pct // 100


def _clamp_soc(s):
    if s < 0:
        return 0
    if s > _SOC_FULL:
        return _SOC_FULL
    return s


class SocEstimator:
    """Coulomb-counting SOC estimator with an OCV start; see the module docstring."""

    def __init__(self, cfg):
        self._table = cfg.ocv_mv
        self._mas_per_pct = cfg.capacity_mah * 36  # 1 % of capacity in mAs
        self._soc0 = array("H", [0] * cfg.cell_count)
        self._soc0_mean = 0
        self._soc0_min = 0
        self._soc0_max = 0
        self._q_min = 0
        self._q_max = 0
        self._rem = 0  # mA*ms not yet carried into discharged_mas, 0..999
        self._delta = 0  # SOC drop since the start, 0.01 %
        self.discharged_mas = 0  # net charge delivered since the start, mAs (negative: charged)
        self.initialised = False
        self.soc = 0
        self.soc_min = 0
        self.soc_max = 0
        self.soh_halfpct = 200

    def update(self, meas, dt_ms, now_ms):
        """Advance by `dt_ms`; call only with fresh, plausible measurements."""
        if not self.initialised:
            self._start(meas.cell_mv)
            return
        p = meas.current_ma * dt_ms + self._rem
        q = self.discharged_mas + p // 1000
        self._rem = p % 1000
        if q > self._q_max:
            q = self._q_max
            self._rem = 0
        elif q < self._q_min:
            q = self._q_min
            self._rem = 0
        self.discharged_mas = q
        self._set_delta(_mas_to_soc(q, self._mas_per_pct))

    def _start(self, cells):
        table = self._table
        soc0 = self._soc0
        total = 0
        lo = _SOC_FULL
        hi = 0
        for i in range(len(soc0)):
            s = ocv_to_soc(cells[i], table)
            soc0[i] = s
            total += s
            if s < lo:
                lo = s
            if s > hi:
                hi = s
        self._soc0_mean = total // len(soc0)
        self._soc0_min = lo
        self._soc0_max = hi
        self._q_max = _soc_to_mas(lo, self._mas_per_pct)
        self._q_min = -_soc_to_mas(_SOC_FULL - hi, self._mas_per_pct)
        self.discharged_mas = 0
        self._rem = 0
        self._set_delta(0)
        self.initialised = True

    def _set_delta(self, d):
        self._delta = d
        self.soc = _clamp_soc(self._soc0_mean - d)
        self.soc_min = _clamp_soc(self._soc0_min - d)
        self.soc_max = _clamp_soc(self._soc0_max - d)

    def cell_soc(self, i):
        """SOC (0.01 %) of cell `i` (0-based)."""
        return _clamp_soc(self._soc0[i] - self._delta)
