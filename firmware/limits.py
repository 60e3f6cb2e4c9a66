"""Charge and discharge current and voltage limits for the vehicle and the charger.

Each current limit is its configured maximum times the most restrictive of its derating factors
(per mille, linear ramps between config breakpoints):

    charge:    vmax  full up to charge_taper_mv, 0 at cell_charge_max_mv
               tmin  0 at ut_charge_dc, full from charge_temp_full_lo_dc
               tmax  full up to charge_temp_full_hi_dc, 0 at ot_charge_dc
    discharge: vmin  full down to discharge_taper_mv, 0 at cell_discharge_min_mv
               tmin  0 at ut_discharge_dc, full from discharge_temp_full_lo_dc
               tmax  full up to discharge_temp_full_hi_dc, 0 at ot_discharge_dc

Both current limits are 0 while an open-tier fault is active. On top of the ramps:

    tier DERATE        (a derate-tier fault; `tier` from protection) both current limits at
                       most derate_pct % of their maximum
    cold               charge limit at most derate_pct % of oc_charge_cold_ma while a
                       temperature is below oc_cold_dc (the stricter cold over-current threshold)
    heating            charge limit 0 while the heater preheats the pack (firmware/thermal.py)
    cap()              the model's state of power (firmware/sop.py, 30 s horizon): the largest
                       current every cell can take without leaving its voltage limits

The over-current thresholds lie above max_charge_ma / max_discharge_ma (config ordering), so a
vehicle respecting the limits never reaches them; one that ignores them (beyond a limit by
limit_margin_ma for limit_ignored_ms) is cut off by CurrentLimitIgnored (firmware/protection.py).
Current limits are magnitudes in mA (>= 0), voltage limits are pack voltages in mV. update()
reads the statistics of `meas`: call meas.update_stats() first.
"""

from .compat import const
from .data import LimitData

_FULL = const(1000)  # derating factor 1.0, per mille
_TIER_DERATE = const(2)  # protection.TIER_DERATE


def ramp(x, zero_at, full_at):
    """Derating factor (per mille) of `x`: 0 at `zero_at`, full at `full_at`, linear between; works
    in both directions (zero_at above or below full_at, never equal: config)."""
    f = (x - zero_at) * _FULL // (full_at - zero_at)
    if f < 0:
        return 0
    if f > _FULL:
        return _FULL
    return f


class Limits:
    """Current and voltage limits, written into LimitData `out`; see the module docstring."""

    def __init__(self, cfg, out=None):
        self._cfg = cfg
        if out is None:
            n = cfg.cell_count
            out = LimitData(n * cfg.cell_charge_max_mv, n * cfg.cell_discharge_min_mv)
        self.out = out

    def update(self, meas, open_required, tier=0, heating=0):
        o = self.out
        if open_required:
            o.charge_ma = 0
            o.discharge_ma = 0
            return
        c = self._cfg
        f = ramp(meas.vmax_mv, c.cell_charge_max_mv, c.charge_taper_mv)
        f = min(f, ramp(meas.tmin_dc, c.ut_charge_dc, c.charge_temp_full_lo_dc))
        f = min(f, ramp(meas.tmax_dc, c.ot_charge_dc, c.charge_temp_full_hi_dc))
        derate = tier >= _TIER_DERATE  # open tier: open_required, above
        if derate:
            f = min(f, c.derate_pct * 10)  # percent to per mille
        # max_*_ma <= 10**6 (config), so the product stays below 2**30.
        charge = c.max_charge_ma * f // _FULL
        if meas.tmin_dc < c.oc_cold_dc:
            charge = min(charge, c.oc_charge_cold_ma * c.derate_pct // 100)
        if heating:
            charge = 0
        o.charge_ma = charge
        f = ramp(meas.vmin_mv, c.cell_discharge_min_mv, c.discharge_taper_mv)
        f = min(f, ramp(meas.tmin_dc, c.ut_discharge_dc, c.discharge_temp_full_lo_dc))
        f = min(f, ramp(meas.tmax_dc, c.ot_discharge_dc, c.discharge_temp_full_hi_dc))
        if derate:
            f = min(f, c.derate_pct * 10)
        o.discharge_ma = c.max_discharge_ma * f // _FULL

    def cap(self, charge_ma, discharge_ma):
        """Lower the current limits to `charge_ma` / `discharge_ma` (mA) where they are smaller."""
        o = self.out
        if charge_ma < o.charge_ma:
            o.charge_ma = charge_ma
        if discharge_ma < o.discharge_ma:
            o.discharge_ma = discharge_ma
