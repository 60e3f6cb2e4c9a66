"""State of charge (SOC) of the pack and of every cell: counting, correction, per-cell SOC.

Writes SocData (data.py) and the model point the power limits read; its parts live beside it:
ekf.py the pack filter, soh.py the state of health, soc_record.py the persistent record,
cellcharge.py the balancer's per-cell charge (started from here), ocv.py the conversions.

Propagation is exact integer coulomb counting: one shared counter (net discharged charge in mAs
plus a remainder in mA*ms; no float, so no drift on single-precision boards) and one start SOC per
cell (from each cell's OCV) give every cell's SOC in O(1). Counting stops at the ends: the string
cannot take charge once its fullest cell is full, nor deliver once its emptiest cell is empty.

Correction: the pack filter (ekf.py) estimates an SOC correction from the mean cell voltage; it
moves into an integer charge correction `_corr` at most est_rate_soc_s per second, so the reported
SOC never jumps; SOC stays in 0..100 %. `soc_bound` (0.01 %) = est_bound_floor + |pending
correction| + 2 sigma of the filter (a 95 % bound).

Per cell, a fixed-gain scalar filter moves each cell's SOC offset from the mean toward what its
voltage deviation from the mean cell voltage says (where OCV is steep and |I| <= est_cell_max_ma),
16 cells per cycle. After a rest of balance_rest_ms where OCV is steep, the pack SOC is
re-anchored from OCV (OCV wins), which is also where soh.py measures capacity. docs/estimation.md.

`reanchor(meas)` anchors the pack SOC from OCV now, as a rest does once (a tester's routine,
RoutineData reanchor_run, answered in SocData `reanchor`): refused unless the pack has rested
balance_rest_ms, failed where OCV is too flat to say.

`save_state`/`restore_state` serialise what must survive a reset (persistence owns the storage).

Units: SOC 0.01 % (0..10000), charge mAs, SOH 0.01 % (soh_halfpct 0.5 % for BMS_Pack), current mA.
"""

from math import sqrt

from . import soc_record
from .compat import const
from .data import TEST_FAILED, TEST_PASSED, TEST_REFUSED, Data
from .ekf import PackFilter, clampf
from .ocv import clamp_soc, mas_to_soc, ocv_to_soc, soc_to_mas
from .soh import Soh

_SOC_FULL = const(10000)
_CELLS_PER_CYCLE = const(16)
_FULL_SD = 0.005  # SOC sigma of a recognised full charge (fraction): 0.5 %
# The bound's sigmas: two, the 95 % interval, as the bound promises (held at least 95 % of the
# time); three would promise 99.7 % and publish 1.5x the width.
_BOUND_SIGMAS = const(2)


class SocEstimator:
    """Counting plus EKF SOC estimator with per-cell SOC and SOH; see the module docstring.
    Writes `data.soc` (SocData, also `out`) and `data.model` (ModelPoint)."""

    def __init__(self, cfg, data=None):
        if data is None:
            data = Data(cfg)
        self._cfg = cfg
        self._p = cfg.profile
        self._table = cfg.ocv_mv
        self._mas_per_pct = cfg.capacity_mah * 36  # 1 % of capacity in mAs
        self.out = out = data.soc
        self._req = data.routines
        self._model = data.model
        self._charge = data.charge
        self._filter = PackFilter(cfg)
        self._soh = Soh(cfg, out)
        self.state_size = soc_record.size(cfg.cell_count)  # bytes `save_state` writes
        self._pack_anchored = False
        self._soc0_mean = 0
        self._soc0_min = 0
        self._soc0_max = 0
        self._q_min = 0
        self._q_max = 0
        self._rem = 0  # mA*ms not yet carried into discharged_mas, 0..999
        self._corr = 0  # filter corrections moved into the charge so far, mAs (+ = more charge)
        eta = cfg.profile.eta_ppm
        # mA*ms charged per mAs lost to coulombic efficiency; 0: lossless
        self._eta_div = 1000 * (1000000 // (1000000 - eta)) if eta < 1000000 else 0
        self._eta_acc = 0
        self._thr_rem = 0  # mA*ms not yet carried into throughput_mah
        self._restored = False
        self._next_cell = 0
        self._cv_ms = 0  # time in the end-of-CV condition

    def update(self, meas, dt_ms, now_ms):
        """Advance by `dt_ms`; call only with fresh, plausible measurements."""
        if self.count(meas, dt_ms):
            self.correct(meas, dt_ms)
        self._publish_model()
        run = self._req.reanchor_run
        if run != self.out.reanchor_run:
            self.out.reanchor_run = run
            if run:
                self.out.reanchor = self.reanchor(meas)

    def reanchor(self, meas):
        """Anchor the pack SOC from OCV now (fresh measurements only); TEST_PASSED, TEST_REFUSED
        unless at rest for balance_rest_ms, TEST_FAILED where OCV is too flat to say."""
        out = self.out
        if not out.initialised or out.rest_ms < self._cfg.balance_rest_ms:
            return TEST_REFUSED
        self._pack_anchored = True
        return TEST_PASSED if self._anchor_pack(meas) else TEST_FAILED

    def count(self, meas, dt_ms):
        """The integer part of `update`: rest time, start, coulomb counting (allocates nothing).
        True when the estimator was already running, so `correct` may follow."""
        c = self._cfg
        out = self.out
        i = meas.current_ma
        if -c.rest_current_ma <= i <= c.rest_current_ma:
            if out.rest_ms < c.balance_rest_ms:
                out.rest_ms += dt_ms
        else:
            out.rest_ms = 0
            self._pack_anchored = False
        if not out.initialised:
            self._start(meas)
            self._charge.start(meas.cell_mv, out.rest_ms)
            return False
        p = i * dt_ms
        if p < 0 and self._eta_div:
            # Coulombic efficiency: 1 mAs of every _eta_div mA*ms charged is not stored.
            e = self._eta_acc - p
            p += e // self._eta_div * 1000
            self._eta_acc = e % self._eta_div
        p += self._rem
        q = out.discharged_mas + p // 1000
        self._rem = p % 1000
        if q > self._q_max + self._corr:
            q = self._q_max + self._corr
            self._rem = 0
        elif q < self._q_min + self._corr:
            q = self._q_min + self._corr
            self._rem = 0
        out.discharged_mas = q
        self._set_delta(mas_to_soc(q - self._corr, self._mas_per_pct))
        t = (i if i >= 0 else -i) * dt_ms + self._thr_rem
        out.throughput_mah += t // 3600000
        self._thr_rem = t % 3600000
        return True

    def correct(self, meas, dt_ms):
        """The model part of `update`: the filter, SOH and the per-cell SOC. Its floats are
        transient (boxed on MicroPython): garbage every cycle, nothing that stays."""
        c = self._cfg
        i = meas.current_ma
        self._pack(meas, dt_ms)
        self._full_charge(meas, dt_ms)
        self._soh.update(meas, self._p)
        if i <= c.est_cell_max_ma and -i <= c.est_cell_max_ma:
            self._cells(meas)

    def _publish_model(self):
        # The cell model where the filter located it this cycle, for the power limits.
        pr = self._p
        m = self._model
        x = self._filter.x
        m.r0 = pr.at(pr.r0)
        m.r1 = pr.at(pr.r1)
        m.tau1 = pr.at(pr.tau1)
        m.r2 = pr.at(pr.r2)
        m.tau2 = pr.at(pr.tau2)
        m.slope = pr.slope()
        m.v1_uv = int(x[1] * 1000000)
        m.v2_uv = int(x[2] * 1000000)
        m.valid = True

    # ---- pack filter -------------------------------------------------------------------------
    def _pack(self, meas, dt_ms):
        c = self._cfg
        out = self.out
        f = self._filter
        q = out.discharged_mas
        qc = q - self._corr
        f.step(meas, dt_ms, out.soc, out.soh_res, qc >= self._q_max or qc <= self._q_min)
        x = f.x
        pp = f.pp
        out.offset_ma = int(x[4] * 1000)
        # Move the correction into the integer charge at the rate limit, never past the ends.
        per = self._mas_per_pct * 100.0  # mAs per unit SOC
        lim = c.est_rate_soc_s * self._mas_per_pct * dt_ms * 1e-5
        mv = int(clampf(x[0] * per, -lim, lim))
        corr = self._corr + mv
        corr = max(q - self._q_max, min(q - self._q_min, corr))
        x[0] -= (corr - self._corr) / per
        self._corr = corr
        self._set_delta(mas_to_soc(q - corr, self._mas_per_pct))
        lo = -out.soc / 10000
        x[0] = clampf(x[0], lo, lo + 1.0)
        if out.rest_ms >= c.balance_rest_ms and not self._pack_anchored:
            self._pack_anchored = True
            self._anchor_pack(meas)
        b = (x[0] if x[0] > 0 else -x[0]) + _BOUND_SIGMAS * sqrt(pp[0] if pp[0] > 0 else 0.0)
        out.soc_bound = min(_SOC_FULL, c.est_bound_floor + int(b * 10000))

    def _full_charge(self, meas, dt_ms):
        # The end of a CV phase: charging at the taper current with the highest cell at the
        # charge voltage. Every peer sets 100 % there; so does this: the filter restarts at the
        # SOC of a full cell and the correction moves in at the rate limit (no jump).
        c = self._cfg
        i = meas.current_ma
        if -c.est_full_ma <= i < -c.rest_current_ma and (
            meas.vmax_mv >= c.cell_charge_max_mv - c.est_full_mv
        ):
            if self._cv_ms < c.est_full_ms:
                self._cv_ms += dt_ms
                if self._cv_ms >= c.est_full_ms:
                    f = self._filter
                    f.start(_FULL_SD)
                    f.x[0] = (_SOC_FULL - self.out.soc) / 10000
        else:
            self._cv_ms = 0

    def _anchor_pack(self, meas):
        # Rested: where OCV is steep it wins over the filter, and pairs of such anchors far apart
        # measure the capacity from the exactly counted charge between them (soh.py).
        pr = self._p
        f = self._filter
        v = meas.vavg_mv * 10 - int(pr.at(pr.hysteresis) * f.x[3])
        ocv = pr.soc_at(v, meas.tavg_dc)
        # What the voltage says within its error est_init_mv, on the whole table, not only on
        # the segment of the estimate: a rest voltage a mV above LFP's plateau lands on the knee
        # past its end (85 % read as 94 %), yet 10 mV less is anywhere on the plateau. The
        # steepness rule (a 5 % step rising balance_anchor_rise_mv) over that whole range; its
        # half-width is the anchor's sigma.
        e = self._cfg.est_init_mv * 10
        span = pr.soc_at(v + e, meas.tavg_dc) - pr.soc_at(v - e, meas.tavg_dc)
        if span * self._cfg.balance_anchor_rise_mv > e * 100:
            return False
        sd = max(span, 1) * 0.00005  # sigma in SOC fraction
        f.start(sd)
        f.x[0] = (ocv - self.out.soc) / 10000
        self._soh.capacity(ocv, self.out.discharged_mas, sd)
        return True

    # ---- per cell ----------------------------------------------------------------------------
    def _cells(self, meas):
        slope = self._p.slope()  # located by the filter at the pack SOC, 0.1 mV per %
        if slope <= 0 or slope * 5 < 10 * self._cfg.balance_anchor_rise_mv:
            return
        soc0 = self.out.soc0
        cells = meas.cell_mv
        vavg = meas.vavg_mv
        mean = self._soc0_mean
        shift = self._cfg.est_cell_shift
        n = len(soc0)
        i = self._next_cell
        for _ in range(min(n, _CELLS_PER_CYCLE)):
            e = (cells[i] - vavg) * 1000 // slope - (soc0[i] - mean)
            soc0[i] = clamp_soc(soc0[i] + (e >> shift if e >= 0 else -((-e) >> shift)))
            i += 1
            if i == n:
                i = 0
                self._stats(False)
        self._next_cell = i

    def _stats(self, mean=True):
        # Lowest and highest start SOC, the counter's ends that follow, and (at the start) the
        # mean. The per-cell filter does not move the mean: the pack SOC is the pack filter's.
        soc0 = self.out.soc0
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
        self._q_max = soc_to_mas(lo, self._mas_per_pct)
        self._q_min = -soc_to_mas(_SOC_FULL - hi, self._mas_per_pct)
        self._set_delta(self.out.delta)

    def _start(self, meas):
        out = self.out
        cells = meas.cell_mv
        table = self._table
        soc0 = out.soc0
        pr = self._p
        pr.locate(5000, meas.tavg_dc)
        drop = meas.current_ma * pr.at(pr.r0) // 100000  # I * R0 (mA * 10 micro-ohm -> mV)
        if not self._restored:
            for i in range(len(soc0)):
                soc0[i] = ocv_to_soc(cells[i] + drop, table)
        out.discharged_mas = 0
        self._rem = 0
        self._corr = 0
        out.delta = 0
        self._stats()
        pr.locate(out.soc, meas.tavg_dc)
        if self._restored:
            sd = max(0, out.soc_bound - self._cfg.est_bound_floor) / (_BOUND_SIGMAS * 10000)
        else:
            i = meas.current_ma
            mv = self._cfg.est_init_mv + (i if i >= 0 else -i) * pr.at(pr.r0) * 1e-5
            sd = min(0.3, max(0.005, mv * 0.1 / max(1, pr.slope())))
            # At rest at or above the table's full voltage: a full cell (the charger's CV end
            # just before the start), known as well as a recognised full charge.
            if -self._cfg.rest_current_ma <= i <= self._cfg.rest_current_ma and (
                meas.vmin_mv >= table[len(table) - 1]
            ):
                sd = _FULL_SD
        x = self._filter.x
        self._filter.start(sd, x[1], x[2])  # RC pairs at 0, or as restored
        self._soh.start(meas)
        out.soc_bound = min(_SOC_FULL, self._cfg.est_bound_floor + int(_BOUND_SIGMAS * 10000 * sd))
        out.initialised = True

    def _set_delta(self, d):
        out = self.out
        out.delta = d
        s = clamp_soc(self._soc0_mean - d)
        out.soc = s
        out.soc_min = min(s, clamp_soc(self._soc0_min - d))
        out.soc_max = max(s, clamp_soc(self._soc0_max - d))

    # ---- persistence hooks -------------------------------------------------------------------
    def save_state(self, buf):
        """Write SOC, bound, hysteresis, offset, SOH, throughput, every cell's SOC and the RC
        pairs' voltages to `buf`."""
        x = self._filter.x
        v1 = int(clampf(x[1], -2.0, 2.0) * 1000)
        v2 = int(clampf(x[2], -2.0, 2.0) * 1000)
        soc_record.save(buf, self.out, int(x[3] * 10000), v1, v2)

    def widen_bound(self, d):
        """The restored record may be older than the state at the power loss: the bound grows
        by `d` (0.01 %), the SOC the pack may have moved unrecorded. Before the first update."""
        out = self.out
        out.soc_bound = min(_SOC_FULL, out.soc_bound + d)

    def restore_state(self, buf):
        """Start from a saved state instead of OCV (call before the first update). False, and
        nothing changes, when the content is implausible or the estimator already started."""
        out = self.out
        n = len(out.soc0)
        if out.initialised:
            return False
        v = soc_record.load(buf, n, self._cfg.est_offset_max_ma)
        if v is None:
            return False
        for i in range(n):
            out.soc0[i] = soc_record.cell(buf, i)
        out.soc_bound = v[2]
        x = self._filter.x
        x[3] = v[3] / 10000
        x[4] = v[4] / 1000
        out.offset_ma = v[4]
        self._soh.restore(v[5], v[6], v[7], v[8])
        out.throughput_mah = v[9]
        x[1] = v[10] / 1000
        x[2] = v[11] / 1000
        self._restored = True
        return True
