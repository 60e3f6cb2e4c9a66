"""Series string of cells with contactors, precharge, DC link and passive balancing.

Sign convention: every current is in amperes, positive = discharge (out of the pack or cell).
Outputs (voltages, bleed currents, ``current_a``) describe the pack at the end of the last
``step``; commands (contactors, balancing) take effect in the next ``step``.

Per cell ``i`` during a step, with the pack current ``I`` and the bleed current ``Ib_i``:

- ``I + Ib_i`` flows through the terminals (R0 and the RC pairs); the leakage current models
  self-discharge inside the cell and bypasses them.
- stored charge falls by ``(I + Ib_i + leak_i) * dt``, times the coulombic efficiency when that
  net current charges the cell.
- heat: ``(I + Ib_i)^2 R0 + sum_k v_rck^2 / Rk + share * Ib_i^2 * R_bleed``; each cell exchanges
  heat with its chain neighbours and with ambient (more while cooling is on; a heater adds
  ``heater_w`` per cell while heating is on).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from sim.cells import get_chemistry

MAX_CELLS = 192
"""Largest string the CAN contract can carry."""

_SECONDS_PER_HOUR = 3600.0
_THERMAL_STEP_LIMIT = 0.5
"""Largest explicit thermal sub-step as a share of the fastest thermal time constant: below 1
the explicit update cannot overshoot, so temperatures never oscillate whatever ``dt``."""


@dataclass(frozen=True)
class PackConfig:
    """Construction parameters of a ``Pack``; per-cell spreads are drawn from ``seed``."""

    chemistry: str = "NMC"
    n_cells: int = 16
    capacity_sigma: float = 0.02
    """Relative standard deviation of cell capacity."""
    resistance_sigma: float = 0.05
    """Relative standard deviation of cell resistance (R0, R1, R2 together)."""
    soc_mean: float = 0.9
    soc_sigma: float = 0.01
    leak_max_a: float = 0.5e-3
    """Self-discharge current of each cell, drawn uniformly from 0..leak_max_a."""
    ambient_c: float = 25.0
    neighbour_w_per_k: float = 0.5
    """Thermal conductance between adjacent cells of the chain."""
    ambient_w_per_k: float = 0.1
    """Thermal conductance from each cell to ambient."""
    bleed_ohm: float = 33.0
    bleed_heat_share: float = 0.2
    """Share of the bleed resistor's heat that ends up in its cell."""
    cooling_w_per_k: float = 0.2
    """Extra conductance from each cell to ambient while the cooling output is on."""
    heater_w: float = 2.0
    """Heater power into each cell while the heating output is on."""
    precharge_ohm: float = 20.0
    link_capacitance_f: float = 0.005
    """DC-link capacitance: with 20 ohm precharge, tau = 0.1 s and 95 % after 0.3 s."""
    link_discharge_ohm: float = 10_000.0
    """Passive discharge resistor across the DC link (always connected)."""
    seed: int | None = 0

    def __post_init__(self) -> None:
        get_chemistry(self.chemistry)
        if not 1 <= self.n_cells <= MAX_CELLS:
            raise ValueError(f"n_cells must be in 1..{MAX_CELLS}, got {self.n_cells}")
        if not 0.0 <= self.soc_mean <= 1.0 or not 0.0 <= self.bleed_heat_share <= 1.0:
            raise ValueError("soc_mean and bleed_heat_share must be in 0..1")
        spreads = (self.capacity_sigma, self.resistance_sigma, self.soc_sigma, self.leak_max_a)
        if min(*spreads, self.neighbour_w_per_k, self.ambient_w_per_k) < 0.0:
            raise ValueError("spreads, leakage and thermal conductances must be >= 0")
        circuit = (self.bleed_ohm, self.precharge_ohm, self.link_discharge_ohm)
        if min(*circuit, self.link_capacitance_f) <= 0.0:
            raise ValueError("resistances and the link capacitance must be > 0")


def _spread(rng: np.random.Generator, sigma: float, n: int) -> NDArray[np.float64]:
    # Clipped so that a large sigma cannot produce zero or negative capacities or resistances.
    return np.clip(rng.normal(1.0, sigma, n), 0.5, 1.5)


class Pack:
    """Plant model of a series string; per-cell state lives in numpy arrays."""

    def __init__(self, config: PackConfig | None = None) -> None:
        cfg = config or PackConfig()
        self.config = cfg
        self.chemistry = get_chemistry(cfg.chemistry)
        chem = self.chemistry
        n = cfg.n_cells
        rng = np.random.default_rng(cfg.seed)
        self.capacity_ah: NDArray[np.float64] = chem.capacity_ah * _spread(
            rng, cfg.capacity_sigma, n
        )
        """Per-cell capacity (Ah)."""
        self.resistance_scale: NDArray[np.float64] = _spread(rng, cfg.resistance_sigma, n)
        """Per-cell multiplier on the chemistry's resistances."""
        self.leak_a: NDArray[np.float64] = rng.uniform(0.0, cfg.leak_max_a, n)
        """Per-cell self-discharge current (A)."""
        # Charge as a fraction of the cell's capacity; leaves 0..1 only under abuse.
        self._charge = np.clip(rng.normal(cfg.soc_mean, cfg.soc_sigma, n), 0.0, 1.0)
        self._v_rc = np.zeros((2, n))
        self._temp = np.full(n, float(cfg.ambient_c))
        self._r0_base = chem.r0_ohm * self.resistance_scale
        self._rc_ratio = np.array([[chem.r1_ohm], [chem.r2_ohm]]) / chem.r0_ohm
        self._tau_s = np.array([[chem.tau1_s], [chem.tau2_s]])
        self._soc_per_coulomb = 1.0 / (self.capacity_ah * _SECONDS_PER_HOUR)
        self._thermal_rate = (
            2.0 * cfg.neighbour_w_per_k + cfg.ambient_w_per_k
        ) / chem.thermal_mass_j_per_k
        self._bleed_on = np.zeros(n)
        # Fault-injection hooks (sim.faults sets them before each step; zero = healthy): current
        # drawn inside each cell past its terminals (an internal short, A) and heat (W).
        self.fault_leak_a: NDArray[np.float64] = np.zeros(n)
        self.fault_heat_w: NDArray[np.float64] = np.zeros(n)
        self._neg = self._pre = self._pos = False
        self._cooling = self._heating = False
        self._current = 0.0
        self._link_v = 0.0
        self._refresh()

    # -- commands -------------------------------------------------------------------------

    def set_contactors(self, neg: bool, pre: bool, pos: bool) -> None:
        """Set the negative, precharge and positive contactors (True = closed)."""
        self._neg, self._pre, self._pos = bool(neg), bool(pre), bool(pos)

    def set_thermal(self, cooling: bool, heating: bool) -> None:
        """Switch the cooling (more heat transfer to ambient) and the heater (power into every
        cell) on or off."""
        self._cooling, self._heating = bool(cooling), bool(heating)

    def set_balancing(self, mask: ArrayLike) -> None:
        """Switch each cell's bleed resistor on (True) or off; one entry per cell."""
        on = np.asarray(mask, dtype=bool)
        if on.shape != self._bleed_on.shape:
            raise ValueError(f"balancing mask needs shape {self._bleed_on.shape}, got {on.shape}")
        self._bleed_on = on.astype(float)

    # -- simulation -----------------------------------------------------------------------

    def step(self, dt_s: float, load_current_a: float) -> None:
        """Advance ``dt_s`` seconds while the load draws ``load_current_a`` (A, + = discharge).

        The pack carries the load current only while the negative and positive contactors are
        both closed. RC pairs use the exact exponential solution for a current held over the
        step and the thermal network sub-steps, so any ``dt_s`` is stable.
        """
        if dt_s <= 0.0:
            raise ValueError(f"dt_s must be > 0, got {dt_s}")
        current = float(load_current_a) if self._neg and self._pos else 0.0
        self._current = current
        bleed = self._bleed_current(current)
        cell_current = current + bleed
        net = cell_current + self.leak_a + self.fault_leak_a
        efficiency = self.chemistry.coulombic_efficiency
        stored = np.where(net < 0.0, efficiency * net, net)
        self._charge -= stored * (dt_s * self._soc_per_coulomb)

        ohmic_v = cell_current * self._r0
        decay = np.exp(-dt_s / self._tau_s)
        self._v_rc *= decay
        self._v_rc += ((1.0 - decay) * self._rc_ratio) * ohmic_v

        bleed_heat = (self.config.bleed_heat_share * self.config.bleed_ohm) * bleed**2
        rc_heat = (self._v_rc**2 / self._rc_ratio).sum(axis=0) / self._r0
        heat = cell_current * ohmic_v + rc_heat + bleed_heat + self.fault_heat_w
        self._advance_temperature(dt_s, heat)
        self._refresh()
        self._advance_link(dt_s)

    def _bleed_current(self, current: float) -> NDArray[np.float64]:
        # The bleed resistor sits across the cell terminals: Ib = (E - (I + Ib) R0) / R_bleed.
        divider = self._r0 + self.config.bleed_ohm
        return self._bleed_on * (self._emf - current * self._r0) / divider

    def _advance_temperature(self, dt_s: float, heat_w: NDArray[np.float64]) -> None:
        cfg = self.config
        cooling = cfg.cooling_w_per_k if self._cooling else 0.0
        to_ambient = cfg.ambient_w_per_k + cooling
        if self._heating:
            heat_w = heat_w + cfg.heater_w
        rate = self._thermal_rate + cooling / self.chemistry.thermal_mass_j_per_k
        substeps = max(1, math.ceil(dt_s * rate / _THERMAL_STEP_LIMIT))
        gain = dt_s / substeps / self.chemistry.thermal_mass_j_per_k
        temp = self._temp
        for _ in range(substeps):
            flow = to_ambient * (cfg.ambient_c - temp) + heat_w
            to_next = cfg.neighbour_w_per_k * np.diff(temp)
            flow[:-1] += to_next
            flow[1:] -= to_next
            temp += gain * flow

    def _refresh(self) -> None:
        """Recompute resistances, EMF, bleed current and terminal voltages from the state."""
        chem = self.chemistry
        self._r0 = self._r0_base * chem.resistance_factor(self._charge, self._temp)
        self._emf = chem.ocv_v(self._charge, self._temp) - self._v_rc.sum(axis=0)
        self._bleed_a = self._bleed_current(self._current)
        self._cell_v = self._emf - (self._current + self._bleed_a) * self._r0
        self._pack_v = float(self._cell_v.sum())

    def _advance_link(self, dt_s: float) -> None:
        cfg = self.config
        if self._neg and self._pos:
            self._link_v = self._pack_v
            return
        if self._neg and self._pre:
            # Precharge resistor and discharge resistor form a divider feeding the capacitor.
            divider = cfg.link_discharge_ohm / (cfg.link_discharge_ohm + cfg.precharge_ohm)
            target = self._pack_v * divider
            tau = cfg.link_capacitance_f * cfg.precharge_ohm * divider
        else:
            target = 0.0
            tau = cfg.link_capacitance_f * cfg.link_discharge_ohm
        self._link_v = target + (self._link_v - target) * math.exp(-dt_s / tau)

    # -- outputs --------------------------------------------------------------------------

    @property
    def contactors(self) -> tuple[bool, bool, bool]:
        """The actual negative, precharge and positive contactor states (True = closed)."""
        return self._neg, self._pre, self._pos

    @property
    def thermal(self) -> tuple[bool, bool]:
        """The cooling and heating outputs as applied (True = on)."""
        return self._cooling, self._heating

    @property
    def n_cells(self) -> int:
        """Number of cells in series."""
        return self.config.n_cells

    @property
    def current_a(self) -> float:
        """Pack current (A, + = discharge) of the last step: 0 unless neg and pos are closed."""
        return self._current

    @property
    def cell_voltage_v(self) -> NDArray[np.float64]:
        """Terminal voltage of each cell (V)."""
        return self._cell_v.copy()

    @property
    def pack_voltage_v(self) -> float:
        """Battery-side pack voltage (V): the sum of the cell terminal voltages."""
        return self._pack_v

    @property
    def link_voltage_v(self) -> float:
        """Load-side DC-link voltage (V)."""
        return self._link_v

    @property
    def ocv_v(self) -> NDArray[np.float64]:
        """Open-circuit voltage of each cell (V)."""
        return self.chemistry.ocv_v(self._charge, self._temp)

    @property
    def rc_voltage_v(self) -> NDArray[np.float64]:
        """Voltages of the two RC pairs (V), shape (2, n_cells); positive while discharging."""
        return self._v_rc.copy()

    @property
    def bleed_current_a(self) -> NDArray[np.float64]:
        """Current through each cell's bleed resistor (A); 0 where balancing is off."""
        return self._bleed_a.copy()

    @property
    def internal_resistance_ohm(self) -> float:
        """Sum of the cells' present ohmic resistances R0 (ohm)."""
        return float(self._r0.sum())

    @property
    def temperature_c(self) -> NDArray[np.float64]:
        """Temperature of each cell (degC)."""
        return self._temp.copy()

    @property
    def soc(self) -> NDArray[np.float64]:
        """State of charge of each cell, 0..1 of its own capacity (clamped under abuse)."""
        return np.clip(self._charge, 0.0, 1.0)

    @property
    def stored_charge_ah(self) -> NDArray[np.float64]:
        """Charge held by each cell (Ah), unclamped: abuse charge is counted too."""
        return self._charge * self.capacity_ah

    @property
    def mean_soc(self) -> float:
        """Capacity-weighted mean SOC: total stored charge over total capacity."""
        return float(self.soc @ self.capacity_ah / self.capacity_ah.sum())

    @property
    def pack_soc(self) -> float:
        """Usable SOC of the series string, 0..1.

        A series string stops discharging when its emptiest cell is empty and stops charging
        when its fullest cell is full, so with ``D = min(soc_i * C_i)`` (Ah still dischargeable)
        and ``U = min((1 - soc_i) * C_i)`` (Ah still chargeable), pack SOC = ``D / (D + U)``:
        0 as soon as any cell is empty, 1 as soon as any cell is full.
        """
        soc = self.soc
        dischargeable = float(np.min(soc * self.capacity_ah))
        chargeable = float(np.min((1.0 - soc) * self.capacity_ah))
        window = dischargeable + chargeable
        return dischargeable / window if window > 0.0 else 0.0

    @property
    def energy_wh(self) -> float:
        """Nominal energy (Wh): total capacity times the chemistry's mean OCV."""
        return float(self.capacity_ah.sum()) * self.chemistry.nominal_voltage_v
