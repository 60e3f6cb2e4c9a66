"""Per-cell charge for balancing: what each cell holds, booked from what its bleed resistor removed.

Owns `cell_mas[i]` (mAs, relative to the estimator's shared counter: cell i holds
cell_mas[i] - discharged_mas of SocData) and `known_count`. The estimator calls `start` once,
when it starts (every cell's charge from its start SOC); the balancer books bleeding (`bleed`)
and re-anchors cells from OCV at rest (`anchor`, `anchor_cell`); nobody else writes here. OCV
tells SOC only where the curve is steep (not on LFP's plateau): a cell is anchored only on a 5 %
table step rising at least balance_anchor_rise_mv, and `known_count` counts the cells anchored that
way at least once (the start counts when at rest). Integers, no allocation after construction.
"""

from array import array

from .ocv import ocv_rise, ocv_to_soc, soc_to_mas


class CellCharge:
    """Charge of every cell; see the module docstring. `soc` is the estimator's SocData."""

    def __init__(self, cfg, soc):
        self._cfg = cfg
        self._soc = soc
        self._table = cfg.ocv_mv
        self._mas_per_pct = cfg.capacity_mah * 36  # 1 % of capacity in mAs
        n = cfg.cell_count
        self.cell_mas = array("l", [0] * n)
        self._bleed_rem = array("H", [0] * n)  # mA*ms bled not yet carried into cell_mas
        self._known = bytearray(n)
        self.known_count = 0

    def start(self, cells, at_rest):
        """The estimator started: each cell's charge from its start SOC, and at rest from its OCV
        `cells[i]` (mV) where the table is steep enough."""
        soc0 = self._soc.soc0
        cell_mas = self.cell_mas
        for i in range(len(soc0)):
            cell_mas[i] = soc_to_mas(soc0[i], self._mas_per_pct)
        if at_rest:
            self.anchor(cells)

    def anchor(self, cells):
        """Set each cell's charge from its OCV `cells[i]` (mV, taken at rest with no bleeding)
        where the table is steep enough there (balance_anchor_rise_mv); other cells keep theirs."""
        for i in range(len(self.cell_mas)):
            self.anchor_cell(i, cells[i], 0)

    def anchor_cell(self, i, mv, shift):
        """Anchor cell `i` to its OCV `mv` (as `anchor`); a cell already known moves only
        1/2**`shift` of the way, so repeated anchors average out single readings' noise."""
        table = self._table
        if ocv_rise(mv, table) < self._cfg.balance_anchor_rise_mv:
            return
        q = soc_to_mas(ocv_to_soc(mv, table), self._mas_per_pct) + self._soc.discharged_mas
        if shift and self._known[i]:
            self.cell_mas[i] += (q - self.cell_mas[i]) >> shift
            return
        self.cell_mas[i] = q
        self._bleed_rem[i] = 0
        if not self._known[i]:
            self._known[i] = 1
            self.known_count += 1

    def bleed(self, i, mv, dt_ms, mohm):
        """Account `dt_ms` of cell `i`'s bleed resistor (`mohm`) on at cell voltage `mv`."""
        p = mv * 1000 // mohm * dt_ms + self._bleed_rem[i]  # mA * ms
        self.cell_mas[i] -= p // 1000
        self._bleed_rem[i] = p % 1000
