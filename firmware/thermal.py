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

_IDLE = const(0)
_COOLING = const(1)
_PREHEATING = const(2)
_NO_DATA = const(3)


class Thermal:
    """Cooling and heating outputs with hysteresis; see the module docstring."""

    def __init__(self, cfg):
        self._cfg = cfg
        self.cooling = 0
        self.heating = 0
        self.reason = _NO_DATA

    def update(self, meas, valid, charge_request):
        if not valid:
            self.cooling = 1
            self.heating = 0
            self.reason = _NO_DATA
            return
        c = self._cfg
        if meas.tmax_dc > c.cool_on_dc:
            self.cooling = 1
        elif meas.tmax_dc < c.cool_on_dc - c.thermal_hyst_dc:
            self.cooling = 0
        if charge_request and meas.tmin_dc < c.ut_charge_dc:
            self.heating = 1
        elif not charge_request or meas.tmin_dc >= c.ut_charge_dc + c.thermal_hyst_dc:
            self.heating = 0
        self.reason = _PREHEATING if self.heating else _COOLING if self.cooling else _IDLE
