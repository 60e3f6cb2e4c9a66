"""Thermal management: the cooling (fan or pump) and heating outputs and why they are set.

    cooling  on while the hottest sensor is above cool_on_dc, off once it is below
             cool_on_dc - thermal_hyst_dc (in between: unchanged)
    heating  on while charging is requested (VCU ChargeRequest) and the coldest sensor is below
             ut_charge_dc; off once it reaches ut_charge_dc + thermal_hyst_dc or the request ends
    no data  measurements stale or implausible: cooling on (it cannot make a hot pack worse),
             heating off (it could)

While the heater runs the limits keep the charge current at 0 until the
pack is warm enough, so the charger never charges a pack below its minimum temperature.
Reasons (BMS_Thermal ThermalReason): 0 IDLE, 1 COOLING, 2 PREHEATING, 3 NO_DATA.
"""

from .compat import const
from .data import ThermalData

_IDLE = const(0)
_COOLING = const(1)
_PREHEATING = const(2)
_NO_DATA = const(3)


class Thermal:
    """Cooling and heating outputs with hysteresis, written into ThermalData `out`."""

    def __init__(self, cfg, out=None):
        self._cfg = cfg
        self.out = ThermalData() if out is None else out

    def update(self, meas, valid, charge_request):
        o = self.out
        if not valid:
            o.cooling = 1
            o.heating = 0
            o.reason = _NO_DATA
            return
        c = self._cfg
        if meas.tmax_dc > c.cool_on_dc:
            o.cooling = 1
        elif meas.tmax_dc < c.cool_on_dc - c.thermal_hyst_dc:
            o.cooling = 0
        if charge_request and meas.tmin_dc < c.ut_charge_dc:
            o.heating = 1
        elif not charge_request or meas.tmin_dc >= c.ut_charge_dc + c.thermal_hyst_dc:
            o.heating = 0
        o.reason = _PREHEATING if o.heating else _COOLING if o.cooling else _IDLE
