"""State of charge (SOC) and state of health (SOH) of the pack and of every cell.

SOC starts from the open-circuit voltage of each cell (OCV table of the chemistry, integer
interpolation) on the first update, then follows the pack current by coulomb counting. All cells
of a series string carry the same current, so one shared counter (net discharged charge in mAs
plus a remainder in mA*ms, exact: no drift, no float) and one initial SOC per cell give every
cell's SOC in O(1) per cycle.

Counting stops at the ends: the string cannot take charge once its fullest cell is full, nor
deliver once its emptiest cell is empty. That also bounds the counter to +-capacity, inside
small-int range. SOH is not estimated yet: it reports 100 %. Re-anchoring the pack SOC from OCV
after a rest period is left to the Kalman filter that replaces this estimator.

For balancing, every cell also carries its own charge `cell_mas[i]` (mAs, relative to the shared
counter: the cell holds cell_mas[i] - discharged_mas). It starts from the cell's OCV, loses what
its bleed resistor removes (`bleed`) and is re-anchored from OCV (`anchor`) once the pack has
rested for balance_rest_ms. OCV tells SOC only where the curve is steep (not on LFP's plateau):
a cell is anchored only on a 5 % table step rising at least balance_anchor_rise_mv, and
`known_count` counts the cells anchored that way at least once (the start counts when at rest).

Units: SOC 0.01 % (0..10000), charge mAs, SOH 0.5 % (200 = 100 %).
"""

from array import array

from .compat import const

_SOC_FULL = const(10000)
_SOC_STEP = const(500)  # OCV table pitch: 5 % in 0.01 %


def _segment(mv, table):
    # Index k of the table step that holds `mv` (table[k] <= mv < table[k + 1]), clamped.
    k = 0
    last = len(table) - 2
    while k < last and table[k + 1] <= mv:
        k += 1
    return k


def ocv_to_soc(mv, table):
    """SOC (0.01 %) of a cell at rest with open-circuit voltage `mv`; clamped to 0..10000."""
    if mv <= table[0]:
        return 0
    if mv >= table[len(table) - 1]:
        return _SOC_FULL
    k = _segment(mv, table)
    return k * _SOC_STEP + (mv - table[k]) * _SOC_STEP // (table[k + 1] - table[k])


def ocv_rise(mv, table):
    """Rise (mV) of the OCV table step that holds `mv`: how sharply OCV resolves SOC there."""
    k = _segment(mv, table)
    return table[k + 1] - table[k]


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
        self._cfg = cfg
        self._table = cfg.ocv_mv
        self._mas_per_pct = cfg.capacity_mah * 36  # 1 % of capacity in mAs
        n = cfg.cell_count
        self._soc0 = array("H", [0] * n)
        self.cell_mas = array("l", [0] * n)  # per-cell charge, see the module docstring
        self._bleed_rem = array("H", [0] * n)  # mA*ms bled not yet carried into cell_mas
        self._known = bytearray(n)
        self.known_count = 0
        self.rest_ms = 0  # how long |I| stayed at or below rest_current_ma, capped
        self._rest_anchored = False
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
        c = self._cfg
        i = meas.current_ma
        if -c.rest_current_ma <= i <= c.rest_current_ma:
            if self.rest_ms < c.balance_rest_ms:
                self.rest_ms += dt_ms
        else:
            self.rest_ms = 0
            self._rest_anchored = False
        if not self.initialised:
            self._start(meas.cell_mv)
            if self.rest_ms:
                self.anchor(meas.cell_mv)
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
        cell_mas = self.cell_mas
        for i in range(len(soc0)):
            cell_mas[i] = _soc_to_mas(soc0[i], self._mas_per_pct)
        self.initialised = True

    def _set_delta(self, d):
        self._delta = d
        self.soc = _clamp_soc(self._soc0_mean - d)
        self.soc_min = _clamp_soc(self._soc0_min - d)
        self.soc_max = _clamp_soc(self._soc0_max - d)

    def cell_soc(self, i):
        """SOC (0.01 %) of cell `i` (0-based)."""
        return _clamp_soc(self._soc0[i] - self._delta)

    def anchor_after_rest(self, cells):
        """Anchor once per rest period, once |current| stayed at or below rest_current_ma for
        balance_rest_ms. Call only with voltages measured while no bleed resistor was on."""
        if self._rest_anchored or self.rest_ms < self._cfg.balance_rest_ms:
            return
        self._rest_anchored = True
        self.anchor(cells)

    def anchor(self, cells):
        """Set each cell's charge from its OCV `cells[i]` (mV, taken at rest with no bleeding)
        where the table is steep enough there (balance_anchor_rise_mv); other cells keep theirs."""
        table = self._table
        rise = self._cfg.balance_anchor_rise_mv
        cell_mas = self.cell_mas
        known = self._known
        q = self.discharged_mas
        for i in range(len(cell_mas)):
            mv = cells[i]
            if ocv_rise(mv, table) < rise:
                continue
            cell_mas[i] = _soc_to_mas(ocv_to_soc(mv, table), self._mas_per_pct) + q
            self._bleed_rem[i] = 0
            if not known[i]:
                known[i] = 1
                self.known_count += 1

    def bleed(self, i, mv, dt_ms, mohm):
        """Account `dt_ms` of cell `i`'s bleed resistor (`mohm`) on at cell voltage `mv`."""
        p = mv * 1000 // mohm * dt_ms + self._bleed_rem[i]  # mA * ms
        self.cell_mas[i] -= p // 1000
        self._bleed_rem[i] = p % 1000
