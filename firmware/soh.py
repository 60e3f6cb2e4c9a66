"""State of health: capacity from pairs of OCV anchors, resistance from current steps.

Owns the SOH fields of SocData (soh_cap, soh_cap_conf, soh_res, soh_res_conf, soh_halfpct; 0.01 %
and %) and what their estimates remember between cycles. Capacity: two rested OCV anchors
est_soh_span apart give capacity / rated from the exactly counted charge between them (the
estimator calls `capacity` at each anchor). Resistance: a current step of est_step_ma or more
between two cycles measures R0 as dV/dI of the mean cell (the RC pairs barely move in one cycle)
against the profile's, a running mean over the first _RES_WEIGHT steps, then 1/_RES_WEIGHT per
step. docs/estimation.md.
"""

from math import sqrt

from .compat import const

_RES_WEIGHT = const(16)


class Soh:
    """SOH capacity and resistance, written into SocData `out`."""

    def __init__(self, cfg, out):
        self._cfg = cfg
        self._out = out
        self._mas_per_pct = cfg.capacity_mah * 36  # 1 % of capacity in mAs
        self._res_n = 0
        self._prev_ma = 0
        self._prev_mv = 0
        self._anchor_soc = -1  # last OCV anchor for the capacity estimate, 0.01 %; -1: none
        self._anchor_q = 0
        self._anchor_sd = 0.0

    def start(self, meas):
        """The first cycle: the reference for the next current step."""
        self._prev_ma = meas.current_ma
        self._prev_mv = meas.vavg_mv

    def restore(self, cap, cap_conf, res, res_conf):
        """Values from a saved state (ranges checked by the caller)."""
        o = self._out
        o.soh_cap, o.soh_cap_conf, o.soh_res, o.soh_res_conf = cap, cap_conf, res, res_conf
        o.soh_halfpct = min(255, cap // 50)
        self._res_n = res_conf * _RES_WEIGHT // 100

    def update(self, meas, pr):
        """One cycle of the filter: a current step since the last measures R0 (`pr`: the cell
        profile, located at the pack SOC)."""
        self._resistance(meas, pr)
        self._prev_ma = meas.current_ma
        self._prev_mv = meas.vavg_mv

    def _resistance(self, meas, pr):
        # A current step between two cycles: dV/dI of the mean cell is R0 (the RC pairs barely
        # move in one cycle).
        di = meas.current_ma - self._prev_ma
        if -self._cfg.est_step_ma < di < self._cfg.est_step_ma:
            return
        ratio = (self._prev_mv - meas.vavg_mv) * 1e9 / (di * pr.at(pr.r0))
        if not 0 < ratio < 40000:
            return
        o = self._out
        n = min(self._res_n + 1, _RES_WEIGHT)
        self._res_n = n
        o.soh_res = int(o.soh_res + (ratio - o.soh_res) / n)
        o.soh_res_conf = n * 100 // _RES_WEIGHT

    def capacity(self, ocv, q, sd):
        """An OCV anchor at SOC `ocv` (0.01 %) with the counter at `q` (mAs) and sigma `sd` (SOC
        fraction): with the previous one far enough away, a capacity estimate."""
        span = ocv - self._anchor_soc
        if self._anchor_soc >= 0 and abs(span) >= self._cfg.est_soh_span:
            o = self._out
            new = (self._anchor_q - q) * 1e6 / (span * self._mas_per_pct)
            rel = sqrt(sd * sd + self._anchor_sd * self._anchor_sd) * 10000 / abs(span)
            conf = max(0, min(100, int(100 - 1000 * rel)))
            if conf and 0 < new < 20000:
                # A cell holds at most its rated capacity as far as the SOH reports (100 %): an
                # estimate above is the anchors' error, and counts at 100 %.
                new = min(new, 10000)
                old = o.soh_cap_conf
                o.soh_cap = int((o.soh_cap * old + new * conf) / (old + conf))
                o.soh_cap_conf = max(old, conf)
                o.soh_halfpct = min(255, o.soh_cap // 50)
        self._anchor_soc = ocv
        self._anchor_q = q
        self._anchor_sd = sd
