"""Plant-side faults: physics the healthy pack model does not have.

`PlantFaults` keeps the active plant faults and, before every plant step, writes them into the
pack's fault hooks (``Pack.fault_leak_a``, ``Pack.fault_heat_w``) and its contactors:

- internal short of cell i through ``ohm``: a resistor across the cell's EMF, inside the can, so
  its current ``ocv / ohm`` bypasses the terminals (the terminal voltage sags only as the charge
  drains: self-discharge) and heats the cell with ``ocv^2 / ohm``.
- thermal runaway of cell i: an internal short whose resistance halves every ``halving_s`` (the
  separator failing) down to ``min_ohm``, plus an exothermic heat source that ramps linearly over
  ``ramp_s`` to ``rate_c_per_s`` times the cell's thermal mass and stops at ``burnt_c``.
  Together they heat the cell by several degC/s within seconds while its voltage falls as the
  short drains it; its neighbours warm through the chain's thermal conductance, which is how a
  BMS with a stuck or missing sensor on that cell can still see it.
- welded contactor: stays closed whatever the command, from the moment it is commanded closed
  (a weld happens when contacts close or open under load; an open contactor cannot weld).

Times are plant seconds (``Bench.t_s``). Usage:
    faults = PlantFaults()
    faults.internal_short(3, ohm=2.0)
    faults.apply(pack, t_s, dt_s)  # before pack.step(dt_s, ...)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.pack import Pack

CONTACTORS = ("neg", "pre", "pos")


@dataclass(frozen=True)
class Runaway:
    """Parameters and start time of one cell's thermal runaway."""

    start_s: float
    rate_c_per_s: float = 5.0
    """Self-heating rate the exothermic source reaches (degC/s, with no heat leaving)."""
    ramp_s: float = 5.0
    """Time the exothermic source takes to reach that rate (s)."""
    start_ohm: float = 1.0
    """Internal short at the onset (ohm)."""
    halving_s: float = 1.0
    """The short's resistance halves this often (s)."""
    min_ohm: float = 0.01
    """Resistance the short falls to (ohm)."""
    burnt_c: float = 700.0
    """Above this the reactants are spent: the exothermic source stops (degC)."""

    def short_ohm(self, t_s: float) -> float:
        """Resistance of the internal short at plant time `t_s`."""
        elapsed = max(0.0, t_s - self.start_s)
        return max(self.min_ohm, self.start_ohm * 0.5 ** (elapsed / self.halving_s))

    def heat_w(self, t_s: float, thermal_mass_j_per_k: float, temp_c: float = 25.0) -> float:
        """Exothermic heat at plant time `t_s` with the cell at `temp_c` (W)."""
        if temp_c >= self.burnt_c:
            return 0.0
        share = min(1.0, max(0.0, t_s - self.start_s) / self.ramp_s)
        return share * self.rate_c_per_s * thermal_mass_j_per_k


class PlantFaults:
    """Active plant faults of one pack; see the module docstring."""

    def __init__(self) -> None:
        self.shorts: dict[int, float] = {}
        """Cell -> internal short resistance (ohm)."""
        self.runaways: dict[int, Runaway] = {}
        self.welded: set[str] = set()
        """Contactors ("neg", "pre", "pos") that will stay closed once closed."""
        self._stuck: set[str] = set()

    def internal_short(self, cell: int, ohm: float) -> None:
        """A resistor of `ohm` across cell `cell`'s EMF, from the next step on."""
        if ohm <= 0.0:
            raise ValueError(f"short resistance must be > 0 ohm, got {ohm}")
        self.shorts[cell] = ohm

    def thermal_runaway(self, cell: int, start_s: float, **params: float) -> None:
        """Start a thermal runaway in cell `cell` at plant time `start_s` (`Runaway` fields)."""
        self.runaways[cell] = Runaway(start_s, **params)

    def weld(self, contactor: str) -> None:
        """Weld `contactor` ("neg", "pre" or "pos"): it stays closed once closed."""
        if contactor not in CONTACTORS:
            raise ValueError(f"contactor must be one of {CONTACTORS}, got {contactor!r}")
        self.welded.add(contactor)

    def clear(self) -> None:
        """Remove every plant fault; the next `apply` leaves a healthy pack."""
        self.shorts.clear()
        self.runaways.clear()
        self.welded.clear()
        self._stuck.clear()

    def apply(self, pack: Pack, t_s: float, dt_s: float) -> None:
        """Write the faults into `pack` for the step from `t_s` to `t_s + dt_s`."""
        leak = pack.fault_leak_a
        heat = pack.fault_heat_w
        leak[:] = 0.0
        heat[:] = 0.0
        ocv = pack.ocv_v
        mid_s = t_s + 0.5 * dt_s  # rates taken at mid-step: less bias on a fast-falling short
        ohms = dict(self.shorts)
        for cell, runaway in self.runaways.items():
            ohms[cell] = min(ohms.get(cell, np.inf), runaway.short_ohm(mid_s))
            mass = pack.chemistry.thermal_mass_j_per_k
            heat[cell] += runaway.heat_w(mid_s, mass, float(pack.temperature_c[cell]))
        for cell, ohm in ohms.items():
            # An empty cell has no EMF left to drive the short.
            v = max(0.0, float(ocv[cell])) if pack.soc[cell] > 0.0 else 0.0
            leak[cell] += v / ohm
            heat[cell] += v * v / ohm
        if self.welded:
            state = dict(zip(CONTACTORS, pack.contactors, strict=True))
            self._stuck |= {c for c in self.welded if state[c]}
            pack.set_contactors(*(state[c] or c in self._stuck for c in CONTACTORS))
