"""Passive balancing: which cells bleed, toward equal SOC or by cell voltage difference.

Strategy (balance_strategy, the one in use is `strategy`):
- SOC: a cell's surplus is its charge above the reference cell's (`cell_mas` of cellcharge.py,
  which counts what every bleed resistor removed). The reference is the emptiest cell until a
  discharge has shown the weakest one (the cell reading lowest, below discharge_taper_mv, while
  discharging below balance_weak_soc). Toward the emptiest, a cell starts bleeding at
  balance_start_soc of capacity above it and bleeds until within balance_stop_soc (hysteresis);
  toward the weakest, a cell more than balance_stop_soc fuller bleeds down to its charge (top
  balancing): the weakest cell ends every discharge, so usable capacity is greatest when it also
  ends the charge, and a cell emptier than it in rated units holds more in its own (else it would
  have ended the discharge), so it is left alone. The booked charge is checked every cycle, so a
  cell stops mid-phase. Used only while every cell's SOC is known (anchored from OCV where the
  curve is steep, see estimation); until then the voltage strategy stands in, since LFP's flat OCV
  curve says little about SOC.
- VOLTAGE: a cell starts bleeding at balance_start_delta_mv above the lowest cell and keeps
  bleeding until within balance_stop_delta_mv of it.

Duty cycle: every resistor is off for a measurement window of balance_measure_ms, then the
selected cells bleed for balance_bleed_ms (balance_soc_bleed_ms while the SOC strategy decides
at rest: it reads booked charge, not the window's voltages; while charging the short phase keeps
the over-voltage rule on clean samples), and so on. Cells are selected only at the end
of the window, from that cycle's voltages: the cycles before had every resistor off, so bleed
current through the shared sense lines cannot bias the voltages the decision reads.

Anchoring (SOC strategy only): once the pack has rested balance_rest_ms, a window's end
re-anchors every cell's charge from OCV (CellCharge.anchor), and again after every
balance_reanchor_ms of bleeding in the same rest: the booked charge cannot see self-discharge,
which over a day of balancing is as large as the stop threshold. When resistors bled since the
last anchor, that window lasts balance_relax_ms so the polarisation the bleed current left has
decayed before OCV is read. Between those anchors, every window's end also anchors each cell whose
resistor has been off for balance_relax_ms, filtered (CellCharge.anchor_cell with
balance_track_shift): the cells that do not bleed, the lowest among them, are the reference the
others bleed toward, and their self-discharge would otherwise go unseen for the whole rest.

Safety, checked every cycle; the first blocking condition in this order switches every resistor off,
restarts the window and sets `reason`: balancing disabled, stale data, open-tier fault, neither at
rest nor charging (current_ma > rest_current_ma), any temperature at or above balance_max_temp_dc.
After any block the first window ends only once the pack has been at rest or charging for
balance_settle_ms (reason NOT_AT_REST_OR_CHARGING meanwhile), so the idle seconds of a drive
never start bleeding.
At the decision, BELOW_MIN_VOLTAGE blocks while every cell is below balance_min_mv and a cell below
it never bleeds. The lowest cell never bleeds (its surplus is at most 0, stop thresholds are >= 0).

Heat and AFE rules: at most balance_max_cells bleed at once, highest surplus (or voltage) first,
chosen by insertion into preallocated top-k arrays; with balance_no_adjacent a chosen cell next to a
higher-priority chosen cell waits for a later period. Each cycle first books the charge removed by
the resistors that were on (I = cell_mv / balance_bleed_mohm). O(cells) per cycle, no allocation.
update() reads the statistics and the freshness verdict of `meas`: call meas.evaluate() first.

A tester's balancing test (RoutineData balance_run, UDS routine 0x0302) bleeds one cell for
balance_ms instead of the duty cycle, under the same safety checks: it starts only when no block
stands (ACTIVE) and the cell is at or above balance_min_mv, is ABORTED by any block or a stop,
PASSED at its end; the duty cycle then starts again with a measurement window.
"""

from array import array

from .compat import const, ticks_diff
from .data import TEST_ABORTED, TEST_PASSED, TEST_REFUSED, TEST_RUNNING
from .ocv import soc_to_mas

ACTIVE = const(0)
BALANCED = const(1)
FAULT = const(2)
NOT_AT_REST_OR_CHARGING = const(3)
BELOW_MIN_VOLTAGE = const(4)
OVER_TEMPERATURE = const(5)
DISABLED = const(6)
NO_DATA = const(7)
MEASURING = const(8)

STRATEGY_SOC = const(0)
STRATEGY_VOLTAGE = const(1)

_BLED = const(0xFFFF)  # rested-time mark: the cell bled since the last decision


def _bit(mask, i):
    return mask[i >> 3] & (1 << (i & 7))


class Balancer:
    """Bleed-resistor selection and duty cycle, written into BalancingData `data.balancing`:
    `mask` bit i of byte i // 8 = cell i (0-based) bleeding now, `count` how many, `changed` True
    in a cycle that changed the mask. Reads the SOC block and books into the per-cell charge."""

    def __init__(self, cfg, data):
        self._cfg = cfg
        self._est = data.soc
        self._charge = data.charge
        self.out = out = data.balancing
        self._req = data.routines
        self._test_ms = 0
        self._n = cfg.cell_count
        k = cfg.balance_max_cells
        self._top_p = array("l", [0] * k)
        self._top_cell = array("H", [0] * k)
        mas_per_pct = cfg.capacity_mah * 36
        self._start_mas = soc_to_mas(cfg.balance_start_soc, mas_per_pct)
        self._stop_mas = soc_to_mas(cfg.balance_stop_soc, mas_per_pct)
        self._sel = bytearray(len(out.mask))  # the selection of the current bleed phase
        self._off = bytearray(len(out.mask))  # all off
        self._sel_count = 0
        self._decision = BALANCED
        self._measuring = True
        self._elapsed_ms = 0
        self._calm_ms = 0  # time at rest or charging without a block, saturating
        self._anchored = False  # anchored during this rest
        self._bled_ms = 0  # bleeding since the last anchor, ms, saturating at balance_reanchor_ms
        self._rested = array("H", [0] * self._n)  # s since each cell's resistor was on, saturating
        self._clock_ms = 0  # since the last decision, saturating at _full_s
        self._full_s = (cfg.balance_relax_ms + 999) // 1000  # rested this long: relaxed, s
        self._weak = -1  # the weakest cell (0-based), -1 until a discharge has shown it
        self._last_ms = None
        out.strategy = cfg.balance_strategy

    def _blocked(self, meas, fault_active, now_ms):
        c = self._cfg
        if not c.balance_enable:
            return DISABLED
        if meas.stale:  # the cycle's verdict (Measurements.evaluate)
            return NO_DATA
        if fault_active:
            return FAULT
        if meas.current_ma > c.rest_current_ma:
            return NOT_AT_REST_OR_CHARGING
        if meas.tmax_dc >= c.balance_max_temp_dc:
            return OVER_TEMPERATURE
        return ACTIVE

    def update(self, meas, fault_active, now_ms):
        """One control cycle: book the last period's bleeding, check safety, run the duty cycle."""
        dt = 0 if self._last_ms is None else ticks_diff(now_ms, self._last_ms)
        self._last_ms = now_ms
        self._book(meas.cell_mv, dt)
        c = self._cfg
        self._clock_ms = min(self._clock_ms + dt, 1000 * self._full_s)
        if self.out.count:
            self._bled_ms = min(self._bled_ms + dt, c.balance_reanchor_ms or 1)
        if self._est.rest_ms < c.balance_rest_ms:
            self._anchored = False
        reason = self._blocked(meas, fault_active, now_ms)
        if (
            reason == NOT_AT_REST_OR_CHARGING
            and meas.vmin_mv < c.discharge_taper_mv
            and self._est.soc < c.balance_weak_soc
        ):
            self._weak = meas.vmin_cell - 1  # 1-based
        if self._test(meas, reason, dt):
            return
        if reason != ACTIVE:
            self._sel_count = 0
            self._zero_sel()
            self._measuring = True
            self._elapsed_ms = 0
            self._calm_ms = 0
            self._apply(False, reason)
            return
        self._elapsed_ms += dt
        self._calm_ms = min(self._calm_ms + dt, c.balance_settle_ms)
        if self._measuring:
            if self._calm_ms < c.balance_settle_ms:
                self._apply(False, NOT_AT_REST_OR_CHARGING)
                return
            window = c.balance_measure_ms
            if self._bled_ms and self._anchor_due():
                window = c.balance_relax_ms
            if self._elapsed_ms < window:
                self._apply(False, MEASURING)
                return
            self._decide(meas)
            self._measuring = False
            self._elapsed_ms = 0
        elif self._elapsed_ms >= (
            # Charging, protection needs clean samples often: a bleeding cell reads low through
            # its sense lines and could hide an over-voltage for a whole phase.
            c.balance_soc_bleed_ms
            if self.out.strategy == STRATEGY_SOC and meas.current_ma >= -c.rest_current_ma
            else c.balance_bleed_ms
        ):
            self._measuring = True
            self._elapsed_ms = 0
            self._apply(False, MEASURING)
            return
        elif self.out.strategy == STRATEGY_SOC and self._sel_count:
            self._trim()
        self._apply(True, self._decision)

    def _test(self, meas, reason, dt):
        # The balancing test: True while it holds the resistors (one cell bleeding).
        o = self.out
        req = self._req
        run = req.balance_run
        i = req.balance_cell
        ok = reason == ACTIVE and 0 <= i < self._n and meas.cell_mv[i] >= self._cfg.balance_min_mv
        if run != o.test_run:
            o.test_run = run
            if o.test == TEST_RUNNING:
                o.test = TEST_ABORTED
                self._end_test()
            if run:
                o.test = TEST_RUNNING if ok else TEST_REFUSED
                self._test_ms = 0
        if o.test != TEST_RUNNING:
            return False
        if not ok:
            o.test = TEST_ABORTED
            self._end_test()
            return False
        self._test_ms += dt
        if self._test_ms >= req.balance_ms:
            o.test = TEST_PASSED
            self._end_test()
            return False
        self._zero_sel()
        sel = self._sel
        sel[i >> 3] = 1 << (i & 7)
        self._sel_count = 1
        self._apply(True, ACTIVE)
        return True

    def _end_test(self):
        # The duty cycle starts again from a measurement window, with its own selection.
        self._sel_count = 0
        self._zero_sel()
        self._measuring = True
        self._elapsed_ms = 0

    def _anchor_due(self):
        # Only the SOC strategy reads the anchored charge; the voltage one keeps its full duty.
        c = self._cfg
        est = self._est
        if c.balance_strategy != STRATEGY_SOC or not est.initialised:
            return False
        if est.rest_ms < c.balance_rest_ms:
            return False
        return not self._anchored or 0 < c.balance_reanchor_ms <= self._bled_ms

    def clear(self):
        """Switch every bleed resistor off (the caller's safe state after an exception)."""
        self._sel_count = 0
        self._zero_sel()
        self._measuring = True
        self._elapsed_ms = 0
        self._apply(False, FAULT)

    def _zero_sel(self):
        if self._sel != self._off:  # bytearrays: compared and copied in C
            self._sel[:] = self._off

    def _apply(self, bleeding, reason):
        o = self.out
        mask = o.mask
        src = self._sel if bleeding else self._off
        changed = mask != src  # bytearrays: compared and copied in C
        if changed:
            mask[:] = src
        o.changed = changed
        o.count = self._sel_count if bleeding else 0
        o.reason = reason

    def _book(self, cells, dt):
        # The resistors in `mask` were on since the last cycle: charge their cells with it.
        mask = self.out.mask
        if not dt or not self._est.initialised or mask == self._off:
            return
        charge = self._charge
        mohm = self._cfg.balance_bleed_mohm
        for b in range(len(mask)):
            bits = mask[b]
            i = b << 3
            while bits:
                if bits & 1:
                    charge.bleed(i, cells[i], dt, mohm)
                    self._rested[i] = _BLED
                bits >>= 1
                i += 1

    def _decide(self, meas):
        # Chooses the bleed set of the next phase from clean (window) voltages into `_sel`.
        c = self._cfg
        cells = meas.cell_mv
        if self._anchor_due():
            self._charge.anchor(cells)
            self._anchored = True
            self._bled_ms = 0
            self._age(None)
        else:
            self._age(cells)
        if meas.vmax_mv < c.balance_min_mv:
            k = 0
            self._decision = BELOW_MIN_VOLTAGE
        else:
            charge = self._charge
            soc = c.balance_strategy == STRATEGY_SOC and charge.known_count == self._n
            self.out.strategy = STRATEGY_SOC if soc else STRATEGY_VOLTAGE
            k = self._select_soc(cells, charge.cell_mas) if soc else self._select_mv(meas)
            self._decision = ACTIVE if k else BALANCED
        self._zero_sel()
        sel = self._sel
        top_cell = self._top_cell
        no_adj = c.balance_no_adjacent
        n = self._n
        count = 0
        for j in range(k):
            i = top_cell[j]
            if no_adj and ((i > 0 and _bit(sel, i - 1)) or (i + 1 < n and _bit(sel, i + 1))):
                continue
            sel[i >> 3] |= 1 << (i & 7)
            count += 1
        self._sel_count = count

    def _age(self, cells):
        # Adds the seconds since the last decision to every cell's rested time (a cell that bled
        # in them starts again from 0); with `cells` (the window's voltages) and the pack relaxed,
        # tracks the OCV of the cells rested balance_relax_ms.
        c = self._cfg
        est = self._est
        s = self._clock_ms // 1000
        self._clock_ms -= s * 1000
        full = self._full_s
        if cells is not None and not (
            c.balance_strategy == STRATEGY_SOC
            and est.initialised
            and est.rest_ms >= c.balance_rest_ms
        ):
            cells = None
        shift = c.balance_track_shift
        charge = self._charge
        rested = self._rested
        for i in range(self._n):
            r = rested[i]
            r = 0 if r == _BLED else r + s
            if r >= full:
                r = full
                if cells is not None:
                    charge.anchor_cell(i, cells[i], shift)
            rested[i] = r

    def _trim(self):
        # SOC strategy while bleeding: the booked charge says when a cell's surplus is gone, so it
        # stops then rather than at the end of the phase.
        cell_mas = self._charge.cell_mas
        keep = self._reference(cell_mas) + (0 if self._weak >= 0 else self._stop_mas)
        sel = self._sel
        for i in range(self._n):
            if _bit(sel, i) and cell_mas[i] <= keep:
                sel[i >> 3] &= ~(1 << (i & 7))
                self._sel_count -= 1
        if not self._sel_count:
            self._decision = BALANCED

    def _reference(self, cell_mas):
        # The charge the others bleed toward: the weakest cell's once known, else the lowest.
        if self._weak >= 0:
            return cell_mas[self._weak]
        lo = cell_mas[0]
        for i in range(1, self._n):
            if cell_mas[i] < lo:
                lo = cell_mas[i]
        return lo

    def _select_mv(self, meas):
        vmin = meas.vmin_mv
        return self._select(
            meas.cell_mv,
            meas.cell_mv,
            vmin + self._cfg.balance_start_delta_mv,
            vmin + self._cfg.balance_stop_delta_mv,
        )

    def _select_soc(self, cells, cell_mas):
        ref = self._reference(cell_mas)
        if self._weak >= 0:  # top balancing: no cell more than balance_stop_soc fuller than it
            return self._select(cells, cell_mas, ref + self._stop_mas, ref)
        return self._select(cells, cell_mas, ref + self._start_mas, ref + self._stop_mas)

    def _select(self, cells, prio, start, keep):
        # Fills the top-k arrays (highest priority first) from the cells allowed to bleed: at or
        # above balance_min_mv, priority above `keep`, and at or above `start` unless already
        # selected (hysteresis). `keep` is at least the lowest priority, which rules out the
        # lowest cell. Returns how many.
        sel = self._sel
        top_p = self._top_p
        top_cell = self._top_cell
        kmax = len(top_p)
        floor = self._cfg.balance_min_mv
        k = 0
        for i in range(self._n):
            p = prio[i]
            if cells[i] < floor or p <= keep:
                continue
            if p < start and not _bit(sel, i):
                continue
            if k == kmax:
                if p <= top_p[k - 1]:
                    continue
                k -= 1
            j = k
            while j > 0 and top_p[j - 1] < p:
                top_p[j] = top_p[j - 1]
                top_cell[j] = top_cell[j - 1]
                j -= 1
            top_p[j] = p
            top_cell[j] = i
            k += 1
        return k
