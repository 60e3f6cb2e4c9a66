"""The pack filter: an extended Kalman filter (EKF) on the average cell of the 2RC model.

Owns the filter state and its covariance. State `x`: [SOC correction (fraction), v_rc1, v_rc2 (V),
hysteresis h, current-sensor offset (A), OCV table error (V)], measured by the mean cell voltage,
with the model's error in the measurement noise (knees, resistance as coloured noise) and a robust
gate (docs/estimation.md, "Model error"). The estimator (estimation.py) owns the SOC: it moves the
correction `x[0]` into its integer counter at a bounded rate and reads the covariance `pp[0]` for
the error bound. `step` also locates the cell profile at the pack SOC for the rest of the cycle.
The filter works in floats: covariances, gains and the pending correction are bounded quantities
that are re-derived every cycle, unlike the charge, which lives in the integer counter. Its floats
are transient (boxed on MicroPython): garbage every cycle, nothing that stays.
"""

from array import array
from math import exp, sqrt

from .compat import const
from .ocv import clamp_soc

_N = const(6)  # filter states
_RELAXED_MS = const(3600000)  # a rest this long is relaxed whatever the time constants


def clampf(v, lo, hi):
    """`v` clamped to lo..hi (floats)."""
    return lo if v < lo else hi if v > hi else v


class PackFilter:
    """The EKF; see the module docstring. The cell model is the configuration's profile."""

    def __init__(self, cfg):
        self._cfg = cfg
        self._p = cfg.profile
        self._mas_per_pct = cfg.capacity_mah * 36  # 1 % of capacity in mAs
        # SOC correction (fraction), v_rc1, v_rc2 (V), h, offset (A), OCV table error (V)
        self.x = array("f", [0.0] * _N)
        self.pp = array("f", [0.0] * (_N * _N))  # covariance, row-major
        self._w = array("f", [0.0] * (3 * _N))  # scratch: u, c, P H'
        # Model confidence (docs/estimation.md): counting's error since the start, as a variance
        # (fraction**2) and a linear part (offset), the filter's correction since then, the
        # share of counting's 3-sigma range that correction has used beyond the start's sigma,
        # and that sigma (fraction).
        self.conf = array("f", [0.0, 0.0, 0.0, 0.0, 0.0])
        self._rest_ms = _RELAXED_MS  # time at rest, ms (capped); the start reads OCV: relaxed
        self._om = cfg.est_offset_max_ma * 0.001  # A

    def start(self, sd, v1=0.0, v2=0.0):
        """A new start (or an OCV anchor): no correction, table error at 0, SOC sigma `sd`
        (fraction). RC pairs at 0, or, from a record that holds their voltages `v1`, `v2` (V)
        under a load: anywhere between those and relaxed (the load may have lasted until the
        power went, and nothing says how long the pack rested since), as half of each with
        that sigma; such a start is not a relaxed rest."""
        x = self.x
        x[0] = x[5] = 0.0
        x[1] = 0.5 * v1
        x[2] = 0.5 * v2
        self._reset_cov(sd)
        if v1 or v2:
            pp = self.pp
            pp[_N + 1] = max(pp[_N + 1], x[1] * x[1])
            pp[2 * _N + 2] = max(pp[2 * _N + 2], x[2] * x[2])
            self._rest_ms = 0
        m = self.conf
        m[0] = sd * sd
        m[4] = sd
        m[1] = m[2] = m[3] = 0.0

    def step(self, meas, dt_ms, soc, soh_res, at_end):
        """Predict over `dt_ms` and update with the mean cell voltage of `meas`; `soc` is the
        estimator's SOC (0.01 %), `soh_res` its SOH resistance (0.01 %), `at_end` True while the
        counter stands at an end (no charge is counted there)."""
        c = self._cfg
        pr = self._p
        x = self.x
        pp = self.pp
        w = self._w
        pr.locate(clamp_soc(soc + int(x[0] * 10000)), meas.tavg_dc)
        r0 = pr.at(pr.r0) * soh_res * 1e-9  # 10 micro-ohm -> ohm, times SOH resistance
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
        u = 0.0 if at_end else dt / cap
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
        qs = qs * qs + c.est_model_pct * c.est_model_pct * 1e-4 * abs(ie) * dt / cap
        pp[0] += qs
        # Counting's own error since the start (model confidence, below): the variance above,
        # plus the largest offset's drift.
        conf = self.conf
        conf[0] += qs
        if u:
            conf[1] += self._om * u
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
        rn = s * s + b * b + c.est_sigma_mv * c.est_sigma_mv * 1e-6
        p00 = pp[0]
        hf = self._flattest(pr, p00, soc) * 0.01
        s = 0.0
        for r in range(_N):
            v = 0.0
            for k in range(_N):
                v += pp[r * _N + k] * h[k]
            w[2 * _N + r] = v
            s += h[r] * v
        # Model confidence: how much of counting's own possible error since the start (3 sigma
        # of its variance plus the largest offset's drift) the filter's corrections have used
        # beyond two of the start's sigmas (a wrong start, corrected at full weight). Counting
        # cannot be wrong by more: a filter that keeps
        # moving the SOC away from it is reading a model error as SOC (a cell the tables do not
        # describe: aged, colder, other dynamics). The voltage's noise grows by e**(50 x that
        # share): 12x at 5 %, 150x at 10 %, so the filter counts coulombs once its model has
        # shown itself wrong; and no step may leave the range (the update is scaled back to its
        # edge).
        # At rest the model is the OCV table and the relaxing RC pairs, the part it knows best:
        # relaxed (resting three slow time constants, or since the start, which reads OCV), the
        # voltage judges as it is, and counting's range starts afresh from the filter.
        i = meas.current_ma
        if -c.rest_current_ma <= i <= c.rest_current_ma:
            if self._rest_ms < _RELAXED_MS:
                self._rest_ms += dt_ms
        else:
            self._rest_ms = 0
        if self._rest_ms >= _RELAXED_MS or self._rest_ms >= pr.at(pr.tau2) * 300:
            conf[0] = pp[0]
            conf[4] = sqrt(pp[0] if pp[0] > 0 else 0.0)
            conf[1] = conf[2] = 0.0
        span = 3 * sqrt(conf[0]) + conf[1]
        used = abs(conf[2]) - 2 * conf[4]
        if used > 0:
            used /= span - 2 * conf[4]
            conf[3] = used
            rn *= exp(50 * used if used < 1 else 50.0)
        else:
            conf[3] = 0.0
        s += rn
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
        dx = w[2 * _N] * s * y  # this step's SOC correction
        lim = span - conf[2] if dx > 0 else -span - conf[2]
        if conf[1] > 0 and ((dx > 0 and dx > lim) or (dx < 0 and dx < lim)):
            s *= lim / dx if (lim > 0) == (dx > 0) else 0.0
            gated = True
            dx = w[2 * _N] * s * y
        conf[2] += dx
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
        x[3] = clampf(x[3], -1.0, 1.0)
        om = c.est_offset_max_ma * 0.001
        x[4] = clampf(x[4], -om, om)
        # The table error is a few est_ocv_mv, not more: what exceeds 3 sigma is SOC (a wrong
        # start) or another state's error, which must not hide in this one.
        om = c.est_ocv_mv * 0.003
        x[5] = clampf(x[5], -om, om)

    def _flattest(self, pr, p00, soc):
        # The flattest OCV table segment within one sigma of the estimate (0.1 mV per %).
        s = soc + int(self.x[0] * 10000)
        d = int(sqrt(p00 if p00 > 0 else 0.0) * 10000)
        soc = pr.soc
        m = pr.slope()
        for k in range(len(soc) - 1):
            if soc[k + 1] > s - d and soc[k] < s + d:
                m = min(m, pr.slope(k))
        return m

    def _reset_cov(self, sd):
        pp = self.pp
        for k in range(_N * _N):
            pp[k] = 0.0
        pp[0] = sd * sd
        pp[_N + 1] = pp[2 * _N + 2] = 1e-6
        pp[3 * _N + 3] = 1.0 if self._p.gamma_milli else 0.0
        ob = self._cfg.est_offset_max_ma * 0.0005
        pp[4 * _N + 4] = ob * ob
        ob = self._cfg.est_ocv_mv * 1e-3
        pp[_N * _N - 1] = ob * ob
