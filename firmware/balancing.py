"""Passive balancing: which cells bleed, by cell voltage difference (SOC-based strategy to follow).

Balancing runs only when enabled, with fresh data, no open-tier fault, at rest or charging
(current_ma <= rest_current_ma), below balance_max_temp_dc and with the highest cell at or above
balance_min_mv; otherwise every bleed resistor is off and `reason` says why (first blocking
condition in that order).

A cell starts bleeding at balance_start_delta_mv above the lowest cell and keeps bleeding until it
is within balance_stop_delta_mv of it (hysteresis). The lowest cell never bleeds, cells below
balance_min_mv never bleed, and at most balance_max_cells bleed at once: the highest voltages
win, chosen by insertion into preallocated top-k arrays (no allocation). update() reads the
statistics of `meas`: call meas.update_stats() first.
"""

from array import array

from .compat import const

ACTIVE = const(0)
BALANCED = const(1)
FAULT = const(2)
NOT_AT_REST_OR_CHARGING = const(3)
BELOW_MIN_VOLTAGE = const(4)
OVER_TEMPERATURE = const(5)
DISABLED = const(6)
NO_DATA = const(7)


class Balancer:
    """Bleed-resistor selection; `mask` bit i of byte i // 8 = cell i (0-based) bleeding."""

    def __init__(self, cfg):
        self._cfg = cfg
        self._n = cfg.cell_count
        k = cfg.balance_max_cells
        self._top_mv = array("H", [0] * k)
        self._top_cell = array("H", [0] * k)
        self.mask = bytearray((self._n + 7) // 8)
        self.count = 0
        self.reason = NO_DATA

    def _blocked(self, meas, fault_active, now_ms):
        c = self._cfg
        if not c.balance_enable:
            return DISABLED
        if meas.stale(now_ms):
            return NO_DATA
        if fault_active:
            return FAULT
        if meas.current_ma > c.rest_current_ma:
            return NOT_AT_REST_OR_CHARGING
        if meas.tmax_dc >= c.balance_max_temp_dc:
            return OVER_TEMPERATURE
        if meas.vmax_mv < c.balance_min_mv:
            return BELOW_MIN_VOLTAGE
        return ACTIVE

    def update(self, meas, fault_active, now_ms):
        reason = self._blocked(meas, fault_active, now_ms)
        k = 0
        if reason == ACTIVE:
            k = self._select(meas)
            if not k:
                reason = BALANCED
        self._apply(k, reason)

    def clear(self):
        """Switch every bleed resistor off (the caller's safe state after an exception)."""
        self._apply(0, FAULT)

    def _apply(self, k, reason):
        mask = self.mask
        for b in range(len(mask)):
            mask[b] = 0
        top_cell = self._top_cell
        for j in range(k):
            i = top_cell[j]
            mask[i >> 3] |= 1 << (i & 7)
        self.count = k
        self.reason = reason

    def _select(self, meas):
        # Fills the top-k arrays (highest voltage first) from the cells allowed to bleed, reading
        # the previous mask for the hysteresis; returns how many were chosen.
        c = self._cfg
        cells = meas.cell_mv
        mask = self.mask
        top_mv = self._top_mv
        top_cell = self._top_cell
        kmax = len(top_mv)
        vmin = meas.vmin_mv
        start = vmin + c.balance_start_delta_mv
        keep = vmin + c.balance_stop_delta_mv
        floor = c.balance_min_mv
        k = 0
        for i in range(self._n):
            v = cells[i]
            # keep >= vmin, so this also rules out the lowest cell (and any cell equal to it).
            if v < floor or v <= keep:
                continue
            if v < start and not mask[i >> 3] & (1 << (i & 7)):
                continue
            if k == kmax:
                if v <= top_mv[k - 1]:
                    continue
                k -= 1
            j = k
            while j > 0 and top_mv[j - 1] < v:
                top_mv[j] = top_mv[j - 1]
                top_cell[j] = top_cell[j - 1]
                j -= 1
            top_mv[j] = v
            top_cell[j] = i
            k += 1
        return k
