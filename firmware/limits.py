"""Charge and discharge current and voltage limits for the vehicle and the charger.

Each current limit is its configured maximum times the most restrictive of its derating factors
(per mille, linear ramps between config breakpoints):

    charge:    vmax  full up to charge_taper_mv, 0 at cell_charge_max_mv
               tmin  0 at ut_charge_dc, full from charge_temp_full_lo_dc
               tmax  full up to charge_temp_full_hi_dc, 0 at ot_charge_dc
    discharge: vmin  full down to discharge_taper_mv, 0 at cell_discharge_min_mv
               tmin  0 at ut_discharge_dc, full from discharge_temp_full_lo_dc
               tmax  full up to discharge_temp_full_hi_dc, 0 at ot_discharge_dc

Both current limits are 0 while an open-tier fault is active. Current limits are magnitudes in mA
(>= 0), voltage limits are pack voltages in mV. update() reads the statistics of `meas`: call
meas.update_stats() first.
"""

from .compat import const

_FULL = const(1000)  # derating factor 1.0, per mille


def _ramp(x, zero_at, full_at):
    # Works in both directions: zero_at may lie above or below full_at (never equal: config).
    f = (x - zero_at) * _FULL // (full_at - zero_at)
    if f < 0:
        return 0
    if f > _FULL:
        return _FULL
    return f


class Limits:
    """Current and voltage limits; see the module docstring."""

    def __init__(self, cfg):
        self._cfg = cfg
        self.charge_voltage_mv = cfg.cell_count * cfg.cell_charge_max_mv
        self.discharge_voltage_mv = cfg.cell_count * cfg.cell_discharge_min_mv
        self.charge_ma = 0
        self.discharge_ma = 0

    def update(self, meas, open_required):
        if open_required:
            self.charge_ma = 0
            self.discharge_ma = 0
            return
        c = self._cfg
        f = _ramp(meas.vmax_mv, c.cell_charge_max_mv, c.charge_taper_mv)
        f = min(f, _ramp(meas.tmin_dc, c.ut_charge_dc, c.charge_temp_full_lo_dc))
        f = min(f, _ramp(meas.tmax_dc, c.ot_charge_dc, c.charge_temp_full_hi_dc))
        # max_*_ma <= 10**6 (config), so the product stays below 2**30.
        self.charge_ma = c.max_charge_ma * f // _FULL
        f = _ramp(meas.vmin_mv, c.cell_discharge_min_mv, c.discharge_taper_mv)
        f = min(f, _ramp(meas.tmin_dc, c.ut_discharge_dc, c.discharge_temp_full_lo_dc))
        f = min(f, _ramp(meas.tmax_dc, c.ot_discharge_dc, c.discharge_temp_full_hi_dc))
        self.discharge_ma = c.max_discharge_ma * f // _FULL
