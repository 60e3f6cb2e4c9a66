"""State of charge (SOC), its error bound, and state of health (SOH) of the pack and of every cell.

Propagation is exact integer coulomb counting: one shared counter (net discharged charge in mAs
plus a remainder in mA*ms; no float, so no drift on single-precision boards) and one start SOC per
cell (from each cell's OCV) give every cell's SOC in O(1). Counting stops at the ends: the string
cannot take charge once its fullest cell is full, nor deliver once its emptiest cell is empty.

Correction is an extended Kalman filter (EKF) on the average cell of the 2RC equivalent circuit
of the cell profile (firmware/profile.py: OCV, hysteresis, R0, R1/tau1, R2/tau2 over SOC and
temperature). State: [SOC correction, v_rc1, v_rc2, hysteresis h, current-sensor offset, OCV
table error], measured by the mean cell voltage, with the model's error in the measurement noise
(knees, resistance as coloured noise) and a robust gate (docs/estimation.md, "Model error").
The SOC correction the filter finds moves into an integer charge correction `_corr` at most
est_rate_soc_s per second, so the reported SOC never jumps; SOC stays in 0..100 %. `soc_bound`
(0.01 %) = est_bound_floor + |pending correction| + 3 sigma of the filter.
The filter works in floats: covariances, gains and the pending correction are bounded quantities
that are re-derived every cycle, unlike the charge, which lives in the integer counter.

Per cell, a fixed-gain scalar filter moves each cell's SOC offset from the mean toward what its
voltage deviation from the mean cell voltage says (where OCV is steep and |I| <= est_cell_max_ma),
16 cells per cycle. After a rest of balance_rest_ms where OCV is steep, the pack SOC is
re-anchored from OCV (OCV wins) and two such anchors est_soh_span apart give a capacity estimate
(SOH capacity) from the exactly counted charge between them. Current steps of est_step_ma or more
measure R0 (dV/dI of the mean cell) against the profile's (SOH resistance). docs/estimation.md.

For balancing, every cell also carries its own charge `cell_mas[i]` (mAs, relative to the shared
counter: the cell holds cell_mas[i] - discharged_mas). It starts from the cell's OCV, loses what
its bleed resistor removes (`bleed`) and is re-anchored from OCV (`anchor`) when the balancer
says the pack has rested (balancing.py owns when). OCV tells SOC only where the curve is steep
(not on LFP's plateau): a cell is anchored only on a 5 % table step rising at least
balance_anchor_rise_mv, and `known_count` counts the cells anchored that way at least once (the
start counts when at rest).

`save_state`/`restore_state` serialise what must survive a reset (persistence owns the storage).

Units: SOC 0.01 % (0..10000), charge mAs, SOH 0.01 % (soh_halfpct 0.5 % for BMS_Pack), current mA.
"""

import struct
from array import array
from math import exp, sqrt

from .compat import const

_SOC_FULL = const(10000)
_SOC_STEP = const(500)  # OCV table pitch: 5 % in 0.01 %
_CELLS_PER_CYCLE = const(16)
_STATE_FMT = "<HHHhiHBHBI"  # magic, SOC, bound, h, offset, SOH cap + conf, SOH res + conf, mAh
_STATE_HEAD = const(22)
_MAGIC = const(0xCE01)
_N = const(6)  # filter states
_RES_WEIGHT = const(16)  # SOH resistance: running mean over the first steps, then 1/16 per step


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


def _clampf(v, lo, hi):
    return lo if v < lo else hi if v > hi else v


class SocEstimator:
    """Counting plus EKF SOC estimator with per-cell SOC and SOH; see the module docstring."""

    def __init__(self, cfg):
        self._cfg = cfg
        self._p = cfg.profile
        self._table = cfg.ocv_mv
        self._mas_per_pct = cfg.capacity_mah * 36  # 1 % of capacity in mAs
        n = cfg.cell_count
        self._soc0 = array("H", [0] * n)
        self.cell_mas = array("l", [0] * n)  # per-cell charge, see the module docstring
        self._bleed_rem = array("H", [0] * n)  # mA*ms bled not yet carried into cell_mas
        self._known = bytearray(n)
        self.known_count = 0
        self.rest_ms = 0  # how long |I| stayed at or below rest_current_ma, capped
        self._pack_anchored = False
        self._soc0_mean = 0
        self._soc0_min = 0
        self._soc0_max = 0
        self._q_min = 0
        self._q_max = 0
        self._rem = 0  # mA*ms not yet carried into discharged_mas, 0..999
        self._delta = 0  # SOC drop since the start, 0.01 %
        self._corr = 0  # filter corrections moved into the charge so far, mAs (+ = more charge)
        # net charge taken from storage since the start, mAs (negative: stored; charging stores
        # the charge times the profile's coulombic efficiency)
        self.discharged_mas = 0
        self.throughput_mah = 0  # charge moved either way since the start (or the restore)
        eta = cfg.profile.eta_ppm
        # mA*ms charged per mAs lost to coulombic efficiency; 0: lossless
        self._eta_div = 1000 * (1000000 // (1000000 - eta)) if eta < 1000000 else 0
        self._eta_acc = 0
        self._thr_rem = 0  # mA*ms not yet carried into throughput_mah
        self.initialised = False
        self._restored = False
        self.soc = 0
        self.soc_min = 0
        self.soc_max = 0
        self.soc_bound = _SOC_FULL
        self.soh_cap = _SOC_FULL  # capacity / rated, 0.01 %
        self.soh_cap_conf = 0  # %
        self.soh_res = _SOC_FULL  # R0 / the profile's R0, 0.01 %
        self.soh_res_conf = 0  # %
        self.soh_halfpct = 200
        self.offset_ma = 0  # learned current-sensor offset (measured - true), mA
        self._res_n = 0
        self._prev_ma = 0
        self._prev_mv = 0
        self._anchor_soc = -1  # last OCV anchor for the capacity estimate, 0.01 %; -1: none
        self._anchor_q = 0
        self._anchor_sd = 0.0
        self._next_cell = 0
        # SOC correction (fraction), v_rc1, v_rc2 (V), h, offset (A), OCV table error (V)
        self._x = array("f", [0.0] * _N)
        self._pp = array("f", [0.0] * (_N * _N))  # covariance, row-major
        self._w = array("f", [0.0] * (3 * _N))  # scratch: u, c, P H'

    def update(self, meas, dt_ms, now_ms):
        """Advance by `dt_ms`; call only with fresh, plausible measurements."""
        if self.count(meas, dt_ms):
            self.correct(meas, dt_ms)

    def count(self, meas, dt_ms):
        """The integer part of `update`: rest time, start, coulomb counting (allocates nothing).
        True when the estimator was already running, so `correct` may follow."""
        c = self._cfg
        i = meas.current_ma
        if -c.rest_current_ma <= i <= c.rest_current_ma:
            if self.rest_ms < c.balance_rest_ms:
                self.rest_ms += dt_ms
        else:
            self.rest_ms = 0
            self._pack_anchored = False
        if not self.initialised:
            self._start(meas)
            if self.rest_ms:
                self.anchor(meas.cell_mv)
            return False
        p = i * dt_ms
        if p < 0 and self._eta_div:
            # Coulombic efficiency: 1 mAs of every _eta_div mA*ms charged is not stored.
            e = self._eta_acc - p
            p += e // self._eta_div * 1000
            self._eta_acc = e % self._eta_div
        p += self._rem
        q = self.discharged_mas + p // 1000
        self._rem = p % 1000
        if q > self._q_max + self._corr:
            q = self._q_max + self._corr
            self._rem = 0
        elif q < self._q_min + self._corr:
            q = self._q_min + self._corr
            self._rem = 0
        self.discharged_mas = q
        self._set_delta(_mas_to_soc(q - self._corr, self._mas_per_pct))
        t = (i if i >= 0 else -i) * dt_ms + self._thr_rem
        self.throughput_mah += t // 3600000
        self._thr_rem = t % 3600000
        return True

    def correct(self, meas, dt_ms):
        """The model part of `update`: the filter, SOH and the per-cell SOC. Its floats are
        transient (boxed on MicroPython): garbage every cycle, nothing that stays."""
        c = self._cfg
        i = meas.current_ma
        self._filter(meas, dt_ms)
        self._resistance(meas)
        if i <= c.est_cell_max_ma and -i <= c.est_cell_max_ma:
            self._cells(meas)
        self._prev_ma = i
        self._prev_mv = meas.vavg_mv

    # ---- pack filter -------------------------------------------------------------------------
    def _filter(self, meas, dt_ms):
        c = self._cfg
        pr = self._p
        x = self._x
        pp = self._pp
        w = self._w
        pr.locate(_clamp_soc(self.soc + int(x[0] * 10000)), meas.tavg_dc)
        r0 = pr.at(pr.r0) * self.soh_res * 1e-9  # 10 micro-ohm -> ohm, times SOH resistance
        r1 = pr.at(pr.r1) * 1e-5
        r2 = pr.at(pr.r2) * 1e-5
        dt = dt_ms * 0.001
        cap = self._mas_per_pct * 0.1  # capacity, As
        a1 = exp(-dt / (pr.at(pr.tau1) * 0.1))
        a2 = exp(-dt / (pr.at(pr.tau2) * 0.1))
        ie = meas.current_ma * 0.001 - x[4]
        ah = exp(-pr.gamma_milli * 1e-3 * (ie if ie > 0 else -ie) * dt / 3600)
        # Predict. F = diag(d) + u e4': only the offset (state 4) feeds into other states.
        # At an end of the counter no charge is counted (count() clamps it), so neither does the
        # offset move SOC there: without that coupling a cell resting full above the table's
        # last point would push the offset to its limit, as if it explained a SOC over 100 %.
        q = self.discharged_mas - self._corr
        u = 0.0 if q >= self._q_max or q <= self._q_min else dt / cap
        x[0] += x[4] * u
        x[1] = a1 * x[1] + (1 - a1) * r1 * ie
        x[2] = a2 * x[2] + (1 - a2) * r2 * ie
        x[3] = ah * x[3] - (1 - ah) * (1 if ie > 0 else -1 if ie < 0 else 0)
        d = (1.0, a1, a2, ah, 1.0, 1.0)
        w[0] = u
        w[1] = -(1 - a1) * r1
        w[2] = -(1 - a2) * r2
        w[3] = w[4] = w[5] = 0.0
        p44 = pp[4 * _N + 4]
        for k in range(_N):
            w[_N + k] = d[k] * pp[k * _N + 4]
        for r in range(_N):  # symmetric: the upper triangle, mirrored (fewer boxed floats)
            for k in range(r, _N):
                v = d[r] * d[k] * pp[r * _N + k] + w[_N + r] * w[k] + w[r] * w[_N + k]
                pp[r * _N + k] = pp[k * _N + r] = v + w[r] * w[k] * p44
        # SOC: current-sensor noise, plus model error (capacity, efficiency) growing with the
        # charge moved: variance (est_model_pct / 100)**2 per full capacity moved.
        qs = c.est_sigma_i_ma * 0.001 * dt / cap
        pp[0] += qs * qs + c.est_model_pct * c.est_model_pct * 1e-4 * abs(ie) * dt / cap
        pp[3 * _N + 3] += 1e-6 * dt
        qb = c.est_offset_max_ma * 1e-6
        pp[4 * _N + 4] += qb * qb * dt
        # The OCV table's error is a bias that changes along the curve: independent from one
        # table point to the next, so its variance est_ocv_mv**2 renews over one table step of
        # charge moved (a random walk in charge, not time: at rest it stays what it was).
        qo = c.est_ocv_mv * 1e-3
        step = cap * 1e-4 * (pr.soc[1] - pr.soc[0])  # charge of one table step, As
        pp[_N * _N - 1] += qo * qo * abs(ie) * dt / step
        # Update with the mean cell voltage.
        hy = pr.at(pr.hysteresis) * 1e-4
        h = (pr.slope() * 0.01, -1.0, -1.0, hy, r0, 1.0)
        y = meas.vavg_mv * 0.001 - (pr.at(pr.ocv) * 1e-4 + x[5] + hy * x[3] - x[1] - x[2] - r0 * ie)
        # Model error grows with the current: a resistance known to est_sigma_r_pct. That error
        # is the table's at this SOC (the HPPC's sustained 1C steps miss by a bias that lasts the
        # whole step, docs/estimation.md): it persists for the slow RC pair's time constant, or
        # longer, while the charge moved stays inside one table step. As white noise its variance
        # is that time / dt times larger, else the filter would count it that many times.
        a = abs(meas.current_ma) * 0.001
        s = c.est_sigma_r_pct * 1e-2 * (r0 + r1 + r2) * a
        s *= sqrt(max(pr.at(pr.tau2) * 0.1, step / max(a, 1e-3)) / max(dt, 0.001))
        # At the OCV knees the table's straight lines between points miss the curve: an error
        # growing with how sharply the slope changes there (est_bend_pct, docs/estimation.md).
        b = c.est_bend_pct * 1e-6 * pr.bend()
        s = s * s + b * b + c.est_sigma_mv * c.est_sigma_mv * 1e-6
        p00 = pp[0]
        hf = self._flattest(pr, p00) * 0.01
        for r in range(_N):
            v = 0.0
            for k in range(_N):
                v += pp[r * _N + k] * h[k]
            w[2 * _N + r] = v
            s += h[r] * v
        # An innovation beyond est_gate_x10 / 10 sigma is model error more likely than news
        # (the cell left the model's validity): weigh it as if its noise were that large, so one
        # step moves the state by at most the gate's worth (Huber's robust update), and learn no
        # confidence from it: a model that does not explain the cell cannot make the filter
        # surer (the bound stays wide while it lasts).
        sv = s
        g = c.est_gate_x10 * 0.1
        gated = y * y > g * g * s
        if gated:
            s = y * y / (g * g)
        s = 1 / s
        for r in range(_N):
            g = w[2 * _N + r] * s  # Kalman gain
            x[r] += g * y
            if not gated:
                for k in range(r, _N):
                    pp[r * _N + k] = pp[k * _N + r] = pp[r * _N + k] - g * w[2 * _N + k]
        # Floor on the SOC variance: one linearised update far from the truth on a steep, curved
        # OCV would otherwise leave the filter confident at the wrong SOC (EKF overconfidence).
        # And one update may shrink it by a fifth at most: far from the truth, the linearisation
        # is not worth more than that, and the bound must still cover the error meanwhile.
        floor = max(c.est_sigma_min * c.est_sigma_min * 1e-8, 0.8 * p00)
        # Nor below what the update would leave with the flattest slope within one sigma (the
        # slope at the estimate is not the slope between the estimate and the truth): a SOC at
        # LFP's steep 75-80 % next to the plateau, the truth possibly on it, is not known.
        # (P h' and the innovation variance with that slope follow from the local ones.)
        hf -= h[0]
        v = w[2 * _N] + hf * p00
        sf = sv + hf * (2 * w[2 * _N] + hf * p00)
        if sf > 0:
            floor = max(floor, p00 - v * v / sf)
        if pp[0] < floor:
            pp[0] = floor
        x[3] = _clampf(x[3], -1.0, 1.0)
        om = c.est_offset_max_ma * 0.001
        x[4] = _clampf(x[4], -om, om)
        # The table error is a few est_ocv_mv, not more: what exceeds 3 sigma is SOC (a wrong
        # start) or another state's error, which must not hide in this one.
        om = c.est_ocv_mv * 0.003
        x[5] = _clampf(x[5], -om, om)
        self.offset_ma = int(x[4] * 1000)
        # Move the correction into the integer charge at the rate limit, never past the ends.
        per = self._mas_per_pct * 100.0  # mAs per unit SOC
        lim = c.est_rate_soc_s * self._mas_per_pct * dt_ms * 1e-5
        mv = int(_clampf(x[0] * per, -lim, lim))
        q = self.discharged_mas
        corr = self._corr + mv
        corr = max(q - self._q_max, min(q - self._q_min, corr))
        x[0] -= (corr - self._corr) / per
        self._corr = corr
        self._set_delta(_mas_to_soc(q - corr, self._mas_per_pct))
        lo = -self.soc / 10000
        x[0] = _clampf(x[0], lo, lo + 1.0)
        if self.rest_ms >= c.balance_rest_ms and not self._pack_anchored:
            self._pack_anchored = True
            self._anchor_pack(meas)
        b = (x[0] if x[0] > 0 else -x[0]) + 3 * sqrt(pp[0] if pp[0] > 0 else 0.0)
        self.soc_bound = min(_SOC_FULL, c.est_bound_floor + int(b * 10000))

    def _flattest(self, pr, p00):
        # The flattest OCV table segment within one sigma of the estimate (0.1 mV per %).
        s = self.soc + int(self._x[0] * 10000)
        d = int(sqrt(p00 if p00 > 0 else 0.0) * 10000)
        soc = pr.soc
        m = pr.slope()
        for k in range(len(soc) - 1):
            if soc[k + 1] > s - d and soc[k] < s + d:
                m = min(m, pr.slope(k))
        return m

    def _anchor_pack(self, meas):
        # Rested: where OCV is steep it wins over the filter, and pairs of such anchors far apart
        # measure the capacity from the exactly counted charge between them.
        pr = self._p
        x = self._x
        v = meas.vavg_mv * 10 - int(pr.at(pr.hysteresis) * x[3])
        ocv = pr.soc_at(v, meas.tavg_dc)
        # What the voltage says within its error est_init_mv, on the whole table, not only on
        # the segment of the estimate: a rest voltage a mV above LFP's plateau lands on the knee
        # past its end (85 % read as 94 %), yet 10 mV less is anywhere on the plateau. The
        # steepness rule (a 5 % step rising balance_anchor_rise_mv) over that whole range; its
        # half-width is the anchor's sigma.
        e = self._cfg.est_init_mv * 10
        span = pr.soc_at(v + e, meas.tavg_dc) - pr.soc_at(v - e, meas.tavg_dc)
        if span * self._cfg.balance_anchor_rise_mv > e * 100:
            return
        sd = max(span, 1) * 0.00005  # sigma in SOC fraction
        x[0] = (ocv - self.soc) / 10000
        x[1] = x[2] = x[5] = 0.0
        self._reset_cov(sd)
        q = self.discharged_mas
        span = ocv - self._anchor_soc
        if self._anchor_soc >= 0 and abs(span) >= self._cfg.est_soh_span:
            new = (self._anchor_q - q) * 1e6 / (span * self._mas_per_pct)
            rel = sqrt(sd * sd + self._anchor_sd * self._anchor_sd) * 10000 / abs(span)
            conf = max(0, min(100, int(100 - 1000 * rel)))
            if conf and 0 < new < 20000:
                old = self.soh_cap_conf
                self.soh_cap = int((self.soh_cap * old + new * conf) / (old + conf))
                self.soh_cap_conf = max(old, conf)
                self.soh_halfpct = min(255, self.soh_cap // 50)
        self._anchor_soc = ocv
        self._anchor_q = q
        self._anchor_sd = sd

    def _reset_cov(self, sd):
        pp = self._pp
        for k in range(_N * _N):
            pp[k] = 0.0
        pp[0] = sd * sd
        pp[_N + 1] = pp[2 * _N + 2] = 1e-6
        pp[3 * _N + 3] = 1.0 if self._p.gamma_milli else 0.0
        ob = self._cfg.est_offset_max_ma * 0.0005
        pp[4 * _N + 4] = ob * ob
        ob = self._cfg.est_ocv_mv * 1e-3
        pp[_N * _N - 1] = ob * ob

    def _resistance(self, meas):
        # A current step between two cycles: dV/dI of the mean cell is R0 (the RC pairs barely
        # move in one cycle).
        di = meas.current_ma - self._prev_ma
        if -self._cfg.est_step_ma < di < self._cfg.est_step_ma:
            return
        pr = self._p
        ratio = (self._prev_mv - meas.vavg_mv) * 1e9 / (di * pr.at(pr.r0))
        if not 0 < ratio < 40000:
            return
        n = min(self._res_n + 1, _RES_WEIGHT)
        self._res_n = n
        self.soh_res = int(self.soh_res + (ratio - self.soh_res) / n)
        self.soh_res_conf = n * 100 // _RES_WEIGHT

    # ---- per cell ----------------------------------------------------------------------------
    def _cells(self, meas):
        slope = self._p.slope()  # located by _filter at the pack SOC, 0.1 mV per %
        if slope <= 0 or slope * 5 < 10 * self._cfg.balance_anchor_rise_mv:
            return
        soc0 = self._soc0
        cells = meas.cell_mv
        vavg = meas.vavg_mv
        mean = self._soc0_mean
        shift = self._cfg.est_cell_shift
        n = len(soc0)
        i = self._next_cell
        for _ in range(min(n, _CELLS_PER_CYCLE)):
            e = (cells[i] - vavg) * 1000 // slope - (soc0[i] - mean)
            soc0[i] = _clamp_soc(soc0[i] + (e >> shift if e >= 0 else -((-e) >> shift)))
            i += 1
            if i == n:
                i = 0
                self._stats(False)
        self._next_cell = i

    def _stats(self, mean=True):
        # Lowest and highest start SOC, the counter's ends that follow, and (at the start) the
        # mean. The per-cell filter does not move the mean: the pack SOC is the pack filter's.
        soc0 = self._soc0
        total = 0
        lo = _SOC_FULL
        hi = 0
        for s in soc0:
            total += s
            if s < lo:
                lo = s
            if s > hi:
                hi = s
        if mean:
            self._soc0_mean = total // len(soc0)
        self._soc0_min = lo
        self._soc0_max = hi
        self._q_max = _soc_to_mas(lo, self._mas_per_pct)
        self._q_min = -_soc_to_mas(_SOC_FULL - hi, self._mas_per_pct)
        self._set_delta(self._delta)

    def _start(self, meas):
        cells = meas.cell_mv
        table = self._table
        soc0 = self._soc0
        pr = self._p
        pr.locate(5000, meas.tavg_dc)
        drop = meas.current_ma * pr.at(pr.r0) // 100000  # I * R0 (mA * 10 micro-ohm -> mV)
        if not self._restored:
            for i in range(len(soc0)):
                soc0[i] = ocv_to_soc(cells[i] + drop, table)
        self.discharged_mas = 0
        self._rem = 0
        self._corr = 0
        self._delta = 0
        self._stats()
        cell_mas = self.cell_mas
        for i in range(len(soc0)):
            cell_mas[i] = _soc_to_mas(soc0[i], self._mas_per_pct)
        pr.locate(self.soc, meas.tavg_dc)
        if self._restored:
            sd = max(0, self.soc_bound - self._cfg.est_bound_floor) / 30000
        else:
            i = meas.current_ma
            mv = self._cfg.est_init_mv + (i if i >= 0 else -i) * pr.at(pr.r0) * 1e-5
            sd = min(0.3, max(0.005, mv * 0.1 / max(1, pr.slope())))
        x = self._x
        x[0] = x[1] = x[2] = x[5] = 0.0
        self._reset_cov(sd)
        self._prev_ma = meas.current_ma
        self._prev_mv = meas.vavg_mv
        self.soc_bound = min(_SOC_FULL, self._cfg.est_bound_floor + int(30000 * sd))
        self.initialised = True

    def _set_delta(self, d):
        self._delta = d
        s = _clamp_soc(self._soc0_mean - d)
        self.soc = s
        self.soc_min = min(s, _clamp_soc(self._soc0_min - d))
        self.soc_max = max(s, _clamp_soc(self._soc0_max - d))

    def cell_soc(self, i):
        """SOC (0.01 %) of cell `i` (0-based)."""
        return _clamp_soc(self._soc0[i] - self._delta)

    __getitem__ = cell_soc  # est[i]: the cells' SOCs as a sequence (comm sends them)

    def __len__(self):
        return len(self._soc0)

    # ---- persistence hooks -------------------------------------------------------------------
    @property
    def state_size(self):
        """Bytes `save_state` writes (constant for a configuration)."""
        return _STATE_HEAD + 2 * len(self._soc0)

    def save_state(self, buf):
        """Write SOC, bound, hysteresis, offset, SOH, throughput and every cell's SOC to `buf`."""
        struct.pack_into(
            _STATE_FMT,
            buf,
            0,
            _MAGIC,
            self.soc,
            self.soc_bound,
            int(self._x[3] * 10000),
            self.offset_ma,
            self.soh_cap,
            self.soh_cap_conf,
            self.soh_res,
            self.soh_res_conf,
            self.throughput_mah,
        )
        o = _STATE_HEAD
        for i in range(len(self._soc0)):
            s = self.cell_soc(i)
            buf[o] = s & 255
            buf[o + 1] = s >> 8
            o += 2

    def restore_state(self, buf):
        """Start from a saved state instead of OCV (call before the first update). False, and
        nothing changes, when the content is implausible or the estimator already started."""
        n = len(self._soc0)
        if self.initialised or len(buf) < _STATE_HEAD + 2 * n:
            return False
        v = struct.unpack_from(_STATE_FMT, buf, 0)
        om = self._cfg.est_offset_max_ma
        if (
            v[0] != _MAGIC
            or v[1] > _SOC_FULL
            or v[2] > _SOC_FULL
            or not -10000 <= v[3] <= 10000
            or not -om <= v[4] <= om
            or not 0 < v[5] < 20000
            or v[6] > 100
            or not 0 < v[7] < 40000
            or v[8] > 100
        ):
            return False
        for i in range(n):
            if buf[_STATE_HEAD + 2 * i] | buf[_STATE_HEAD + 2 * i + 1] << 8 > _SOC_FULL:
                return False
        for i in range(n):
            self._soc0[i] = buf[_STATE_HEAD + 2 * i] | buf[_STATE_HEAD + 2 * i + 1] << 8
        self.soc_bound = v[2]
        self._x[3] = v[3] / 10000
        self._x[4] = v[4] / 1000
        self.offset_ma = v[4]
        self.soh_cap, self.soh_cap_conf, self.soh_res, self.soh_res_conf = v[5], v[6], v[7], v[8]
        self.soh_halfpct = min(255, self.soh_cap // 50)
        self._res_n = v[8] * _RES_WEIGHT // 100
        self.throughput_mah = v[9]
        self._restored = True
        return True

    # ---- balancing ---------------------------------------------------------------------------
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
        q = _soc_to_mas(ocv_to_soc(mv, table), self._mas_per_pct) + self.discharged_mas
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
