"""State of power (SOP): the charge and discharge currents the pack can take for 10 s and 30 s.

For each horizon T the largest constant current that keeps the weakest cell (lowest voltage, for
discharge) above cell_discharge_min_mv and the strongest (highest, for charge) below
cell_charge_max_mv at the end of T, from the estimator's model: that cell's OCV (its voltage plus
what the present load takes off it), the RC voltages decaying and charging with tau1/tau2, R0,
and the OCV moving with the charge drawn:

    I_dis(T) = (OCV_low - v1 e1 - v2 e2 - V_min) / R(T)      e_k = exp(-T / tau_k)
    I_chg(T) = (V_max - OCV_high + v1 e1 + v2 e2) / R(T)     R(T) = R0 + R1 (1 - e1)
                                                                    + R2 (1 - e2) + dOCV/dQ T

Then derated linearly by temperature (the limits' breakpoints) and by SOC (sop_*_taper_soc),
and rate-limited: a limit falls at once but rises at most sop_rise_ma_s. All four are 0 while
the measurements are not fit for estimation or an open-tier fault is active. Currents in mA, >= 0.
Inputs: the SOC block (SOC, SOH resistance, current offset) and the model point (R0, RC pairs and
their voltages, the OCV slope where the estimator located the cell model this cycle; data.py).
The model quantities are floats (bounded, recomputed every cycle); the results are integers.
"""

from math import exp

from .limits import ramp as _ramp


class Sop:
    """Writes PowerData `data.power` from the SOC block and the model point (`data`: data.Data)."""

    def __init__(self, cfg, data):
        self._cfg = cfg
        self._soc = data.soc
        self._model = data.model
        self.out = data.power
        self._mas_per_pct = cfg.capacity_mah * 36  # 1 % of capacity in mAs

    def update(self, meas, ok, dt_ms):
        """One cycle; `ok`: measurements fresh and plausible and no open-tier fault."""
        o = self.out
        est = self._soc
        mp = self._model
        if not ok or not est.initialised or not mp.valid:
            o.charge_ma_10s = o.discharge_ma_10s = 0
            o.charge_ma_30s = o.discharge_ma_30s = 0
            return
        c = self._cfg
        r0 = mp.r0 * est.soh_res * 1e-9
        r1 = mp.r1 * 1e-5
        r2 = mp.r2 * 1e-5
        t1 = mp.tau1 * 0.1
        t2 = mp.tau2 * 0.1
        dq = mp.slope * 0.01 / (self._mas_per_pct * 0.1)  # dOCV/dQ, V per As
        v1 = mp.v1_uv * 1e-6
        v2 = mp.v2_uv * 1e-6
        drop = (meas.current_ma - est.offset_ma) * 0.001 * r0 + v1 + v2
        lo = meas.vmin_mv * 0.001 + drop - c.cell_discharge_min_mv * 0.001
        hi = c.cell_charge_max_mv * 0.001 - meas.vmax_mv * 0.001 - drop
        fc = min(
            _ramp(meas.tmin_dc, c.ut_charge_dc, c.charge_temp_full_lo_dc),
            _ramp(meas.tmax_dc, c.ot_charge_dc, c.charge_temp_full_hi_dc),
            _ramp(est.soc_max, 10000, c.sop_charge_taper_soc),
        )
        fd = min(
            _ramp(meas.tmin_dc, c.ut_discharge_dc, c.discharge_temp_full_lo_dc),
            _ramp(meas.tmax_dc, c.ot_discharge_dc, c.discharge_temp_full_hi_dc),
            _ramp(est.soc_min, 0, c.sop_discharge_taper_soc),
        )
        rise = c.sop_rise_ma_s * dt_ms // 1000
        top = c.plaus_current_ma
        m = (r0, r1, t1, r2, t2, dq, v1, v2)
        o.charge_ma_10s = _next(o.charge_ma_10s, _amps(10, m, hi, 1) * fc, rise, top)
        o.charge_ma_30s = _next(o.charge_ma_30s, _amps(30, m, hi, 1) * fc, rise, top)
        o.discharge_ma_10s = _next(o.discharge_ma_10s, _amps(10, m, lo, -1) * fd, rise, top)
        o.discharge_ma_30s = _next(o.discharge_ma_30s, _amps(30, m, lo, -1) * fd, rise, top)


def _amps(t, m, margin, sign):
    # Constant current (A) that uses up `margin` (V) in `t` s; sign 1 charge, -1 discharge.
    e1 = exp(-t / m[2])
    e2 = exp(-t / m[4])
    return (margin + sign * (m[6] * e1 + m[7] * e2)) / (
        m[0] + m[1] * (1 - e1) + m[3] * (1 - e2) + m[5] * t
    )


def _next(old, amps_per_mille, rise, top):
    # New limit in mA: the derated model current, falling at once, rising by at most `rise`.
    v = int(amps_per_mille)  # A * per mille = mA
    v = 0 if v < 0 else top if v > top else v
    return v if v < old + rise else old + rise
