"""`cellguard characterize`: fit a cell profile from C/20 and HPPC lab traces.

Inputs (`LabFile`): HPPC tests that start full, at one or more test temperatures, and a C/20
discharge from full to the minimum voltage plus a C/20 charge (CC, or CC-CV) at one temperature
at least (labs measure OCV once, at 25 degC). A file's test temperature is the one declared
(`--temperature`) or, undeclared, the median of the files whose median temperatures chain within
`CLUSTER_C` (never a rounded median). The cell rests below `REST_A_PER_AH` (C/50), for
`MIN_EVENT_SAMPLES` in a row: a current sensor's noise neither splits a rest nor makes pulses.

1. capacity: charge delivered by the C/20 discharge until the voltage first reaches the minimum;
   that temperature's SOC axis runs over it (100 % at the start of the discharge). A temperature
   without its own C/20 pair takes the nearest pair's capacity and OCV. The profile's
   `capacity_ah` is the pair's closest to 25 degC.
2. HPPC: SOC by coulomb counting from 100 %. The current splits into events and rests; an event
   longer than `PULSE_MAX_S` (a SOC step) opens a group that holds it, its rest and the pulses
   (discharge-only sets or both directions) and rests that follow. If the group has a rest of
   `LONG_REST_S` or more, R0 and two RC pairs are fitted to every logged sample of the group,
   loaded or at rest (`_fit_window`): on a grid of time constants, a weighted linear least-squares
   fit of a local OCV (a parabola in SOC, plus the hysteresis state where pulses in both
   directions move it), R0 times the current and R1 and R2 times the RC pairs' unit responses to
   the whole current history. The SOC step's own samples enter if it spans `STEP_SPAN_PCT` or
   less (the HPPC's one sustained load). Each pulse and its rest weigh alike whatever the
   current (weights 1 / I^2), and voltages a converter held between sparse log points
   (`_logged`) are left out. Fitting rests alone would let a 10 s pulse's slow diffusion tail
   fit a slow pair of 0.1-1.3 ohm (NCR18650PF), several times what a sustained load shows. A
   group without a long rest keeps the previous group's RC pairs and fits R0 from its current
   steps. The group's values belong to its SOC at the first pulse.
3. OCV: each C/20 branch corrected for its overpotential (the fitted R0 and RC pairs re-simulated
   along it), then the increasing table values whose linear interpolation fits it best
   (`_spline_fit`). Above the SOC a CC charge reaches, the charge branch runs straight to the
   rested voltage the C/20 discharge starts from (a measurement of the charge branch at 100 %).
   OCV is the mean of the branches, hysteresis half the charge-minus-discharge gap (>= 0). The
   measured OCV itself (local fits at the table points) must increase.
4. coulombic efficiency: C/20 discharge capacity over the charge the C/20 charge put in (capped at
   1; a CC-only charge that stops at the maximum voltage therefore leaves it at 1).
5. hysteresis rate: the value of `HYSTERESIS_RATES` whose re-simulation fits all files best.

Named sanity rules refuse a fit (`_sanity`): OCV increasing and within the cell's voltage limits
(OCV + hysteresis too), OCV + hysteresis at 100 % within `FULL_TOLERANCE_V` of the rested full
voltage, and the OCV reproducing its own C/20 files between SOC 10 and 90 % (`max_residual_mv`).
Every input file is re-simulated with the profile (`hil.cellmodel.ecm`); its RMS voltage
residual over the file, between SOC 10 and 90 % and per SOC band goes to the profile's "fit"
block: an HPPC's residual (tens of mV for 6C pulses in the cold) is reported, not refused, since
it says how far the voltage can be trusted there, not that the tables are wrong.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import lsq_linear

from hil.cellmodel.ecm import (
    SECONDS_PER_HOUR,
    hysteresis_free,
    hysteresis_state,
    overpotential,
    rc_unit_responses,
    rms_mv,
    soc_trajectory,
)
from hil.cellmodel.profiles import SOC_GRID_PCT, CellProfile
from hil.cellmodel.traces import Trace, read_trace

LONG_REST_S = 300.0
"""A rest at least this long lets a group's relaxation separate the slow RC pair."""
MIN_REST_SAMPLES = 5
"""Shortest rest whose relaxation enters the RC fit."""
PULSE_MAX_S = 60.0
"""Events up to this long are pulses: their current steps give R0."""
LOCAL_WINDOW_PCT = 0.5
"""Half-width (SOC %-points) of the local fit that checks the measured OCV rises."""
MIN_OCV_STEP_V = 1e-4
"""Smallest rise of a fitted OCV branch between table points (V): the table must increase."""
SPLINE_SMOOTHING = 1.0
"""Weight of the second-difference rows in the OCV table fit (one row weighs one sample)."""
LIMIT_TOLERANCE_V = 0.005
"""How close to the voltage limit a C/20 test must come to count as full (V)."""
TAU1_GRID_S = np.geomspace(1.0, 60.0, 25)
TAU2_GRID_S = np.geomspace(20.0, 3000.0, 25)
"""Time-constant grids (s) of the RC fit: 19 % and 23 % per step."""
HYSTERESIS_RATES = (1.0, 3.0, 10.0, 30.0, 100.0, 300.0)
"""Candidate hysteresis rates (1/Ah), tried by re-simulation."""
MIN_EFFICIENCY = 0.9
CLUSTER_C = 3.0
"""Undeclared files whose median temperatures chain within this (degC) are one test temperature
(a chamber at 25 degC logs a case at 25-27 degC, more under load)."""
REST_A_PER_AH = 0.02
"""Current (A per Ah: C/50) below which the cell rests: four sigma of a 0.5 %-of-1C noise."""
MIN_EVENT_SAMPLES = 3
"""Fewest consecutive samples above the rest current that make an event (not a noise spike)."""
FULL_TOLERANCE_V = 0.015
"""OCV at 100 % (charge branch) must lie this close to the rested full voltage the C/20
discharge starts from."""
DEFAULT_MAX_RESIDUAL_MV = 25.0
"""Largest RMS residual (mV) the OCV may leave on its own C/20 files between `INTERIOR_SOC_PCT`."""
INTERIOR_SOC_PCT = (10.0, 90.0)
MAX_TABLE = {"r0_ohm": 0.65, "r1_ohm": 0.65, "r2_ohm": 0.65, "tau1_s": 6500.0, "tau2_s": 6500.0}
"""Largest table values the firmware's profile format holds (firmware/profile.py: 16 bits of
10 micro-ohm and 0.1 s): the slow pair of a cold cell near empty fits more (1.3 ohm at -20 degC
on the NCR18650PF), and is clamped there."""
SOC_BANDS_PCT = (0.0, 10.0, 30.0, 50.0, 70.0, 90.0, 100.0)
"""SOC bands of the residual report."""


class CharacterizeError(ValueError):
    """Lab data that cannot be fitted; the message names the file and the rule it breaks."""


KINDS = ("C/20 discharge", "C/20 charge", "HPPC")
"""The lab tests characterize takes."""


@dataclass(frozen=True)
class LabFile:
    """One lab test: its kind (`KINDS`), trace and declared test temperature (None: undeclared)."""

    kind: str
    trace: Trace
    temperature_c: float | None = None


@dataclass(frozen=True)
class TemperatureSet:
    """The tests at one temperature: always an HPPC; the C/20 pair where the lab ran one."""

    temperature_c: float
    hppc: Trace
    discharge: Trace | None = None
    charge: Trace | None = None


@dataclass(frozen=True)
class PulseFit:
    """Fitted resistances of one HPPC group."""

    soc_pct: float
    r0_ohm: float
    r1_ohm: float
    tau1_s: float
    r2_ohm: float
    tau2_s: float


def _runs(mask: NDArray[np.bool_]) -> list[tuple[int, int]]:
    """[start, end) index ranges where `mask` is true."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(int), [0]])))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


def _clusters(files: Sequence[LabFile]) -> list[tuple[float, list[LabFile]]]:
    """Declared temperatures as declared; undeclared files joined to a declared temperature
    within `CLUSTER_C`, else clustered among themselves (medians chained within `CLUSTER_C`),
    the cluster's temperature the median of its files' medians. Never rounded."""
    groups: dict[float, list[LabFile]] = {}
    for f in files:
        if f.temperature_c is not None:
            groups.setdefault(float(f.temperature_c), []).append(f)
    loose = sorted((f for f in files if f.temperature_c is None), key=lambda f: f.trace.temperature)
    chains: list[list[LabFile]] = []
    for f in loose:
        declared = [t for t in groups if abs(t - f.trace.temperature) <= CLUSTER_C]
        if declared:
            groups[min(declared, key=lambda t: abs(t - f.trace.temperature))].append(f)
        elif chains and f.trace.temperature - chains[-1][-1].trace.temperature <= CLUSTER_C:
            chains[-1].append(f)
        else:
            chains.append([f])
    for chain in chains:
        temp = float(np.median([f.trace.temperature for f in chain]))
        groups.setdefault(temp, []).extend(chain)
    return sorted(groups.items())


def group_tests(files: Sequence[LabFile]) -> list[TemperatureSet]:
    """The tests per temperature (`_clusters`); refuses, naming the files: a temperature without
    an HPPC, two tests of one kind at one temperature, half a C/20 pair, no C/20 pair at all."""
    if not files:
        raise CharacterizeError("no input files")
    sets = []
    for temp, members in _clusters(files):
        names = ", ".join(f"{f.trace.path} ({f.kind})" for f in members)
        found: dict[str, Trace] = {}
        for f in members:
            if f.kind in found:
                raise CharacterizeError(
                    f"more than one {f.kind} file at {temp:g} degC: {found[f.kind].path}, "
                    f"{f.trace.path} (declare each file's temperature with --temperature)"
                )
            found[f.kind] = f.trace
        if "HPPC" not in found:
            raise CharacterizeError(f"no HPPC file at {temp:g} degC (files there: {names})")
        if ("C/20 discharge" in found) != ("C/20 charge" in found):
            missing = "C/20 charge" if "C/20 discharge" in found else "C/20 discharge"
            raise CharacterizeError(
                f"no {missing} file at {temp:g} degC to pair with {names}: the OCV needs both"
            )
        sets.append(
            TemperatureSet(
                temp, found["HPPC"], found.get("C/20 discharge"), found.get("C/20 charge")
            )
        )
    if not any(s.discharge for s in sets):
        raise CharacterizeError(
            "no C/20 discharge + charge pair at any temperature: the OCV comes from one"
        )
    return sets


def discharge_capacity_ah(trace: Trace, voltage_min_v: float) -> tuple[float, int]:
    """Charge (Ah) the C/20 discharge delivers until the voltage first reaches the minimum.

    Returns the capacity and the index of that sample.
    """
    if not np.any(trace.current_a > 0.0):
        raise CharacterizeError(f"{trace.path}: no discharge current (positive current_a)")
    low = np.flatnonzero(trace.voltage_v <= voltage_min_v + LIMIT_TOLERANCE_V)
    if len(low) == 0:
        raise CharacterizeError(
            f"{trace.path}: not a full discharge: the voltage never reaches the minimum "
            f"{voltage_min_v:g} V (lowest {trace.voltage_v.min():.4f} V)"
        )
    end = int(low[0])
    moved = np.sum(trace.current_a[:end] * np.diff(trace.time_s[: end + 1]))
    if moved <= 0.0:
        raise CharacterizeError(f"{trace.path}: no charge delivered before the minimum voltage")
    return float(moved / SECONDS_PER_HOUR), end


def charged_ah(trace: Trace, voltage_max_v: float) -> float:
    """Charge (Ah) the C/20 charge put in; refuses a charge that never reaches the maximum."""
    if not np.any(trace.current_a < 0.0):
        raise CharacterizeError(f"{trace.path}: no charge current (negative current_a)")
    if trace.voltage_v.max() < voltage_max_v - LIMIT_TOLERANCE_V:
        raise CharacterizeError(
            f"{trace.path}: not a full charge: the voltage never reaches the maximum "
            f"{voltage_max_v:g} V (highest {trace.voltage_v.max():.4f} V)"
        )
    put_in = -np.sum(np.minimum(trace.current_a[:-1], 0.0) * np.diff(trace.time_s))
    return float(put_in / SECONDS_PER_HOUR)


def _active(current_a: NDArray[np.float64], capacity_ah: float) -> NDArray[np.bool_]:
    """Samples under load: above the rest current (`REST_A_PER_AH`) for `MIN_EVENT_SAMPLES` in
    a row, so that spikes of sensor noise in a rest neither split it nor count as pulses."""
    active = np.abs(current_a) > REST_A_PER_AH * capacity_ah
    for a, b in _runs(active):
        if b - a < MIN_EVENT_SAMPLES:
            active[a:b] = False
    return active


def fit_hppc(trace: Trace, capacity_ah: float, efficiency: float) -> list[PulseFit]:
    """R0 and two RC pairs per HPPC group (module docstring, step 2)."""
    t, i = trace.time_s, trace.current_a
    soc = soc_trajectory(t, i, capacity_ah, 100.0, efficiency)
    active = _active(i, capacity_ah)
    events = _runs(active)
    rests = [(a, b) for a, b in _runs(~active) if a > 0]

    def is_pulse(event: tuple[int, int]) -> bool:
        return t[event[1] - 1] - t[event[0]] <= PULSE_MAX_S

    # A longer event (a SOC step) opens a group: its relaxation and the pulses that follow all
    # belong to the SOC it moved the cell to.
    groups: list[list[tuple[tuple[int, int], tuple[int, int] | None]]] = []
    for event in events:
        rest = next((r for r in rests if r[0] == event[1]), None)
        if not groups or not is_pulse(event):
            groups.append([])
        groups[-1].append((event, rest))
    unit1 = dict(zip(TAU1_GRID_S.tolist(), rc_unit_responses(t, i, TAU1_GRID_S).T, strict=True))
    unit2 = dict(zip(TAU2_GRID_S.tolist(), rc_unit_responses(t, i, TAU2_GRID_S).T, strict=True))
    logged = _logged(trace)
    hyst = hysteresis_state(t, i, WINDOW_HYSTERESIS_RATE, 1.0)
    # Current of the latest event at every sample: a pulse's own samples and its rest's.
    level = np.zeros(len(t))
    for a, b in events:
        level[a:] = np.abs(i[a:b]).mean()
    fits: list[PulseFit] = []
    for group in groups:
        pulses = [e for e, _ in group if is_pulse(e)]
        relax = [r for _, r in group if r is not None and r[1] - r[0] >= MIN_REST_SAMPLES]
        if not pulses or not relax:
            continue
        if any(t[r[1] - 1] - t[r[0]] >= LONG_REST_S for r in relax):
            # The SOC step itself enters (the one sustained load of an HPPC, and the drive
            # resistance beyond a 10 s pulse) if the OCV along it is nearly a parabola: a few
            # %-points of SOC.
            first = group[0][0]
            span = abs(soc[first[1]] - soc[first[0]])
            start = first[1] if not is_pulse(first) and span > STEP_SPAN_PCT else first[0]
            window = (start, max(r[1] for r in relax))
            usable = logged & (level > 0)
            fit = _fit_window(trace, soc, window, usable, level, hyst, unit1, unit2)
        elif fits:
            # No long rest in this group (a test that starts with pulses, or ends at the voltage
            # limit): the short rests cannot separate the slow pair, so the previous group's RC
            # pairs stand in and only R0 is fitted.
            prev = fits[-1]
            fit = _fit_r0(trace, pulses, prev, unit1[prev.tau1_s], unit2[prev.tau2_s])
        else:
            continue
        fits.append(replace(fit, soc_pct=float(soc[pulses[0][0]])))
    if not fits:
        raise CharacterizeError(
            f"{trace.path}: no pulses found (current steps above C/{1 / REST_A_PER_AH:g} "
            f"followed by a rest of {MIN_REST_SAMPLES} samples or more)"
        )
    return fits


HELD_JUMP_V = 0.003
"""A voltage held unchanged for `HELD_MIN_S` that then jumps by more than this (with the current
unchanged) was not logged there: a converter filled a sparse log by holding its last value."""
HELD_MIN_S = 5.0
STEP_SPAN_PCT = 3.0
"""Widest SOC step (%-points) whose loaded samples enter the RC fit (the OCV a parabola there)."""
WINDOW_HYSTERESIS_RATE = 30.0
"""Hysteresis rate (1/Ah) of the state the RC fit regresses on: the middle of `HYSTERESIS_RATES`
(the rate itself is chosen later, by re-simulating the files with the finished tables)."""
WINDOW_HYSTERESIS_MOVE = 0.05
"""Least swing of that state within a group for its size to be fitted there."""


def _logged(trace: Trace) -> NDArray[np.bool_]:
    """Samples that carry a measured voltage: not part of a held run (`HELD_JUMP_V`)."""
    v, i, t = trace.voltage_v, trace.current_a, trace.time_s
    out = np.ones(len(v), dtype=bool)
    same = np.concatenate([[False], np.diff(v) == 0.0])
    for a, b in _runs(same):
        start, end = a - 1, b  # the run holds v[start] over [start, end)
        if end >= len(v) or t[end - 1] - t[start] < HELD_MIN_S:
            continue
        steady = abs(i[end] - i[end - 1]) < 1e-3 + 0.01 * abs(i[end])
        if steady and abs(v[end] - v[start]) > HELD_JUMP_V:
            # The run's first sample is the last one logged; the rest only hold it.
            out[start + 1 : end] = False
    return out


def _fit_window(
    trace: Trace,
    soc: NDArray[np.float64],
    window: tuple[int, int],
    logged: NDArray[np.bool_],
    level: NDArray[np.float64],
    hyst: NDArray[np.float64],
    unit1: dict[float, NDArray[np.float64]],
    unit2: dict[float, NDArray[np.float64]],
) -> PulseFit:
    """R0 and both RC pairs fitted to every logged sample of a group, loaded or at rest:
    v = c0 + c1 (soc - mean) - R0 i - R1 u1 - R2 u2, the OCV a line over the group's few
    %-points of SOC. Linear in the unknowns for a pair of time constants: every pair of the grids
    is solved from one Gram matrix, and the smallest residual with R0, R1, R2 > 0 wins."""
    a, b = window
    keep = np.flatnonzero(logged[a:b]) + a
    taus1, taus2 = list(unit1), list(unit2)
    # Pulses in both directions move the hysteresis state: its (unknown) size is one more
    # unknown, where it moves at all (discharge-only pulse sets leave it at the discharge branch).
    h = hyst[keep] if np.ptp(hyst[keep]) > WINDOW_HYSTERESIS_MOVE else np.zeros(len(keep))
    x = np.column_stack(
        [
            np.ones(len(keep)),
            soc[keep] - soc[keep].mean(),
            (soc[keep] - soc[keep].mean()) ** 2,
            h,
            -trace.current_a[keep],
            *(-unit1[tau][keep] for tau in taus1),
            *(-unit2[tau][keep] for tau in taus2),
        ]
    )
    v = trace.voltage_v[keep]
    # Every pulse weighs the same, whatever its current: unweighted, the 6C pulses' tenfold
    # voltages would fit the resistance of 6C alone (lower: Butler-Volmer), while a drive spends
    # most of its time far below.
    w = 1.0 / level[keep] ** 2
    gram, rhs, vv = x.T @ (x * w[:, None]), x.T @ (v * w), float(v @ (v * w))
    lead = [0, 1, 2, 3, 4] if h.any() else [0, 1, 2, 4]
    best: tuple[float, PulseFit] | None = None
    for k1, tau1 in enumerate(taus1):
        for k2, tau2 in enumerate(taus2):
            if tau2 < 2.0 * tau1:
                continue
            idx = [*lead, 5 + k1, 5 + len(taus1) + k2]
            g = gram[np.ix_(idx, idx)]
            try:
                beta = np.linalg.solve(g, rhs[idx])
            except np.linalg.LinAlgError:
                continue
            r0, r1, r2 = beta[-3:]
            if min(r0, r1, r2) <= 0.0:
                continue
            sse = vv - float(beta @ rhs[idx])
            if best is None or sse < best[0]:
                best = (sse, PulseFit(0.0, float(r0), float(r1), tau1, float(r2), tau2))
    if best is None:
        raise CharacterizeError(
            f"{trace.path}: no positive R0 and RC pairs fit the HPPC group starting at "
            f"{trace.time_s[a]:g} s"
        )
    return best[1]


def _fit_r0(
    trace: Trace,
    pulses: list[tuple[int, int]],
    rc: PulseFit,
    u1: NDArray[np.float64],
    u2: NDArray[np.float64],
) -> PulseFit:
    """R0 from the group's pulse current steps, given its RC pairs: the mean of -dv/di over the
    steps, each weighing alike whatever its current (as in `_fit_window`)."""
    t = trace.time_s
    edges = [k for a, b in pulses for k in (a, b)]
    k = np.array([k for k in edges if 0 < k < len(t)])
    d_i = trace.current_a[k] - trace.current_a[k - 1]
    d_v = (
        trace.voltage_v[k]
        - trace.voltage_v[k - 1]
        + rc.r1_ohm * (u1[k] - u1[k - 1])
        + rc.r2_ohm * (u2[k] - u2[k - 1])
    )
    r0 = float(-np.mean(d_v / d_i))
    if r0 <= 0.0:
        raise CharacterizeError(
            f"{trace.path}: the current steps of the HPPC group starting at "
            f"{t[pulses[0][0]]:g} s give R0 <= 0"
        )
    return replace(rc, r0_ohm=r0)


def _local_fit(soc: NDArray[np.float64], values: NDArray[np.float64]) -> NDArray[np.float64]:
    """The data itself at every table SOC: a local linear fit over +-`LOCAL_WINDOW_PCT`
    (nearest data where there is too little)."""
    order = np.argsort(soc)
    soc, values = soc[order], values[order]
    out = np.empty(len(SOC_GRID_PCT))
    for n, point in enumerate(SOC_GRID_PCT):
        near = np.abs(soc - point) <= LOCAL_WINDOW_PCT
        if np.count_nonzero(near) >= 10:
            out[n] = np.polyfit(soc[near] - point, values[near], 1)[1]
        else:
            out[n] = np.interp(point, soc, values)
    return out


def _spline_fit(soc: NDArray[np.float64], values: NDArray[np.float64]) -> NDArray[np.float64]:
    """Increasing table values on the SOC grid whose linear interpolation fits the data best.

    Sampling the curve at the grid points would put the table's straight segments off the
    curve wherever it bends (the knees near empty and full); fitting the knots by least squares
    minimises the RMS error of the interpolated table itself. Unconstrained, a knee makes the
    neighbouring knot overshoot (a dip before LFP's final rise), so each step between knots is
    bounded below by `MIN_OCV_STEP_V` (scipy's bounded least squares). A light second-difference
    penalty fixes knots without data (e.g. above the SOC a CC charge reaches).
    """
    grid = np.array(SOC_GRID_PCT, dtype=float)
    pos = np.clip(np.searchsorted(grid, soc, side="right") - 1, 0, len(grid) - 2)
    w = np.clip((soc - grid[pos]) / (grid[pos + 1] - grid[pos]), 0.0, 1.0)
    design = np.zeros((len(soc), len(grid)))
    rows = np.arange(len(soc))
    design[rows, pos] = 1.0 - w
    design[rows, pos + 1] = w
    smooth = np.zeros((len(grid) - 2, len(grid)))
    for k in range(len(grid) - 2):
        smooth[k, k : k + 3] = (SPLINE_SMOOTHING, -2.0 * SPLINE_SMOOTHING, SPLINE_SMOOTHING)
    # Unknowns: the first knot and the steps between knots (knots = cumulative sums).
    cumulative = np.tril(np.ones((len(grid), len(grid))))
    a = np.vstack([design, smooth]) @ cumulative
    b = np.concatenate([values, np.zeros(len(grid) - 2)])
    lower = np.full(len(grid), MIN_OCV_STEP_V)
    lower[0] = -np.inf
    steps = lsq_linear(a, b, bounds=(lower, np.inf), method="bvls").x
    return cumulative @ steps


def _resistance_rows(fits: list[PulseFit]) -> dict[str, list[float]]:
    """Resistance tables on the SOC grid from the HPPC groups (clamped beyond the outer pulses,
    and to what the firmware's profile format holds, `MAX_TABLE`)."""
    fits = sorted(fits, key=lambda f: f.soc_pct)
    soc = np.array([f.soc_pct for f in fits])
    rows = {}
    for key in ("r0_ohm", "r1_ohm", "tau1_s", "r2_ohm", "tau2_s"):
        values = np.array([getattr(f, key) for f in fits])
        rows[key] = np.minimum(np.interp(SOC_GRID_PCT, soc, values), MAX_TABLE[key]).tolist()
    return rows


def _profile(
    temps: list[float],
    capacity_ah: float,
    efficiency: float,
    rows: dict[str, list[list[float]]],
    hysteresis_rate: float = 0.0,
    **meta: str | float,
) -> CellProfile:
    """A profile from fitted rows; OCV and hysteresis default to zero (overpotential only)."""
    zero = [[0.0] * len(SOC_GRID_PCT) for _ in temps]
    return CellProfile(
        name=str(meta.get("name", "")),
        chemistry=str(meta.get("chemistry", "")),
        source=str(meta.get("source", "")),
        capacity_ah=capacity_ah,
        voltage_min_v=float(meta.get("voltage_min_v", 0.0)),
        voltage_max_v=float(meta.get("voltage_max_v", 0.0)),
        coulombic_efficiency=efficiency,
        soc_pct=list(map(float, SOC_GRID_PCT)),
        temperature_c=temps,
        ocv_v=rows.get("ocv_v", zero),
        hysteresis_v=rows.get("hysteresis_v", zero),
        hysteresis_rate_per_ah=hysteresis_rate,
        r0_ohm=rows["r0_ohm"],
        r1_ohm=rows["r1_ohm"],
        tau1_s=rows["tau1_s"],
        r2_ohm=rows["r2_ohm"],
        tau2_s=rows["tau2_s"],
    )


@dataclass(frozen=True)
class _Fitted:
    """Everything fitted at one temperature, plus what re-simulating its files needs."""

    tests: TemperatureSet
    capacity_ah: float
    efficiency: float
    rows: dict[str, list[float]]


@dataclass(frozen=True)
class _Pair:
    """What one C/20 pair gives: capacity, efficiency and the discharge's end sample."""

    capacity_ah: float
    efficiency: float
    end: int


def _pair(tests: TemperatureSet, voltage_min_v: float, voltage_max_v: float) -> _Pair:
    assert tests.discharge is not None and tests.charge is not None
    capacity, end = discharge_capacity_ah(tests.discharge, voltage_min_v)
    put_in = charged_ah(tests.charge, voltage_max_v)
    efficiency = min(1.0, capacity / put_in)
    if efficiency < MIN_EFFICIENCY:
        raise CharacterizeError(
            f"{tests.charge.path}: charged {put_in:.3f} Ah for {capacity:.3f} Ah discharged "
            f"({tests.discharge.path}): coulombic efficiency {efficiency:.3f} below "
            f"{MIN_EFFICIENCY}"
        )
    return _Pair(capacity, efficiency, end)


def _ocv_rows(
    tests: TemperatureSet, pair: _Pair, rows: dict[str, list[float]], voltage_max_v: float
) -> dict[str, list[float]]:
    """OCV and hysteresis rows from the C/20 pair corrected by the HPPC's overpotential (module
    docstring, step 3); above the SOC a CC charge reaches, the charge branch runs to the rested
    full voltage."""
    assert tests.discharge is not None and tests.charge is not None
    cap = pair.capacity_ah
    model = _profile([tests.temperature_c], cap, pair.efficiency, {k: [r] for k, r in rows.items()})
    measured, branches = [], []
    for trace, soc0, stop in ((tests.discharge, 100.0, pair.end + 1), (tests.charge, 0.0, None)):
        t, i = trace.time_s[:stop], trace.current_a[:stop]
        soc = soc_trajectory(t, i, cap, soc0, pair.efficiency)
        ocv = trace.voltage_v[:stop] + overpotential(model, t, i, tests.temperature_c, soc)
        loaded = _active(i, cap)
        measured.append(_local_fit(soc[loaded], ocv[loaded]))
        branches.append(_spline_fit(soc[loaded], ocv[loaded]))
        covered = (float(soc[loaded].min()), float(soc[loaded].max()))
    # The table is increasing by construction; the data itself must be too.
    mean = (measured[0] + measured[1]) / 2.0
    bad = np.flatnonzero(np.diff(mean) <= 0.0)
    if len(bad):
        k = int(bad[0])
        raise CharacterizeError(
            f"{tests.discharge.path} + {tests.charge.path}: the OCV measured at "
            f"{tests.temperature_c:g} degC does not increase between SOC {SOC_GRID_PCT[k]} % "
            f"and {SOC_GRID_PCT[k + 1]} % ({mean[k]:.4f} V -> {mean[k + 1]:.4f} V)"
        )
    ocv_dis, ocv_chg = branches
    # A CC-only charge stops at the maximum voltage short of 100 % (the NCR18650PF's C/20 at
    # 87 %): above that the charge branch has no data, and the fit's straight extrapolation
    # overshoots the cell's limit. 100 % is where the C/20 discharge starts, at rest after a full
    # charge: that rested voltage is a measurement of the charge branch's OCV there, so the
    # branch runs straight from its last measured point to it.
    grid = np.array(SOC_GRID_PCT, dtype=float)
    full = _rested_full_v(tests.discharge, cap)
    top = covered[1]
    filled = full is not None and top < grid[-1] - LOCAL_WINDOW_PCT
    if filled:
        start = float(np.interp(top, grid, ocv_chg))
        above = grid > top
        ocv_chg[above] = np.interp(grid[above], [top, 100.0], [start, max(full, start)])
    ocv = (ocv_dis + ocv_chg) / 2.0
    hysteresis = np.maximum((ocv_chg - ocv_dis) / 2.0, 0.0)
    # At 0 and 100 % the branches end at the voltage limits under load, where the diffusion
    # overpotential no RC pair captures opens the gap by tens of mV (over 100 mV on LFP): that
    # is not hysteresis, so the end points keep their neighbours' values (unless 100 % is the
    # rested full voltage itself).
    hysteresis[0] = hysteresis[1]
    if not filled:
        hysteresis[-1] = hysteresis[-2]
    return {"ocv_v": ocv.tolist(), "hysteresis_v": hysteresis.tolist()}


def _rested_full_v(trace: Trace, capacity_ah: float) -> float | None:
    """The voltage at rest before the C/20 discharge starts (None: it starts under load)."""
    loaded = np.flatnonzero(_active(trace.current_a, capacity_ah))
    if len(loaded) == 0 or loaded[0] == 0:
        return None
    return float(trace.voltage_v[loaded[0] - 1])


def _sanity(
    profile: CellProfile, fitted: list[_Fitted], voltage_min_v: float, voltage_max_v: float
) -> None:
    """Named rules on the fitted tables; raises `CharacterizeError` naming the first broken."""
    for j, temp in enumerate(profile.temperature_c):
        ocv = np.array(profile.ocv_v[j])
        if np.any(np.diff(ocv) <= 0.0):
            k = int(np.flatnonzero(np.diff(ocv) <= 0.0)[0])
            raise CharacterizeError(
                f"OCV at {temp:g} degC does not increase between SOC {SOC_GRID_PCT[k]} and "
                f"{SOC_GRID_PCT[k + 1]} % ({ocv[k]:.4f} -> {ocv[k + 1]:.4f} V)"
            )
        hyst = np.array(profile.hysteresis_v[j])
        for name, values in (("OCV", ocv), ("OCV + hysteresis", ocv + hyst)):
            low, high = float(values.min()), float(values.max())
            if low < voltage_min_v - FULL_TOLERANCE_V or high > voltage_max_v + FULL_TOLERANCE_V:
                raise CharacterizeError(
                    f"{name} at {temp:g} degC spans {low:.4f}..{high:.4f} V, outside the cell's "
                    f"limits {voltage_min_v:g}..{voltage_max_v:g} V"
                )
    for fit in fitted:
        if fit.tests.discharge is None:
            continue
        full = _rested_full_v(fit.tests.discharge, fit.capacity_ah)
        j = profile.temperature_c.index(fit.tests.temperature_c)
        top = profile.ocv_v[j][-1] + profile.hysteresis_v[j][-1]
        if full is not None and abs(top - full) > FULL_TOLERANCE_V:
            raise CharacterizeError(
                f"{fit.tests.discharge.path}: OCV + hysteresis at 100 % is {top:.4f} V, the "
                f"rested full cell reads {full:.4f} V (more than {FULL_TOLERANCE_V * 1000:g} mV "
                "apart)"
            )


def _residuals(
    profile: CellProfile, fitted: list[_Fitted], rates: Sequence[float]
) -> list[dict[str, dict[str, float]]]:
    """RMS voltage residual (mV) of re-simulating every input file with `profile` at each
    hysteresis rate: over the whole file ("all"), between `INTERIOR_SOC_PCT` ("10-90") and in
    every band of `SOC_BANDS_PCT` (the tables' 5 % steps cannot follow the knees near empty and
    full, which dominate the whole-file figure)."""
    out: list[dict[str, dict[str, float]]] = [{} for _ in rates]
    bands = list(zip(SOC_BANDS_PCT[:-1], SOC_BANDS_PCT[1:], strict=True))
    for fit in fitted:
        # Each temperature's SOC axis spans its own C/20 capacity.
        model = replace(profile, capacity_ah=fit.capacity_ah)
        # Discharge and HPPC start from a full charge (charge branch), the charge from empty.
        files = [(fit.tests.hppc, 100.0, 1.0)]
        if fit.tests.discharge is not None and fit.tests.charge is not None:
            files = [(fit.tests.discharge, 100.0, 1.0), (fit.tests.charge, 0.0, -1.0), *files]
        for trace, soc0, h0 in files:
            t, i = trace.time_s, trace.current_a
            soc, volts, hyst = hysteresis_free(model, t, i, fit.tests.temperature_c, soc0)
            masks = {"all": np.ones(len(t), dtype=bool)}
            masks["10-90"] = (soc >= INTERIOR_SOC_PCT[0]) & (soc <= INTERIOR_SOC_PCT[1])
            for lo, hi in bands:
                masks[f"{lo:g}-{hi:g}"] = (soc >= lo) & (soc < hi if hi < 100 else soc <= hi)
            for n, rate in enumerate(rates):
                model_v = volts + hyst * hysteresis_state(t, i, rate, h0)
                out[n][str(trace.path)] = {
                    k: round(rms_mv(model_v[m], trace.voltage_v[m]), 2)
                    for k, m in masks.items()
                    if m.any()
                }
    return out


def _nearest(temps: Iterable[float], temp: float) -> float:
    return min(temps, key=lambda t: abs(t - temp))


def read_lab(
    discharges: Sequence[Path],
    charges: Sequence[Path],
    hppcs: Sequence[Path],
    temperatures: Mapping[Path, float] | None = None,
) -> list[LabFile]:
    """Read the lab files; `temperatures` declares a file's test temperature (degC)."""
    declared = {Path(p): t for p, t in (temperatures or {}).items()}
    return [
        LabFile(kind, read_trace(p), declared.get(Path(p)))
        for kind, paths in zip(KINDS, (discharges, charges, hppcs), strict=True)
        for p in paths
    ]


def characterize(
    files: Sequence[LabFile],
    *,
    name: str,
    chemistry: str,
    source: str,
    voltage_min_v: float,
    voltage_max_v: float,
    max_residual_mv: float = DEFAULT_MAX_RESIDUAL_MV,
) -> CellProfile:
    """Fit a profile from the lab tests (module docstring); raises `CharacterizeError`."""
    sets = group_tests(files)
    pairs = {s.temperature_c: _pair(s, voltage_min_v, voltage_max_v) for s in sets if s.discharge}
    fitted = []
    for s in sets:
        # A temperature without its own C/20 pair takes the nearest pair's capacity and OCV.
        pair = pairs[_nearest(pairs, s.temperature_c)]
        rows = _resistance_rows(fit_hppc(s.hppc, pair.capacity_ah, pair.efficiency))
        fitted.append(_Fitted(s, pair.capacity_ah, pair.efficiency, rows))
    by_temp = {f.tests.temperature_c: f for f in fitted}
    ocv_rows = {
        t: _ocv_rows(by_temp[t].tests, pairs[t], by_temp[t].rows, voltage_max_v) for t in pairs
    }
    for f in fitted:
        f.rows.update(ocv_rows[_nearest(pairs, f.tests.temperature_c)])
    temps = [f.tests.temperature_c for f in fitted]
    reference = min(
        fitted, key=lambda f: (f.tests.discharge is None, abs(f.tests.temperature_c - 25.0))
    )
    rows = {key: [f.rows[key] for f in fitted] for key in fitted[0].rows}
    meta = {
        "name": name,
        "chemistry": chemistry,
        "source": source,
        "voltage_min_v": voltage_min_v,
        "voltage_max_v": voltage_max_v,
    }
    profile = _profile(temps, reference.capacity_ah, reference.efficiency, rows, 0.0, **meta)
    _sanity(profile, fitted, voltage_min_v, voltage_max_v)
    by_rate = _residuals(profile, fitted, HYSTERESIS_RATES)
    c20 = {
        str(p.path) for f in fitted for p in (f.tests.discharge, f.tests.charge) if p is not None
    }
    best = min(
        range(len(HYSTERESIS_RATES)),
        key=lambda n: math.fsum(r.get("10-90", 0.0) ** 2 for r in by_rate[n].values()),
    )
    profile.hysteresis_rate_per_ah = HYSTERESIS_RATES[best]
    residuals = by_rate[best]
    # The OCV must reproduce the C/20 files it came from: there the model is the table itself
    # (a few mV of overpotential at C/20), so a miss is a table that is not this cell's OCV. The
    # HPPCs' residuals are reported: pulses at 6C in the cold leave a 2RC model tens of mV off,
    # which says how far to trust the voltage there (the estimator weighs it so), not that the
    # tables are wrong.
    for path in sorted(c20):
        miss = residuals[path].get("10-90", 0.0)
        if miss > max_residual_mv:
            raise CharacterizeError(
                f"{path}: the fitted OCV misses this C/20 file by {miss:.1f} mV RMS between SOC "
                f"{INTERIOR_SOC_PCT[0]:g} and {INTERIOR_SOC_PCT[1]:g} % (limit "
                f"{max_residual_mv:g} mV): the data does not fit a 2RC model with hysteresis"
            )
    profile.fit = {
        "rms_residual_mv": {k: v["all"] for k, v in residuals.items()},
        "rms_residual_mv_soc_10_90": {k: v.get("10-90", 0.0) for k, v in residuals.items()},
        "rms_residual_mv_by_soc_band": residuals,
        "capacity_ah_by_temperature": {
            f"{f.tests.temperature_c:g}": round(f.capacity_ah, 4) for f in fitted
        },
        "ocv_from": {
            f"{f.tests.temperature_c:g}": f"{_nearest(pairs, f.tests.temperature_c):g}"
            for f in fitted
        },
        "notes": (
            "cellguard characterize: OCV = mean of the C/20 branches corrected for the HPPC "
            "overpotential, OCV + hysteresis at 100 % the rested full voltage; a temperature "
            "without a C/20 pair takes the nearest pair's OCV and capacity; R0/RC from each "
            "temperature's HPPC"
        ),
    }
    return profile
