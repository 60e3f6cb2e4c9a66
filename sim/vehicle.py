"""Longitudinal vehicle model and the bundled drive cycles.

Battery power is in watts, positive = discharge. The simulated pack is far smaller than a
vehicle's (16 NMC cells hold about 0.3 kWh), so ``Vehicle.pack_power_w`` scales the vehicle's
battery power by ``pack energy / reference_pack_kwh``: the small pack then sees the C-rates of a
real EV whose pack holds ``reference_pack_kwh`` (60 kWh by default).

``VcuRequests`` is the vehicle's control unit as the BMS sees it on CAN: its VCU_Request frames.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

import numpy as np
from crccheck.crc import Crc8SaeJ1850
from numpy.typing import ArrayLike, NDArray

GRAVITY_M_S2 = 9.81
_KMH_PER_MPS = 3.6

_CYCLES = {"wltc": ("wltc-class3b.csv", 1800), "nedc": ("nedc.csv", 1180)}
DRIVE_CYCLES = tuple(_CYCLES)
"""Names accepted by ``load_drive_cycle``."""


@dataclass(frozen=True)
class Vehicle:
    """A mid-size battery-electric car."""

    mass_kg: float = 1900.0
    """Test mass including the equivalent mass of rotating parts."""
    cda_m2: float = 0.62
    crr: float = 0.009
    drivetrain_efficiency: float = 0.88
    """Battery to wheel, while driving."""
    regen_efficiency: float = 0.65
    """Wheel to battery, while braking (the rest goes to the friction brakes and losses)."""
    regen_limit_w: float = 60_000.0
    """Largest charging power regenerative braking puts into the battery."""
    aux_power_w: float = 400.0
    air_density_kg_m3: float = 1.2
    reference_pack_kwh: float = 60.0

    def battery_power_w(self, speed_mps: ArrayLike, dt_s: float = 1.0) -> NDArray[np.float64]:
        """Battery power (W, + = discharge) over each interval [k, k+1) of a speed profile.

        The speed is taken to change linearly between samples and to hold after the last one.
        """
        speed = np.asarray(speed_mps, dtype=float)
        following = np.append(speed[1:], speed[-1])
        mean_speed = (speed + following) / 2
        accel = (following - speed) / dt_s
        rolling = np.where(mean_speed > 0.0, self.crr * self.mass_kg * GRAVITY_M_S2, 0.0)
        drag = 0.5 * self.air_density_kg_m3 * self.cda_m2 * mean_speed**2
        wheel_w = (self.mass_kg * accel + drag + rolling) * mean_speed
        traction_w = wheel_w / self.drivetrain_efficiency
        regen_w = np.maximum(wheel_w * self.regen_efficiency, -self.regen_limit_w)
        return np.where(wheel_w >= 0.0, traction_w, regen_w) + self.aux_power_w

    def pack_power_w(
        self, speed_mps: ArrayLike, pack_energy_wh: float, dt_s: float = 1.0
    ) -> NDArray[np.float64]:
        """Battery power scaled to a pack of ``pack_energy_wh`` (see the module docstring)."""
        scale = pack_energy_wh / (self.reference_pack_kwh * 1000.0)
        return self.battery_power_w(speed_mps, dt_s) * scale


def load_drive_cycle(name: str) -> NDArray[np.float64]:
    """Speed (m/s) of drive cycle ``name`` ("wltc" class 3b or "nedc"), 1 Hz from t = 0.

    Returns one sample per second of the cycle's duration (WLTC 1800, NEDC 1180): samples at
    t = 0..duration-1, so that repeats tile without doubling the end point.
    """
    key = name.lower()
    if key not in _CYCLES:
        raise ValueError(f"unknown drive cycle {name!r}; valid: {', '.join(DRIVE_CYCLES)}")
    filename, duration_s = _CYCLES[key]
    lines = (files("sim") / "data" / filename).read_text().splitlines()
    rows = [line for line in lines if line and not line.startswith("#")]
    table = np.loadtxt(rows[1:], delimiter=",", ndmin=2)
    table = table[table[:, 0] < duration_s]
    if not np.array_equal(table[:, 0], np.arange(duration_s)):
        raise ValueError(f"{filename} is not a 1 Hz profile covering 0..{duration_s} s")
    return table[:, 1] / _KMH_PER_MPS


class VcuRequests:
    """The vehicle control unit's VCU_Request frames (dbc/cellguard.dbc, docs/security.md): the
    request bits, an alive counter advancing by 1 mod 16, the low 16 bits of its freshness value,
    a 4-byte MAC and the E2E CRC-8 SAE J1850 over the data ID and bytes 0..6. CRC and MAC come
    from crccheck and Python's `hmac`, implementations independent of the firmware's.

    The freshness value never repeats: with `freshness_file` it is kept across VCU restarts the
    way a VCU keeps it in non-volatile memory, a block of `BLOCK` values reserved ahead (the file
    holds where the next start begins), so a restart skips forward and never reuses a value.
    Without `key` the frames carry no valid MAC: the BMS takes none of them.

    Usage:
        vcu = VcuRequests(key, Path("vcu_freshness"))
        can_id, data = VCU_REQUEST_ID, vcu.frame(close=True)
    """

    DATA_ID = bytes((0x00, 0x03))
    """E2E data ID of VCU_Request: its CAN id 0x300, low byte first."""
    BLOCK = 1024
    """Freshness values reserved per write of the freshness file (below the BMS's window)."""

    def __init__(self, key: bytes | None = None, freshness_file: Path | None = None) -> None:
        self.key = key
        self.alive = 0
        self._file = freshness_file
        self.freshness = 0
        self._reserved = 0
        if freshness_file is not None and freshness_file.exists():
            self.freshness = int(freshness_file.read_text())
        self._reserve()

    def _reserve(self) -> None:
        self._reserved = self.freshness + self.BLOCK
        if self._file is not None:
            self._file.write_text(f"{self._reserved}\n")

    @staticmethod
    def crc(frame: bytes | bytearray) -> int:
        """The E2E CRC of a frame's bytes 0..6."""
        return int(Crc8SaeJ1850.calc(VcuRequests.DATA_ID + bytes(frame[:7])))

    def mac(self, byte0: int, freshness: int) -> bytes:
        """The 4-byte MAC of a request byte and a full freshness value (zeros without a key)."""
        if self.key is None:
            return bytes(4)
        msg = b"\x03" + self.DATA_ID + bytes((byte0,)) + freshness.to_bytes(4, "big")
        return hmac.new(self.key, msg, hashlib.sha256).digest()[:4]

    def frame(self, close: bool, fault_reset: bool = False, charge: bool = False) -> bytes:
        """The next request: a fresh alive counter and freshness value, its MAC and its CRC."""
        self.alive = (self.alive + 1) & 15
        self.freshness += 1
        if self.freshness >= self._reserved:
            self._reserve()
        return self.sign(close, fault_reset, charge, self.alive, self.freshness)

    def sign(
        self, close: bool, fault_reset: bool, charge: bool, alive: int, freshness: int
    ) -> bytes:
        """A request with the given counter and freshness value (a test's or an attacker's)."""
        buf = bytearray(8)
        buf[0] = int(close) | int(fault_reset) << 1 | int(charge) << 2 | (alive & 15) << 4
        buf[1] = freshness & 0xFF
        buf[2] = (freshness >> 8) & 0xFF
        buf[3:7] = self.mac(buf[0], freshness)
        buf[7] = self.crc(buf)
        return bytes(buf)
