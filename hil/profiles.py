"""Cell profiles on the desktop: the "datasheet" profile of the simulated cell.

`plant_profile(chemistry)` writes the plant's own parameters (sim/cells.py: OCV at 25 degC plus
the entropic coefficient, R0/R1/R2/tau and their SOC and temperature factors) in the cell-profile
format the firmware loads (firmware/profile.py, docs/estimation.md), so the closed loop runs the
estimator on the model of the cell it simulates. Characterized profiles live in `profiles/`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sim.cells import OCV_SOC_POINTS, get_chemistry

PROFILE_TEMPERATURES_C = (10.0, 25.0, 40.0)
"""Temperature rows of the plant profile (degC), around where the simulated packs run. The
firmware interpolates linearly while the plant's resistance follows Arrhenius (about 4 % of R off
midway between rows, inside the filter's est_sigma_r_pct); every row more costs the board heap
while it parses the profile at start-up (about 2 KB of floats each)."""


def plant_profile(chemistry: str) -> dict[str, Any]:
    """The profile of the plant's nominal cell of `chemistry` ("NMC" or "LFP")."""
    chem = get_chemistry(chemistry)
    soc = np.array(OCV_SOC_POINTS)
    temps = np.array(PROFILE_TEMPERATURES_C)

    def table(values: Any) -> list[list[float]]:
        # Whole numbers as JSON integers: MicroPython keeps small ints off the heap, floats not.
        return [
            [int(v) if float(v).is_integer() else round(float(v), 6) for v in row] for row in values
        ]

    ocv = [chem.ocv_v(soc, t) for t in temps]
    factor = [chem.resistance_factor(soc, t) for t in temps]
    zeros = [np.zeros(len(soc)) for _ in temps]
    return {
        "format": "cellguard-cell-profile",
        "version": 1,
        "name": f"cellguard plant {chem.name}",
        "chemistry": chem.name,
        "source": "sim/cells.py parameters of the simulated cell (datasheet profile)",
        "capacity_ah": chem.capacity_ah,
        "voltage_min_v": chem.v_min_v,
        "voltage_max_v": chem.v_max_v,
        "coulombic_efficiency": chem.coulombic_efficiency,
        "soc_pct": [round(100 * float(s), 3) for s in soc],
        "temperature_c": list(PROFILE_TEMPERATURES_C),
        "ocv_v": table(ocv),
        "hysteresis_v": table(zeros),
        "hysteresis_rate_per_ah": 0.0,
        "r0_ohm": table([chem.r0_ohm * f for f in factor]),
        "r1_ohm": table([chem.r1_ohm * f for f in factor]),
        "tau1_s": table([np.full(len(soc), chem.tau1_s) for _ in temps]),
        "r2_ohm": table([chem.r2_ohm * f for f in factor]),
        "tau2_s": table([np.full(len(soc), chem.tau2_s) for _ in temps]),
    }
