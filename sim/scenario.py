"""Test scenarios: sequences of segments that request a load current every step.

Currents are in amperes, positive = discharge; a charger requests a negative current. Segments
read the plant's true state (pack voltage, mean SOC) and respect the limits the BMS publishes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from sim.cells import get_chemistry
from sim.charger import FINISHED, OFF
from sim.pack import Pack
from sim.vehicle import Vehicle, load_drive_cycle


@dataclass(frozen=True)
class Limits:
    """Pack-level limits from BMS_Limits; every value is a magnitude (>= 0)."""

    charge_current_a: float
    discharge_current_a: float
    charge_voltage_v: float

    def __post_init__(self) -> None:
        if min(self.charge_current_a, self.discharge_current_a, self.charge_voltage_v) < 0.0:
            raise ValueError(f"limits are magnitudes and must be >= 0: {self}")


class Segment(ABC):
    """One phase of a scenario; ``begin`` is called once before the first ``request``."""

    @property
    @abstractmethod
    def name(self) -> str:
        """Short label for reports."""

    @abstractmethod
    def begin(self, pack: Pack) -> None:
        """Reset per-run state at the segment's first step."""

    @abstractmethod
    def request(self, elapsed_s: float, pack: Pack, limits: Limits) -> float | None:
        """Load current (A, + = discharge) at ``elapsed_s`` into the segment; None once done."""

    @abstractmethod
    def progress(self, elapsed_s: float, pack: Pack) -> float:
        """Estimated fraction of the segment completed (0..1), for progress bars."""

    def expected_s(self, soc: float, pack: Pack) -> tuple[float, float]:
        """Estimated duration (s) of the segment if it starts at mean SOC `soc` (0..1) on
        `pack`, and the SOC it ends at: how a progress bar weighs it against the others."""
        return 1800.0, soc


@dataclass
class Rest(Segment):
    """No current for ``duration_s`` seconds."""

    duration_s: float

    @property
    def name(self) -> str:
        """Segment label."""
        return "rest"

    def begin(self, pack: Pack) -> None:
        """Nothing to reset: a rest only watches the clock."""

    def request(self, elapsed_s: float, pack: Pack, limits: Limits) -> float | None:
        """Zero until the duration has passed."""
        return 0.0 if elapsed_s < self.duration_s else None

    def progress(self, elapsed_s: float, pack: Pack) -> float:
        """Share of the rest elapsed."""
        return min(1.0, elapsed_s / self.duration_s) if self.duration_s > 0 else 1.0

    def expected_s(self, soc: float, pack: Pack) -> tuple[float, float]:
        """Its duration; the SOC stays."""
        return self.duration_s, soc


@dataclass
class Drive(Segment):
    """Drive cycle ``cycle`` repeated until the pack's mean SOC falls to ``until_soc``.

    The vehicle's battery power, scaled to the pack's energy, is held over each second of the
    cycle; current = power / pack voltage, clipped to the BMS discharge limit and, when
    regenerating, to the charge limit.
    """

    cycle: str = "wltc"
    until_soc: float = 0.2
    max_repeats: int = 50
    vehicle: Vehicle = field(default_factory=Vehicle)
    _power_w: NDArray[np.float64] = field(init=False, repr=False, compare=False)
    _start_soc: float = field(init=False, repr=False, compare=False, default=1.0)

    @property
    def name(self) -> str:
        """Segment label, e.g. "drive-wltc"."""
        return f"drive-{self.cycle}"

    def begin(self, pack: Pack) -> None:
        """Scale the cycle's power profile to this pack."""
        self._power_w = self.vehicle.pack_power_w(load_drive_cycle(self.cycle), pack.energy_wh)
        self._start_soc = float(pack.mean_soc)

    def request(self, elapsed_s: float, pack: Pack, limits: Limits) -> float | None:
        """Cycle current, or None after ``max_repeats`` cycles or at ``until_soc``."""
        second = int(elapsed_s)
        if pack.mean_soc <= self.until_soc or second >= self.max_repeats * self._power_w.size:
            return None
        current = self._power_w[second % self._power_w.size] / pack.pack_voltage_v
        return min(max(current, -limits.charge_current_a), limits.discharge_current_a)

    def progress(self, elapsed_s: float, pack: Pack) -> float:
        """The larger of SOC travelled toward ``until_soc`` and repeats completed."""
        span = self._start_soc - self.until_soc
        by_soc = (self._start_soc - pack.mean_soc) / span if span > 0 else 1.0
        by_time = elapsed_s / (self.max_repeats * self._power_w.size)
        return float(min(1.0, max(by_soc, by_time, 0.0)))

    def expected_s(self, soc: float, pack: Pack) -> tuple[float, float]:
        """The cycle's mean power at the pack's nominal voltage drains it to ``until_soc``, or
        ``max_repeats`` cycles end it."""
        power_w = self.vehicle.pack_power_w(load_drive_cycle(self.cycle), pack.energy_wh)
        current_a = float(power_w.mean()) / (pack.n_cells * pack.chemistry.nominal_voltage_v)
        capacity_as = float(pack.capacity_ah.mean()) * 3600.0
        longest = float(self.max_repeats * power_w.size)
        if current_a <= 0.0:
            return longest, soc
        seconds = min(longest, max(0.0, soc - self.until_soc) * capacity_as / current_a)
        return seconds, soc - seconds * current_a / capacity_as


@dataclass
class CCCVCharge(Segment):
    """Constant current, then constant voltage at the BMS charge voltage limit.

    The charger's current magnitude is an integral controller on the pack voltage error,
    clamped to ``0..min(current_a, BMS charge limit)``: below the voltage limit it sits at the
    clamp (CC), at the limit it tapers (CV). Its gain is divided by the pack's ohmic resistance
    so the voltage loop settles with ``cv_time_constant_s`` whatever the pack size. The charge
    ends once the pack has reached the voltage limit (or the BMS has tapered its charge limit
    below the charger's current) while charging and the current has stayed below
    ``cv_cutoff_c_rate`` times the chemistry's capacity for ``end_hold_s`` (as chargers do, so
    one dip of the published limit does not end the charge), or after ``timeout_s``.
    """

    current_a: float
    cv_cutoff_c_rate: float = 0.05
    timeout_s: float = 6 * 3600.0
    cv_time_constant_s: float = 2.0
    end_hold_s: float = 30.0
    _below_since_s: float | None = field(init=False, repr=False, compare=False, default=None)
    _command_a: float = field(init=False, repr=False, compare=False, default=0.0)
    _cutoff_a: float = field(init=False, repr=False, compare=False, default=0.0)
    _last_s: float = field(init=False, repr=False, compare=False, default=0.0)
    _in_cv: bool = field(init=False, repr=False, compare=False, default=False)
    _start_soc: float = field(init=False, repr=False, compare=False, default=0.0)

    @property
    def name(self) -> str:
        """Segment label."""
        return "cccv-charge"

    def begin(self, pack: Pack) -> None:
        """Start in CC at the requested current."""
        self._command_a = self.current_a
        self._cutoff_a = self.cv_cutoff_c_rate * pack.chemistry.capacity_ah
        self._last_s = 0.0
        self._in_cv = False
        self._below_since_s = None
        self._start_soc = float(pack.mean_soc)

    def request(self, elapsed_s: float, pack: Pack, limits: Limits) -> float | None:
        """Charge current (negative), or None once the charge has ended."""
        dt_s = elapsed_s - self._last_s
        self._last_s = elapsed_s
        error_v = limits.charge_voltage_v - pack.pack_voltage_v
        # Only a voltage reached under charge current counts: limits may read 0 before the
        # BMS has published them, and the contactors may still be open. A BMS that tapers its
        # charge limit below the charger's current ends the CC phase just as the voltage does.
        charging = pack.current_a < 0.0
        tapered = limits.charge_current_a < self.current_a
        self._in_cv = self._in_cv or (charging and (error_v <= 0.0 or tapered))
        ceiling = min(self.current_a, limits.charge_current_a)
        step_a = error_v * dt_s / (self.cv_time_constant_s * pack.internal_resistance_ohm)
        self._command_a = min(max(self._command_a + step_a, 0.0), ceiling)
        if not (self._in_cv and self._command_a < self._cutoff_a):
            self._below_since_s = None
        elif self._below_since_s is None:
            self._below_since_s = elapsed_s
        held = (
            self._below_since_s is not None and elapsed_s - self._below_since_s >= self.end_hold_s
        )
        if elapsed_s >= self.timeout_s or held:
            return None
        return -self._command_a

    def progress(self, elapsed_s: float, pack: Pack) -> float:
        """SOC gained toward full."""
        span = 1.0 - self._start_soc
        gained = (pack.mean_soc - self._start_soc) / span if span > 0 else 1.0
        return float(min(1.0, max(gained, elapsed_s / self.timeout_s, 0.0)))

    def expected_s(self, soc: float, pack: Pack) -> tuple[float, float]:
        """Constant current to full, and a fifth more for the constant-voltage tail."""
        capacity_as = float(pack.capacity_ah.mean()) * 3600.0
        seconds = 1.2 * max(0.0, 1.0 - soc) * capacity_as / self.current_a
        return min(self.timeout_s, seconds), 1.0


@dataclass
class DcFastCharge(Segment):
    """DC charging over GB/T 27930: the current is what the simulated charger delivers while the
    BMS steers it through BCL (`hil.bench.charger.ChargerLink`, attached as `link` by the bench
    before the run); ends once the charger's session is over, or after `max_s`."""

    max_s: float = 4 * 3600.0
    link: Any = None
    """The bench's ChargerLink; its `exchange(now_ms, inlet_v)` returns the load current."""

    @property
    def name(self) -> str:
        """Segment label."""
        return "dc-fast-charge"

    def begin(self, pack: Pack) -> None:
        """Nothing to reset: the charger session starts when the charger is plugged in."""
        if self.link is None:
            raise ValueError("dc-fast-charge needs the bench's charger link (hil.bench.charger)")
        self._start_soc = float(pack.mean_soc)

    def request(self, elapsed_s: float, pack: Pack, limits: Limits) -> float | None:
        """The charger's current; None once its session ended (or `max_s` passed)."""
        ch = self.link.charger
        if elapsed_s > self.max_s or (ch.stage in (FINISHED, OFF) and not ch.relay_closed):
            return None
        return float(
            self.link.exchange(
                round(elapsed_s * 1000),
                pack.link_voltage_v,
                float(np.max(pack.cell_voltage_v)),
                float(np.max(pack.temperature_c)),
            )
        )

    def progress(self, elapsed_s: float, pack: Pack) -> float:
        """Share of the way from the start SOC to 80 %."""
        start = getattr(self, "_start_soc", float(pack.mean_soc))
        span = max(0.01, 0.8 - start)
        return min(1.0, max(0.0, (float(pack.mean_soc) - start) / span))

    def expected_s(self, soc: float, pack: Pack) -> tuple[float, float]:
        """From `soc` to 80 % at 1 C, roughly."""
        return max(60.0, (0.8 - soc) * 3600.0), 0.8


class Scenario:
    """A named sequence of segments, run one after the other on the scenario clock."""

    def __init__(self, name: str, segments: Sequence[Segment]) -> None:
        self.name = name
        self.segments = tuple(segments)
        self._index = 0
        self._start_s: float | None = None
        self._weights: list[float] | None = None
        self._progress = 0.0

    @property
    def done(self) -> bool:
        """True once every segment has ended."""
        return self._index >= len(self.segments)

    @property
    def segment_name(self) -> str:
        """Name of the running segment, "done" at the end."""
        return "done" if self.done else self.segments[self._index].name

    def progress(self, t_s: float, pack: Pack) -> float:
        """Estimated fraction of the whole scenario completed (0..1): each segment weighs as
        much as the time it is expected to take (`Segment.expected_s` from the SOC the one
        before it leaves), so a progress bar's time estimate holds from the start; it never
        falls."""
        if self.done:
            return 1.0
        if self._weights is None:
            soc = float(pack.mean_soc)
            weights = []
            for segment in self.segments[self._index :]:
                seconds, soc = segment.expected_s(soc, pack)
                weights.append(max(seconds, 1.0))
            self._weights = [0.0] * self._index + weights
        weights = self._weights
        done = sum(weights[: self._index])
        if self._start_s is not None:
            done += weights[self._index] * self.segments[self._index].progress(
                t_s - self._start_s, pack
            )
        # a regenerating drive gains SOC for a moment: the bar holds rather than going back
        self._progress = max(self._progress, min(1.0, done / sum(weights)))
        return self._progress

    def current_request(self, t_s: float, pack: Pack, limits: Limits) -> float:
        """Load current (A, + = discharge) at scenario time ``t_s``; 0 once done."""
        while not self.done:
            segment = self.segments[self._index]
            if self._start_s is None:
                self._start_s = t_s
                segment.begin(pack)
            current = segment.request(t_s - self._start_s, pack, limits)
            if current is not None:
                return current
            self._index += 1
            self._start_s = None
        return 0.0


_REST_S = 1800.0


def _builders(capacity_ah: float) -> dict[str, Callable[[], list[Segment]]]:
    def charge() -> CCCVCharge:
        return CCCVCharge(current_a=0.5 * capacity_ah)

    return {
        "default": lambda: [Rest(_REST_S), Drive("wltc", until_soc=0.2), Rest(_REST_S), charge()],
        "wltc": lambda: [Drive("wltc", until_soc=0.0, max_repeats=1)],
        "nedc": lambda: [Drive("nedc", until_soc=0.0, max_repeats=1)],
        "charge": lambda: [charge()],
        "rest": lambda: [Rest(_REST_S)],
        "dc-fast-charge": lambda: [DcFastCharge()],
    }


SCENARIOS = tuple(_builders(1.0))
"""Names accepted by ``build_scenario``."""


def build_scenario(name: str, chemistry: str, capacity_ah: float) -> Scenario:
    """Build scenario ``name`` for a pack of ``chemistry`` cells of ``capacity_ah`` each.

    "default": 30 min rest, WLTC repeated down to 20 % mean SOC, 30 min rest, CC-CV charge at
    0.5C back to full; "wltc"/"nedc": one cycle; "charge": CC-CV at 0.5C; "rest": 30 min.
    The segments follow the BMS limits, so ``chemistry`` is only validated here.
    """
    get_chemistry(chemistry)
    builders = _builders(capacity_ah)
    if name not in builders:
        raise ValueError(f"unknown scenario {name!r}; valid: {', '.join(SCENARIOS)}")
    return Scenario(name, builders[name]())
