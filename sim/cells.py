"""Cell chemistry parameters for the equivalent-circuit plant.

Each cell is a Thevenin model with two RC pairs. Current ``i`` is in amperes, positive =
discharge (out of the cell):

    v_terminal = ocv(soc, T) - i * R0 - v_rc1 - v_rc2
    d v_rck / dt = (i * Rk - v_rck) / tau_k            (k = 1, 2; tau_k fixed per chemistry)

R0, R1 and R2 share one scale factor that rises at low SOC (table) and at low temperature
(Arrhenius: ``exp(Ea/R * (1/T - 1/T_ref))``); the time constants stay fixed, so C_k = tau_k / R_k.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
from numpy.typing import ArrayLike, NDArray

T_REF_C = 25.0
"""Reference temperature (degC) of the OCV table and the base resistances."""

KELVIN_OFFSET = 273.15
"""degC to K."""

OCV_SOC_POINTS = tuple(i / 20 for i in range(21))
"""SOC breakpoints (0..1, 5 % steps) of the OCV table, shared with the firmware calibration."""

ABUSE_SOC_MARGIN = 0.2
"""SOC beyond 0 and 1 over which the OCV keeps moving towards ``Chemistry.abuse_ocv_v``."""


@dataclass(frozen=True)
class Chemistry:
    """Parameters of one cell type; the tables are interpolated linearly.

    Outside SOC 0..1 (abuse: charge still flowing into a full or out of an empty cell) the OCV
    runs linearly from the table ends to ``abuse_ocv_v`` at SOC ``-ABUSE_SOC_MARGIN`` and
    ``1 + ABUSE_SOC_MARGIN`` and holds there, so a BMS that fails to stop the current sees the
    voltage collapse or soar.
    """

    name: str
    capacity_ah: float
    v_min_v: float
    """Lowest cell voltage the manufacturer allows (V)."""
    v_max_v: float
    """Highest cell voltage the manufacturer allows (V)."""
    ocv_25c_v: tuple[float, ...]
    """OCV (V) at ``OCV_SOC_POINTS`` and 25 degC."""
    entropic_soc: tuple[float, ...]
    """SOC breakpoints of ``entropic_v_per_k``."""
    entropic_v_per_k: tuple[float, ...]
    """dOCV/dT (V/K): OCV(soc, T) = OCV_25(soc) + dOCV/dT(soc) * (T - 25 degC)."""
    r0_ohm: float
    """Ohmic resistance at 25 degC and mid SOC."""
    r1_ohm: float
    tau1_s: float
    r2_ohm: float
    tau2_s: float
    resistance_soc: tuple[float, ...]
    """SOC breakpoints of ``resistance_soc_factor``."""
    resistance_soc_factor: tuple[float, ...]
    """Multiplier on all resistances vs SOC (1 at mid SOC, larger when nearly empty)."""
    arrhenius_k: float
    """Activation energy over the gas constant, Ea/R (K), of the resistance rise in the cold."""
    thermal_mass_j_per_k: float
    coulombic_efficiency: float
    """Share of the charge pushed into the cell that is stored (discharge is lossless)."""
    abuse_ocv_v: tuple[float, float]
    """OCV (V) reached at SOC ``-ABUSE_SOC_MARGIN`` and ``1 + ABUSE_SOC_MARGIN``."""

    def __post_init__(self) -> None:
        if len(self.ocv_25c_v) != len(OCV_SOC_POINTS) or np.any(np.diff(self.ocv_25c_v) <= 0):
            raise ValueError(f"{self.name}: OCV needs {len(OCV_SOC_POINTS)} increasing points")
        if len(self.entropic_soc) != len(self.entropic_v_per_k) or len(self.resistance_soc) != len(
            self.resistance_soc_factor
        ):
            raise ValueError(f"{self.name}: table breakpoints and values differ in length")
        if not 0.0 < self.coulombic_efficiency <= 1.0:
            raise ValueError(f"{self.name}: coulombic efficiency must be in (0, 1]")

    @cached_property
    def _ocv_table(self) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        soc = np.array([-ABUSE_SOC_MARGIN, *OCV_SOC_POINTS, 1.0 + ABUSE_SOC_MARGIN])
        volts = np.array([self.abuse_ocv_v[0], *self.ocv_25c_v, self.abuse_ocv_v[1]])
        return soc, volts

    @cached_property
    def _entropic_table(self) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        return np.array(self.entropic_soc), np.array(self.entropic_v_per_k)

    @cached_property
    def _resistance_table(self) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        return np.array(self.resistance_soc), np.array(self.resistance_soc_factor)

    @cached_property
    def nominal_voltage_v(self) -> float:
        """Mean 25 degC OCV over SOC 0..1: nominal energy = capacity * this."""
        volts = np.asarray(self.ocv_25c_v)
        return float(np.mean((volts[1:] + volts[:-1]) / 2))

    def ocv_v(self, soc: ArrayLike, temp_c: ArrayLike) -> NDArray[np.float64]:
        """Open-circuit voltage (V) at ``soc`` (fraction, may leave 0..1) and ``temp_c``."""
        entropic = np.interp(soc, *self._entropic_table)
        return np.interp(soc, *self._ocv_table) + entropic * (np.asarray(temp_c) - T_REF_C)

    def resistance_factor(self, soc: ArrayLike, temp_c: ArrayLike) -> NDArray[np.float64]:
        """Multiplier on R0, R1 and R2 relative to their 25 degC, mid-SOC values."""
        arrhenius = np.exp(
            self.arrhenius_k / (np.asarray(temp_c) + KELVIN_OFFSET)
            - self.arrhenius_k / (T_REF_C + KELVIN_OFFSET)
        )
        return np.interp(soc, *self._resistance_table) * arrhenius


# The firmware's calibration tables (V at OCV_SOC_POINTS, 25 degC): keep both in step.
# fmt: off
_NMC_OCV_V = (
    3.00, 3.40, 3.50, 3.56, 3.60, 3.63, 3.66, 3.69, 3.72, 3.75, 3.79,
    3.83, 3.87, 3.92, 3.96, 4.00, 4.04, 4.08, 4.12, 4.16, 4.20,
)
_LFP_OCV_V = (
    2.50, 3.10, 3.20, 3.24, 3.26, 3.28, 3.29, 3.295, 3.30, 3.302, 3.305,
    3.31, 3.32, 3.325, 3.33, 3.335, 3.34, 3.345, 3.36, 3.40, 3.60,
)
# fmt: on

NMC = Chemistry(
    name="NMC",
    # A 21700 high-energy cell (5 Ah class).
    capacity_ah=5.0,
    v_min_v=2.5,
    v_max_v=4.2,
    ocv_25c_v=_NMC_OCV_V,
    entropic_soc=(0.0, 0.2, 0.4, 0.6, 0.8, 1.0),
    entropic_v_per_k=(-0.40e-3, -0.20e-3, -0.10e-3, 0.0, 0.05e-3, 0.05e-3),
    r0_ohm=0.018,
    r1_ohm=0.008,
    tau1_s=10.0,
    r2_ohm=0.012,
    tau2_s=200.0,
    resistance_soc=(0.0, 0.1, 0.2, 0.3, 0.9, 1.0),
    resistance_soc_factor=(2.2, 1.5, 1.2, 1.0, 1.0, 1.1),
    arrhenius_k=3500.0,
    thermal_mass_j_per_k=70.0,
    coulombic_efficiency=0.999,
    abuse_ocv_v=(1.0, 5.0),
)
"""NMC 21700, 5 Ah, 2.5-4.2 V."""

LFP = Chemistry(
    name="LFP",
    # A 26650 power cell (2.3 Ah class): lower resistance, flat OCV plateau.
    capacity_ah=2.3,
    v_min_v=2.5,
    v_max_v=3.65,
    ocv_25c_v=_LFP_OCV_V,
    entropic_soc=(0.0, 0.5, 1.0),
    entropic_v_per_k=(-0.10e-3, -0.03e-3, -0.03e-3),
    r0_ohm=0.010,
    r1_ohm=0.004,
    tau1_s=10.0,
    r2_ohm=0.006,
    tau2_s=200.0,
    resistance_soc=(0.0, 0.1, 0.2, 0.3, 0.9, 1.0),
    resistance_soc_factor=(2.0, 1.4, 1.15, 1.0, 1.0, 1.05),
    arrhenius_k=4000.0,
    thermal_mass_j_per_k=80.0,
    coulombic_efficiency=0.9995,
    abuse_ocv_v=(1.0, 4.6),
)
"""LFP 26650, 2.3 Ah, 2.5-3.65 V."""

CHEMISTRIES = {chem.name: chem for chem in (NMC, LFP)}
"""Every chemistry by upper-case name."""


def get_chemistry(name: str) -> Chemistry:
    """Return the chemistry called ``name`` ("NMC" or "LFP", any case)."""
    try:
        return CHEMISTRIES[name.upper()]
    except KeyError:
        raise ValueError(
            f"unknown chemistry {name!r}; valid: {', '.join(sorted(CHEMISTRIES))}"
        ) from None
