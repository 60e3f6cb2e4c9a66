"""Cell profiles (`docs/profiles.md`): a typed container, JSON output, table interpolation and
the "datasheet" profile of the simulated cell.

The firmware's loader (`firmware/profile.py`) is the one validator of the format; this module only
writes what `cellguard characterize` fitted (valid by construction) and reads profiles back for
desktop tools (the re-simulator, the benchmark baseline) without checking them again.

`plant_profile(chemistry)` writes the plant's own parameters (sim/cells.py: OCV at 25 degC plus
the entropic coefficient, R0/R1/R2/tau and their SOC and temperature factors) in the same format,
so the closed loop runs the estimator on the model of the cell it simulates. Characterized
profiles live in `profiles/`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from sim.cells import OCV_SOC_POINTS, get_chemistry

PROFILE_FORMAT = "cellguard-cell-profile"
PROFILE_VERSION = 1
SOC_GRID_PCT = tuple(range(0, 101, 5))
"""SOC axis that `characterize` writes (0..100 % in 5 % steps)."""

TABLE_KEYS = ("ocv_v", "hysteresis_v", "r0_ohm", "r1_ohm", "tau1_s", "r2_ohm", "tau2_s")
"""Keys of the tables indexed [temperature_index][soc_index]."""

Table = list[list[float]]


@dataclass
class CellProfile:
    """One cell's equivalent-circuit model; field names and units are the JSON keys."""

    name: str
    chemistry: str
    source: str
    capacity_ah: float
    voltage_min_v: float
    voltage_max_v: float
    coulombic_efficiency: float
    soc_pct: list[float]
    temperature_c: list[float]
    ocv_v: Table
    hysteresis_v: Table
    hysteresis_rate_per_ah: float
    r0_ohm: Table
    r1_ohm: Table
    tau1_s: Table
    r2_ohm: Table
    tau2_s: Table
    fit: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of the format, keys in the documented order."""
        out: dict[str, Any] = {"format": PROFILE_FORMAT, "version": PROFILE_VERSION}
        out.update(asdict(self))
        if not self.fit:
            del out["fit"]
        return out

    def to_json(self, path: Path) -> None:
        """Write the profile to `path`: one table row per line, 6 significant digits."""
        parts = []
        for key, value in self.to_dict().items():
            if key in TABLE_KEYS:
                rows = ",\n".join(f"  {json.dumps([_sig(x) for x in row])}" for row in value)
                text = f"[\n{rows}\n ]"
            elif isinstance(value, dict):
                text = json.dumps(value, indent=2).replace("\n", "\n ")
            elif isinstance(value, float):
                text = json.dumps(_sig(value))
            else:
                text = json.dumps(value)
            parts.append(f" {json.dumps(key)}: {text}")
        path.write_text("{\n" + ",\n".join(parts) + "\n}\n")

    @classmethod
    def from_json(cls, path: Path) -> CellProfile:
        """Read a profile written by `to_json` (or by hand); the firmware loader validates."""
        data = json.loads(Path(path).read_text())
        data.pop("format", None)
        data.pop("version", None)
        return cls(**data)

    def table(self, key: str, soc_pct: ArrayLike, temp_c: ArrayLike) -> NDArray[np.float64]:
        """Table `key` interpolated linearly in SOC and temperature, clamped at the ends."""
        return interp_table(
            np.asarray(getattr(self, key), dtype=float),
            np.asarray(self.soc_pct, dtype=float),
            np.asarray(self.temperature_c, dtype=float),
            soc_pct,
            temp_c,
        )


def _sig(value: float) -> float:
    # 6 significant digits: 10 uV on an OCV, far below any sensor; keeps files readable.
    return float(f"{value:.6g}")


def interp_table(
    table: NDArray[np.float64],
    soc_axis: NDArray[np.float64],
    temp_axis: NDArray[np.float64],
    soc_pct: ArrayLike,
    temp_c: ArrayLike,
) -> NDArray[np.float64]:
    """Bilinear interpolation of `table[temperature][soc]`, clamped at the axis ends."""
    soc = np.clip(np.asarray(soc_pct, dtype=float), soc_axis[0], soc_axis[-1])
    temp = np.clip(np.asarray(temp_c, dtype=float), temp_axis[0], temp_axis[-1])
    soc, temp = np.broadcast_arrays(soc, temp)
    per_temp = np.array([np.interp(soc, soc_axis, row) for row in table])
    if len(temp_axis) == 1:
        return per_temp[0]
    hi = np.clip(np.searchsorted(temp_axis, temp, side="right"), 1, len(temp_axis) - 1)
    lo = hi - 1
    w = (temp - temp_axis[lo]) / (temp_axis[hi] - temp_axis[lo])
    idx = np.indices(soc.shape)
    return (1.0 - w) * per_temp[(lo, *idx)] + w * per_temp[(hi, *idx)]


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
        "format": PROFILE_FORMAT,
        "version": PROFILE_VERSION,
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
