"""Cell profiles (`docs/profiles.md`): a typed container, JSON output and table interpolation.

The firmware's loader (`firmware/profile.py`) is the one validator of the format; this module only
writes what `cellguard characterize` fitted (valid by construction) and reads profiles back for
desktop tools (the re-simulator, the benchmark baseline) without checking them again.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

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
