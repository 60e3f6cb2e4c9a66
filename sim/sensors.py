"""Measurement chain: noise, offsets and quantisation into the firmware's integer units.

Units of ``Measurement`` (see docs/ARCHITECTURE.md): cell, pack and link voltage mV, temperature
0.1 degC ("dC"), current mA with positive = discharge. One temperature sensor per cell.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike, NDArray

from sim.pack import Pack

_MILLI = 1e-3
_DECI = 0.1


@dataclass(frozen=True, eq=False)
class Measurement:
    """One sample of everything the BMS measures, in firmware integer units.

    Compared by identity: element-wise array equality has no single truth value.
    """

    cell_mv: NDArray[np.int64]
    temp_dc: NDArray[np.int64]
    current_ma: int
    """Pack current (mA), positive = discharge."""
    pack_mv: int
    """Battery-side pack voltage (mV)."""
    link_mv: int
    """Load-side DC-link voltage (mV)."""
    current2_ma: int = 0
    """Second pack current sensor (hall, next to the shunt), mA, positive = discharge."""
    feedback: int = 0
    """Contactor feedback contacts: bit 0 negative, 1 precharge, 2 positive (1 = closed)."""


def _quantise(value: ArrayLike, lsb: float, unit: float) -> NDArray[np.int64]:
    """Round ``value`` (SI) to the ADC step ``lsb`` and express it as integers of ``unit``."""
    return np.rint(np.rint(np.asarray(value) / lsb) * (lsb / unit)).astype(np.int64)


@dataclass
class SensorModel:
    """Noisy, offset and quantised sensors; all sigmas and steps in SI units (V, degC, A).

    Per-cell voltage offsets are drawn once, on the first ``measure``, so a model belongs to
    one pack size. Sense lines are shared with the bleed path (one line between neighbouring
    cells, ``sense_line_ohm`` each): a bleeding cell's current flows through both of its lines,
    so it reads low by ``2 * sense_line_ohm * bleed current`` and each neighbour, sharing one of
    them, reads high by ``sense_line_ohm * bleed current``. The default 0.25 ohm per line (a thin
    harness wire plus its connector and filter resistor) gives about -55 mV and +27 mV at 0.11 A.
    """

    cell_noise_v: float = 1e-3
    cell_offset_sigma_v: float = 0.5e-3
    cell_lsb_v: float = 1e-3
    sense_line_ohm: float = 0.25
    temp_noise_c: float = 0.2
    temp_lsb_c: float = 0.1
    current_noise_a: float = 0.020
    current_offset_a: float = 0.010
    current_lsb_a: float = 1e-3
    current2_offset_a: float = 0.050
    """Offset of the second (hall) current sensor; noise-free so the first sensor's random
    stream, and with it every seeded run, stays as it was."""
    pack_noise_v: float = 0.050
    pack_lsb_v: float = 0.010
    seed: int | None = None
    _rng: np.random.Generator = field(init=False, repr=False, compare=False)
    _cell_offset_v: NDArray[np.float64] | None = field(
        init=False, repr=False, compare=False, default=None
    )

    def __post_init__(self) -> None:
        lsbs = (self.cell_lsb_v, self.temp_lsb_c, self.current_lsb_a, self.pack_lsb_v)
        if min(lsbs) <= 0.0:
            raise ValueError("quantisation steps must be > 0")
        self._rng = np.random.default_rng(self.seed)

    def measure(self, pack: Pack) -> Measurement:
        """Sample ``pack`` once."""
        n = pack.n_cells
        if self._cell_offset_v is None:
            self._cell_offset_v = self._rng.normal(0.0, self.cell_offset_sigma_v, n)
        elif self._cell_offset_v.shape != (n,):
            raise ValueError(f"sensor model drawn for {self._cell_offset_v.size} cells, not {n}")
        rng = self._rng
        bleed_a = pack.bleed_current_a
        line_drop_a = -2.0 * bleed_a
        line_drop_a[1:] += bleed_a[:-1]
        line_drop_a[:-1] += bleed_a[1:]
        cell_v = (
            pack.cell_voltage_v
            + line_drop_a * self.sense_line_ohm
            + self._cell_offset_v
            + rng.normal(0.0, self.cell_noise_v, n)
        )
        temp_c = pack.temperature_c + rng.normal(0.0, self.temp_noise_c, n)
        current_a = pack.current_a + self.current_offset_a + rng.normal(0.0, self.current_noise_a)
        # ADCs cannot read below zero volts.
        rails_v = np.maximum(
            [pack.pack_voltage_v, pack.link_voltage_v] + rng.normal(0.0, self.pack_noise_v, 2), 0.0
        )
        rails_mv = _quantise(rails_v, self.pack_lsb_v, _MILLI)
        return Measurement(
            cell_mv=_quantise(np.maximum(cell_v, 0.0), self.cell_lsb_v, _MILLI),
            temp_dc=_quantise(temp_c, self.temp_lsb_c, _DECI),
            current_ma=int(_quantise(current_a, self.current_lsb_a, _MILLI)),
            pack_mv=int(rails_mv[0]),
            link_mv=int(rails_mv[1]),
            current2_ma=int(
                _quantise(pack.current_a + self.current2_offset_a, self.current_lsb_a, _MILLI)
            ),
            feedback=sum(int(c) << k for k, c in enumerate(pack.contactors)),
        )
