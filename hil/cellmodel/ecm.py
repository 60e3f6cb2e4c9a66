"""Desktop re-simulator of a cell profile: OCV with Plett hysteresis, R0 and two RC pairs.

Used by `cellguard characterize` to report how well a fitted profile reproduces its input files,
and by tests to synthesise lab data from known parameters. (The plant in `sim/` has fixed time
constants and no hysteresis, so it cannot stand in for a profile.)

Discretisation: current sample k holds over [t_k, t_k+1) (zero-order hold); the voltage at t_k
sees the new current through R0 at once and the RC pairs only from the next sample on:

    v_k = ocv(soc_k, T_k) + hyst(soc_k, T_k) * h_k - i_k * R0 - v1_k - v2_k
    vj_k+1 = a vj_k + (1 - a) Rj i_k, a = exp(-dt / tauj)          (exact for a held current)
    h_k+1 = e h_k + (1 - e) * (-sign i_k), e = exp(-gamma |i_k dt| / 3600)
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike, NDArray

from hil.cellmodel.profiles import CellProfile

SECONDS_PER_HOUR = 3600.0


def rc_unit_response(time_s: ArrayLike, current_a: ArrayLike, tau_s: float) -> NDArray[np.float64]:
    """Voltage over an RC pair of 1 ohm and time constant `tau_s` driven by the current (ZOH)."""
    return rc_unit_responses(time_s, current_a, [tau_s])[:, 0]


def rc_unit_responses(
    time_s: ArrayLike, current_a: ArrayLike, taus_s: ArrayLike
) -> NDArray[np.float64]:
    """`rc_unit_response` for every time constant of `taus_s` at once: (samples, taus)."""
    t = np.asarray(time_s, dtype=float)
    i = np.asarray(current_a, dtype=float)
    taus = np.asarray(taus_s, dtype=float)
    a = np.exp(-np.diff(t)[:, None] / taus[None, :])
    drive = (1.0 - a) * i[:-1, None]
    out = np.empty((len(t), len(taus)))
    v = np.zeros(len(taus))
    out[0] = v
    # One pass over the samples for all time constants: the recursion is sequential in time.
    for k in range(len(a)):
        v = a[k] * v + drive[k]
        out[k + 1] = v
    return out


def soc_trajectory(
    time_s: ArrayLike,
    current_a: ArrayLike,
    capacity_ah: float,
    soc0_pct: float,
    coulombic_efficiency: float = 1.0,
) -> NDArray[np.float64]:
    """SOC (%) at each sample by coulomb counting; charge is stored at the efficiency."""
    t = np.asarray(time_s, dtype=float)
    i = np.asarray(current_a, dtype=float)[:-1]
    stored = np.where(i < 0.0, i * coulombic_efficiency, i) * np.diff(t)
    moved = np.concatenate([[0.0], np.cumsum(stored)])
    return soc0_pct - 100.0 * moved / (capacity_ah * SECONDS_PER_HOUR)


def overpotential(
    profile: CellProfile,
    time_s: ArrayLike,
    current_a: ArrayLike,
    temperature_c: ArrayLike,
    soc_pct: ArrayLike,
) -> NDArray[np.float64]:
    """i * R0 plus both RC voltages (V) along a given SOC trajectory, RC pairs starting at 0."""
    t = np.asarray(time_s, dtype=float)
    i = np.asarray(current_a, dtype=float)
    r0, r1, tau1, r2, tau2 = (
        profile.table(key, soc_pct, temperature_c)
        for key in ("r0_ohm", "r1_ohm", "tau1_s", "r2_ohm", "tau2_s")
    )
    dt = np.append(np.diff(t), 0.0)
    a1 = np.exp(-dt / tau1)
    a2 = np.exp(-dt / tau2)
    drive1 = (1.0 - a1) * r1 * i
    drive2 = (1.0 - a2) * r2 * i
    rc = np.empty(len(t))
    v1 = v2 = 0.0
    for k in range(len(t)):
        rc[k] = v1 + v2
        v1 = a1[k] * v1 + drive1[k]
        v2 = a2[k] * v2 + drive2[k]
    return i * r0 + rc


def hysteresis_state(
    time_s: ArrayLike, current_a: ArrayLike, rate_per_ah: float, h0: float
) -> NDArray[np.float64]:
    """Plett's hysteresis state (-1 discharge branch .. +1 charge branch) at every sample."""
    t = np.asarray(time_s, dtype=float)
    i = np.asarray(current_a, dtype=float)
    dt = np.append(np.diff(t), 0.0)
    e = np.exp(-rate_per_ah * np.abs(i * dt) / SECONDS_PER_HOUR)
    step = (1.0 - e) * -np.sign(i)
    out = np.empty(len(t))
    h = h0
    for k in range(len(t)):
        out[k] = h
        h = e[k] * h + step[k]
    return out


def hysteresis_free(
    profile: CellProfile,
    time_s: ArrayLike,
    current_a: ArrayLike,
    temperature_c: ArrayLike,
    soc0_pct: float,
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """SOC (%), the voltage without hysteresis (V) and the hysteresis table (V) along a current
    profile: the parts of `simulate` that do not depend on the hysteresis state."""
    t = np.asarray(time_s, dtype=float)
    i = np.asarray(current_a, dtype=float)
    temp = np.broadcast_to(np.asarray(temperature_c, dtype=float), t.shape)
    soc = soc_trajectory(t, i, profile.capacity_ah, soc0_pct, profile.coulombic_efficiency)
    volts = profile.table("ocv_v", soc, temp) - overpotential(profile, t, i, temp, soc)
    return soc, volts, profile.table("hysteresis_v", soc, temp)


def simulate(
    profile: CellProfile,
    time_s: ArrayLike,
    current_a: ArrayLike,
    temperature_c: ArrayLike,
    soc0_pct: float,
    h0: float = 0.0,
) -> NDArray[np.float64]:
    """Terminal voltage (V) of `profile` along a current profile, from rest at `soc0_pct`."""
    _, volts, hyst = hysteresis_free(profile, time_s, current_a, temperature_c, soc0_pct)
    h = hysteresis_state(time_s, current_a, profile.hysteresis_rate_per_ah, h0)
    return volts + hyst * h


def rms_mv(a: ArrayLike, b: ArrayLike) -> float:
    """Root-mean-square difference of two voltage series, in mV."""
    diff = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    return 1000.0 * math.sqrt(float(np.mean(diff**2)))
