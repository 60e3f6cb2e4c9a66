"""The latest cell voltages, temperatures, pack current, pack and link voltage, and their freshness.

This is the measurement data block (data.py): the measurement sources fill it through the setters
(group by group from CAN frames or a board's front end; the auxiliary inputs, contactor feedback
and a second current sensor, count as one more group); this module alone derives, once per cycle
in `evaluate`, the freshness verdict `stale` and the pack statistics (min/max/avg with 1-based
cell and sensor numbers, 0 = not available yet); `plausible()` is the range verdict protection
asks for. Nothing here allocates after construction.

Sense-line compensation lives here, not in the balancer: it is a property of the measurement front
end (sense lines shared with the bleed path), and every consumer (protection, limits, estimation,
the balancer's charge booking, CAN) must see the same corrected voltages. The balancer only supplies
the mask that was on while the values were taken. `cell_raw_mv` keeps the values as received and
`compensate()` rebuilds `cell_mv` from it, so a group that was not refreshed is never corrected
twice.

Freshness is tracked per 4-value group plus one slot for the pack measurement. A slot found stale
stays stale until a new value arrives, so an old time stamp can never look fresh again when the
tick counter wraps.
"""

from array import array

from .compat import const, ticks_diff

try:
    from .native import scan16 as _native_scan
except (ImportError, ValueError):  # no native code for this machine: the bytecode loops below
    _native_scan = None

_GROUP = const(4)  # values per group (one multiplexed CAN frame)


def _clamp(v, lo, hi):
    # Out-of-container values become the nearest bound, which plausible() rejects; without this
    # MicroPython would silently wrap them into the array type.
    if v < lo:
        return lo
    if v > hi:
        return hi
    return v


def _put4(values, i, v0, v1, v2, v3, lo, hi):
    # The last group may be partly beyond the configured count: those values are dropped.
    n = len(values)
    values[i] = _clamp(v0, lo, hi)
    if i + 1 < n:
        values[i + 1] = _clamp(v1, lo, hi)
    if i + 2 < n:
        values[i + 2] = _clamp(v2, lo, hi)
    if i + 3 < n:
        values[i + 3] = _clamp(v3, lo, hi)


def _first(values, v):
    # Index of the first element equal to `v` (which is in `values`).
    i = 0
    for x in values:
        if x == v:
            return i
        i += 1
    return 0


def _scan(values, r, signed):
    # r <- min, index of min, max, index of max, sum, rounded mean (first index wins ties).
    # One machine-code pass where the port has it (firmware/native.py), else min, max and sum
    # in C and one interpreted loop per index, ending where it is found.
    n = len(values)
    if _native_scan is not None:
        _native_scan(values, n, signed, r)
        total = r[4]
    else:
        vmin = min(values)
        vmax = max(values)
        total = sum(values)
        r[0] = vmin
        r[1] = _first(values, vmin)
        r[2] = vmax
        r[3] = _first(values, vmax)
        r[4] = total
    r[5] = (total + n // 2) // n


class Measurements:
    """Measurement store for one pack; see the module docstring."""

    def __init__(self, cfg):
        self._cfg = cfg
        n = cfg.cell_count
        m = cfg.temp_count
        self.cell_mv = array("H", [0] * n)  # corrected by compensate(); what everything reads
        # As received. Without sense-line compensation the two are one array: nothing to copy.
        self.cell_raw_mv = array("H", [0] * n) if cfg.balance_sense_mohm else self.cell_mv
        self._biased = False  # cell_mv differs from cell_raw_mv (compensate() changed it)
        self.temp_dc = array("h", [0] * m)
        self.current_ma = 0
        self.pack_mv = 0
        self.link_mv = 0
        self.pack_count = 0  # pack measurements received, mod 2**16: tells a new one from a reused
        self.rx_errors = 0
        self._cell_groups = (n + _GROUP - 1) // _GROUP
        self._temp_groups = (m + _GROUP - 1) // _GROUP
        # Freshness slots: cell groups, temperature groups, the pack measurement, then the
        # auxiliary inputs (contactor feedback, second current sensor) when any is fitted.
        slots = self._cell_groups + self._temp_groups + 1
        self._aux_slot = slots
        if cfg.contactor_feedback or cfg.current2_enable:
            slots += 1
        # Contactor feedback, bit 0 neg, 1 pre, 2 pos (1 = closed); -1 once the application has
        # used it (no new reading yet).
        self.feedback = -1
        self.current2_ma = 0  # second pack current measurement, mA, positive = discharge
        # A list, not an array: tick values span 62 bits on the unix port (still small ints).
        self._rx_ms = [0] * slots
        self._seen = bytearray(slots)
        self._pack_max_mv = n * cfg.plaus_cell_max_mv
        self._stats = array("i", [0] * 6)
        self.vmin_mv = self.vmax_mv = self.vavg_mv = self.cell_sum_mv = 0
        self.vmin_cell = self.vmax_cell = 0
        self.tmin_dc = self.tmax_dc = self.tavg_dc = 0
        self.tmin_sensor = self.tmax_sensor = 0
        self.stale = True  # the last evaluate(): some value missing or too old

    def _mark(self, slot, now_ms):
        self._rx_ms[slot] = now_ms
        self._seen[slot] = 1

    def set_cells(self, group, v0, v1, v2, v3, now_ms):
        if not 0 <= group < self._cell_groups:
            self.rx_errors += 1
            return
        _put4(self.cell_raw_mv, group * _GROUP, v0, v1, v2, v3, 0, 0xFFFF)
        _put4(self.cell_mv, group * _GROUP, v0, v1, v2, v3, 0, 0xFFFF)
        self._mark(group, now_ms)

    def cells_in(self, group, now_ms):
        """Group `group` of `cell_raw_mv` was just written in place (the codec's
        decode_*_into, whose signal widths fit the array): check it, bring `cell_mv` along,
        mark it fresh."""
        if not 0 <= group < self._cell_groups:
            self.rx_errors += 1
            return
        out = self.cell_mv
        raw = self.cell_raw_mv
        if out is not raw:
            i = group * _GROUP
            k = min(i + _GROUP, len(raw))
            while i < k:
                out[i] = raw[i]
                i += 1
        self._rx_ms[group] = now_ms
        self._seen[group] = 1

    def temps_in(self, group, now_ms):
        """Group `group` of `temp_dc` was just written in place (as `cells_in`)."""
        if not 0 <= group < self._temp_groups:
            self.rx_errors += 1
            return
        slot = self._cell_groups + group
        self._rx_ms[slot] = now_ms
        self._seen[slot] = 1

    def set_temps(self, group, t0, t1, t2, t3, now_ms):
        if not 0 <= group < self._temp_groups:
            self.rx_errors += 1
            return
        _put4(self.temp_dc, group * _GROUP, t0, t1, t2, t3, -0x8000, 0x7FFF)
        self._mark(self._cell_groups + group, now_ms)

    def set_pack(self, current_ma, pack_mv, link_mv, now_ms):
        self.current_ma = current_ma
        self.pack_mv = pack_mv
        self.link_mv = link_mv
        self.pack_count = (self.pack_count + 1) & 0xFFFF
        self._mark(self._aux_slot - 1, now_ms)

    def set_aux(self, feedback, current2_ma, now_ms):
        self.feedback = feedback
        self.current2_ma = current2_ma
        if self._aux_slot < len(self._seen):
            self._mark(self._aux_slot, now_ms)

    def evaluate(self, now_ms):
        """The cycle's verdict at `now_ms`: `stale` (also returned) and, when fresh, the
        statistics. Call once per cycle, after compensate()."""
        stale = self._stale(now_ms)
        self.stale = stale
        if not stale:
            self.update_stats()
        return stale

    def _stale(self, now_ms):
        # True if any group or the pack value was never received or is older than the limit.
        limit = self._cfg.meas_stale_ms
        seen = self._seen
        rx = self._rx_ms
        if seen.find(b"\x00") < 0:
            # Every slot seen: the oldest and newest time stamp (min/max in C) decide, unless
            # the stamps straddle the tick wrap (then the two ages differ by more than the
            # stamps do, and the loop below judges each).
            lo = min(rx)
            hi = max(rx)
            a = ticks_diff(now_ms, lo)
            b = ticks_diff(now_ms, hi)
            if a - b == hi - lo and -limit <= b and a <= limit:
                return False
        result = False
        for s in range(len(seen)):
            if not seen[s]:
                result = True
            elif not -limit <= ticks_diff(now_ms, rx[s]) <= limit:
                seen[s] = 0
                result = True
        return result

    def plausible(self, stats=False):
        """True if every value lies in its physical range (config plaus_* keys). Whether the pack
        voltage agrees with the sum of the cells is protection's PackVoltageMismatch rule.
        `stats`: the statistics of this cycle's `evaluate` stand for the values (nothing wrote
        them since), so their extremes decide instead of a scan."""
        cfg = self._cfg
        v = self.cell_mv
        t = self.temp_dc
        if stats:
            if self.vmin_mv < cfg.plaus_cell_min_mv or self.vmax_mv > cfg.plaus_cell_max_mv:
                return False
            if self.tmin_dc < cfg.plaus_temp_min_dc or self.tmax_dc > cfg.plaus_temp_max_dc:
                return False
        elif min(v) < cfg.plaus_cell_min_mv or max(v) > cfg.plaus_cell_max_mv:
            return False
        elif min(t) < cfg.plaus_temp_min_dc or max(t) > cfg.plaus_temp_max_dc:
            return False
        i = self.current_ma
        return (
            -cfg.plaus_current_ma <= i <= cfg.plaus_current_ma
            and 0 <= self.pack_mv
            and 0 <= self.link_mv <= self._pack_max_mv
        )

    def compensate(self, mask):
        """Rebuild `cell_mv` from `cell_raw_mv`, correcting the IR drop of sense lines shared with
        the bleed path (balance_sense_mohm R per line; 0 = separate lines, nothing to do).

        `mask` (bit i of byte i // 8 = cell i) must be the bleed mask that was on while the values
        were taken: the one commanded in the previous cycle. A bleeding cell's current
        Ib_i = V_i / Rb (balance_bleed_mohm; V = true terminal voltage) flows through both of its
        lines, so it reads 2 R Ib_i low and each neighbour reads R Ib_i high:
        m_i = V_i - 2 R Ib_i + R Ib_(i-1) + R Ib_(i+1). Solved for V_i with the cell's own term
        exact, V_i = m_i + R (2 b_i m_i - b_(i-1) V_(i-1) - b_(i+1) V_(i+1)) / (Rb - 2 R b_i)
        (b = 1 where bleeding), the only unknowns left are the neighbours' V; a first pass takes
        them as read, the second from the first pass. Residual below 1 mV for R / Rb up to 1/20
        (plus rounding). Integers (mV, milliohm); config keeps 4 R <= Rb and R <= 1000, so every
        product stays below 2**30. O(cells), no allocation.
        """
        r = self._cfg.balance_sense_mohm
        if not r:
            return
        raw = self.cell_raw_mv
        out = self.cell_mv
        n = len(raw)
        on = 0
        for byte in mask:
            on |= byte
        if not on:
            if self._biased:
                for i in range(n):
                    out[i] = raw[i]
                self._biased = False
            return
        self._biased = True
        d_off = self._cfg.balance_bleed_mohm  # divisor for a cell not bleeding
        d_on = d_off - 2 * r  # and for a bleeding one
        # Sliding window around cell i: b and m (raw) for i - 1 (p), i (0), i + 1 (1), i + 2 (2);
        # c = first-pass value of i - 1 (cp) and i + 1 (c1). Cells outside the pack have b = 0.
        bp = 0
        mp = 0
        cp = 0
        b0 = mask[0] & 1
        m0 = raw[0]
        b1 = 0
        m1 = 0
        if n > 1:
            b1 = (mask[0] >> 1) & 1
            m1 = raw[1]
        for i in range(n):
            j = i + 2
            b2 = 0
            m2 = 0
            if j < n:
                b2 = (mask[j >> 3] >> (j & 7)) & 1
                m2 = raw[j]
            d = d_on if b1 else d_off
            c1 = m1 + (r * (2 * b1 * m1 - b0 * m0 - b2 * m2) + (d >> 1)) // d
            d = d_on if b0 else d_off
            v = m0 + (r * (2 * b0 * m0 - bp * cp - b1 * c1) + (d >> 1)) // d
            out[i] = _clamp(v, 0, 0xFFFF)
            if b0:  # first-pass value of cell i, the next cell's left neighbour
                cp = m0 + (r * (2 * m0 - bp * mp - b1 * m1) + (d >> 1)) // d
            bp = b0
            mp = m0
            b0 = b1
            m0 = m1
            b1 = b2
            m1 = m2

    def update_stats(self):
        r = self._stats
        _scan(self.cell_mv, r, 0)
        self.vmin_mv = r[0]
        self.vmin_cell = r[1] + 1
        self.vmax_mv = r[2]
        self.vmax_cell = r[3] + 1
        self.cell_sum_mv = r[4]
        self.vavg_mv = r[5]
        _scan(self.temp_dc, r, 1)
        self.tmin_dc = r[0]
        self.tmin_sensor = r[1] + 1
        self.tmax_dc = r[2]
        self.tmax_sensor = r[3] + 1
        self.tavg_dc = r[5]
