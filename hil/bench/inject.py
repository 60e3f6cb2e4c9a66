"""Fault injection on the bench: one call per fault, each recorded with its plant-time start.

A `FaultInjector` installs itself as the bench's fault hooks (`Bench.faults`) and acts in every
step at three points: the sensor readings (stuck, noisy or open-wire cells, failing thermistors,
a current-sensor offset), the bench's CAN frames (dropped, delayed, corrupted, a babbling node,
the sim board's SIM_Stall for a loop overrun) and the plant (an internal short, a thermal runaway,
a welded contactor: `sim.faults`). What each fault models and why: docs/fault_injection.md.

Usage (the `inject` fixture of the pytest plugin is `FaultInjector(bench)`):
    inject = FaultInjector(bench)
    inject.open_wire(4)
    bench.step_until(lambda s: not s.closed, 10)
    inject.clear()

Every call appends an `Injection` to `inject.log` with `start_s` = `bench.t_s`, the plant time
of the next step's sample: the first instant the fault can act. `clear()` ends faults (`end_s`).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

import numpy as np

from firmware import can_codec as codec
from hil.bench.loop import Bench
from hil.bench.transport import Frame
from sim.faults import PlantFaults
from sim.pack import Pack
from sim.sensors import Measurement

SIM_IDS = (codec.SIM_CELL_VOLTAGES_ID, codec.SIM_CELL_TEMPS_ID, codec.SIM_PACK_MEASUREMENTS_ID)
"""The bench's measurement frames."""
VCU_ID = codec.VCU_REQUEST_ID
BITRATE = 500_000
FRAME_BITS = 135
"""Worst-case length of an 8-byte classic frame with an 11-bit id and bit stuffing (dbc/README)."""
THERMISTOR_OPEN_DC = -2048
"""An open NTC with a pull-up reads the ADC rail, beyond the cold end of any conversion table:
the lowest value the wire format carries (-204.8 degC)."""
THERMISTOR_SHORT_DC = 2047
"""A shorted NTC reads 0 ohm, beyond the hot end: the highest value on the wire (204.7 degC)."""


@dataclass
class Injection:
    """One injected fault: what, where, with which parameters, and when (plant seconds)."""

    kind: str
    target: object
    params: dict[str, object]
    start_s: float
    end_s: float | None = None

    @property
    def active(self) -> bool:
        """True until `FaultInjector.clear` ended it."""
        return self.end_s is None


@dataclass
class _CanRule:
    injection: Injection
    ids: frozenset[int] | None  # None: every bench frame
    p: float = 1.0
    ticks: int = 0
    bits: int = 1

    def matches(self, can_id: int) -> bool:
        return self.ids is None or can_id in self.ids


@dataclass
class _Flood:
    injection: Injection
    rate: float
    can_id: int
    owed: float = 0.0  # fraction of a frame carried to the next cycle


@dataclass
class _Stall:
    injection: Injection
    ms: int
    cycles: int | None


@dataclass
class _SensorFaults:
    stuck: dict[int, int | None] = field(default_factory=dict)  # cell -> mV (None: next reading)
    noisy: dict[int, float] = field(default_factory=dict)  # cell -> sigma, mV
    open_wires: set[int] = field(default_factory=set)  # sense line 0..cells
    open_wire_mv: int = 0
    thermistors: dict[int, int | None] = field(default_factory=dict)  # sensor -> dC (None: next)
    current_offset_ma: int = 0


def _ids(ids: int | Iterable[int] | None) -> frozenset[int] | None:
    if ids is None:
        return None
    return frozenset([ids] if isinstance(ids, int) else ids)


class FaultInjector:
    """Injects faults into one bench; see the module docstring. `seed` drives every random draw."""

    def __init__(self, bench: Bench, seed: int = 0) -> None:
        self.bench = bench
        self.rng = np.random.default_rng(seed)
        self.plant = PlantFaults()
        self.log: list[Injection] = []
        """Every injection in order, with its start and (once cleared) end plant time."""
        self._sensor = _SensorFaults()
        self._can: list[_CanRule] = []
        self._held: deque[tuple[int, Frame]] = deque()  # (release tick, frame)
        self._flood: _Flood | None = None
        self._stall: _Stall | None = None
        self._tick = 0
        bench.faults = self

    # ---- bookkeeping -------------------------------------------------------------------------
    def _record(self, kind: str, target: object, **params: object) -> Injection:
        injection = Injection(kind, target, params, self.bench.t_s)
        self.log.append(injection)
        return injection

    @property
    def active(self) -> list[Injection]:
        """The injections not cleared yet."""
        return [i for i in self.log if i.active]

    def clear(self, kind: str | None = None) -> None:
        """End every active fault, or only those of `kind` (an `Injection.kind`, e.g. "open_wire").

        Frames held back by `can_delay` are discarded, as a bus reset would lose them.
        """
        for injection in self.active:
            if kind is None or injection.kind == kind:
                injection.end_s = self.bench.t_s
        s = self._sensor
        every = kind is None
        if every or kind == "stuck_cell":
            s.stuck.clear()
        if every or kind == "noisy_cell":
            s.noisy.clear()
        if every or kind == "open_wire":
            s.open_wires.clear()
        if every or kind == "thermistor":
            s.thermistors.clear()
        if every or kind == "current_offset":
            s.current_offset_ma = 0
        if every or kind and kind.startswith("can_"):
            self._can = [r for r in self._can if r.injection.active]
            if not any(r.ticks for r in self._can):
                self._held.clear()
            if every or kind == "can_flood":
                self._flood = None
        if every or kind == "loop_overrun":
            self._stall = None
        if every:
            self.plant.clear()
        elif kind == "internal_short":
            self.plant.shorts.clear()
        elif kind == "thermal_runaway":
            self.plant.runaways.clear()
        elif kind == "weld":
            self.plant.welded.clear()

    # ---- sensor faults -----------------------------------------------------------------------
    def stuck_cell(self, cell: int, mv: int | None = None) -> Injection:
        """Cell `cell` (0-based) reads `mv` from now on, or keeps its next reading (None)."""
        self._sensor.stuck[cell] = mv
        return self._record("stuck_cell", cell, mv=mv)

    def noisy_cell(self, cell: int, sigma_mv: float) -> Injection:
        """Cell `cell` reads with extra Gaussian noise of `sigma_mv` (a loose crimp, EMI)."""
        self._sensor.noisy[cell] = sigma_mv
        return self._record("noisy_cell", cell, sigma_mv=sigma_mv)

    def open_wire(self, line: int, residual_mv: int = 0) -> Injection:
        """Sense line `line` opens (0 = below cell 0, k = between cells k-1 and k, n = top).

        The AFE input of the open line floats and settles at its lower neighbour's potential: the
        cell below the line reads `residual_mv`, the cell above reads the sum of both (the pack
        sum is kept). At the string's ends only the one cell touching the line reads
        `residual_mv`. See docs/fault_injection.md.
        """
        if not 0 <= line <= self.bench.pack.n_cells:
            raise ValueError(f"sense line must be in 0..{self.bench.pack.n_cells}, got {line}")
        self._sensor.open_wires.add(line)
        self._sensor.open_wire_mv = residual_mv
        return self._record("open_wire", line, residual_mv=residual_mv)

    def thermistor(self, sensor: int, mode: str, dc: int | None = None) -> Injection:
        """Temperature sensor `sensor` fails: "open" (reads THERMISTOR_OPEN_DC), "short"
        (THERMISTOR_SHORT_DC) or "stuck" (keeps its next reading); `dc` overrides the value
        (0.1 degC), e.g. a driver that clamps an open sensor to its table's end."""
        defaults = {"open": THERMISTOR_OPEN_DC, "short": THERMISTOR_SHORT_DC, "stuck": None}
        if mode not in defaults:
            raise ValueError(f"thermistor mode must be one of {tuple(defaults)}, got {mode!r}")
        self._sensor.thermistors[sensor] = dc if dc is not None else defaults[mode]
        return self._record("thermistor", sensor, mode=mode, dc=dc)

    def current_offset(self, a: float) -> Injection:
        """The current sensor reads `a` amperes more than flows (+ = towards discharge)."""
        self._sensor.current_offset_ma = round(a * 1000)
        return self._record("current_offset", None, a=a)

    def on_measurement(self, m: Measurement) -> Measurement:
        """Apply the sensor faults to one set of readings (a `FaultHooks` method)."""
        s = self._sensor
        cells = m.cell_mv
        n = len(cells)
        for line in sorted(s.open_wires):
            if 0 < line < n:
                cells[line] += cells[line - 1]
            if line > 0:
                cells[line - 1] = s.open_wire_mv
            if line == 0:
                cells[0] = s.open_wire_mv
        for cell, mv in s.stuck.items():
            if mv is None:
                s.stuck[cell] = mv = int(cells[cell])
            cells[cell] = mv
        for cell, sigma in s.noisy.items():
            cells[cell] = max(0, cells[cell] + round(self.rng.normal(0.0, sigma)))
        for sensor, dc in s.thermistors.items():
            if dc is None:
                s.thermistors[sensor] = dc = int(m.temp_dc[sensor])
            m.temp_dc[sensor] = dc
        if s.current_offset_ma:
            m = replace(m, current_ma=m.current_ma + s.current_offset_ma)
        return m

    # ---- CAN faults --------------------------------------------------------------------------
    def can_drop(self, ids: int | Iterable[int] | None = None, p: float = 1.0) -> Injection:
        """Drop each bench frame with an id in `ids` (None: every one) with probability `p`."""
        injection = self._record("can_drop", _ids(ids), p=p)
        self._can.append(_CanRule(injection, _ids(ids), p=p))
        return injection

    def can_delay(self, ids: int | Iterable[int] | None = None, ms: int = 100) -> Injection:
        """Deliver frames with an id in `ids` `ms` later: after ceil(ms / cycle) ticks, because
        the firmware reads its inputs once per cycle (any delay misses at least the cycle it
        was sampled for)."""
        ticks = math.ceil(ms / self.bench.cycle_ms)
        injection = self._record("can_delay", _ids(ids), ms=ms, ticks=ticks)
        self._can.append(_CanRule(injection, _ids(ids), ticks=ticks))
        return injection

    def can_corrupt(
        self, ids: int | Iterable[int] | None = None, p: float = 1.0, bits: int = 1
    ) -> Injection:
        """Flip `bits` random data bits of each frame with an id in `ids` with probability `p`.

        The frame is delivered as corrupted: the error happened before the controller computed
        the CAN CRC (in the sender's memory or the sensor readout), which the bus cannot catch;
        a bit error on the wire fails the CAN CRC and is a dropped frame (`can_drop`). On the
        SIM_ frames (no end-to-end CRC) a flip yields wrong or out-of-range values; on a
        VCU_Request with an end-to-end CRC the CRC no longer matches.
        """
        injection = self._record("can_corrupt", _ids(ids), p=p, bits=bits)
        self._can.append(_CanRule(injection, _ids(ids), p=p, bits=bits))
        return injection

    def can_flood(self, rate: float, can_id: int = 0x000) -> Injection:
        """A babbling node sends `rate` frames/s of random data with id `can_id`.

        Arbitration model: per control cycle the bus carries BITRATE * cycle / FRAME_BITS frames;
        frames with a lower id than the flood's go first, then the flood, then the rest in id
        order while capacity remains; the others never win arbitration in that cycle and are
        lost. SIM_Tick is the bench's lock-step clock, not bus traffic, and always arrives.
        """
        injection = self._record("can_flood", can_id, rate=rate)
        self._flood = _Flood(injection, rate, can_id)
        return injection

    def loop_overrun(self, ms: int, cycles: int | None = None) -> Injection:
        """The firmware's next `cycles` control cycles (None: until cleared) each take `ms` more
        (a SIM_Stall frame the sim board honours; hardware boards have no such hook)."""
        injection = self._record("loop_overrun", None, ms=ms, cycles=cycles)
        self._stall = _Stall(injection, ms, cycles)
        return injection

    def on_frames(self, frames: list[Frame]) -> list[Frame]:
        """Apply the CAN faults to one tick's bench frames (a `FaultHooks` method)."""
        self._tick += 1
        out = []
        while self._held and self._held[0][0] <= self._tick:
            out.append(self._held.popleft()[1])
        rng = self.rng
        for frame in frames:
            keep = True
            for rule in self._can:
                if not rule.matches(frame[0]):
                    continue
                if rule.ticks:
                    self._held.append((self._tick + rule.ticks, frame))
                    keep = False
                    break
                if rng.random() >= rule.p:
                    continue
                if rule.injection.kind == "can_drop":
                    keep = False
                    break
                frame = (frame[0], _flip(frame[1], rng.integers(0, 8 * len(frame[1]), rule.bits)))
            if keep:
                out.append(frame)
        if self._flood is not None:
            out = self._arbitrate(out, self._flood)
        if self._stall is not None:
            out.append(self._stall_frame(self._stall))
        return out

    def _arbitrate(self, frames: list[Frame], flood: _Flood) -> list[Frame]:
        capacity = BITRATE * self.bench.cycle_ms // (1000 * FRAME_BITS)
        flood.owed += flood.rate * self.bench.cycle_ms / 1000.0
        n_flood = int(flood.owed)
        flood.owed -= n_flood
        before = [f for f in frames if f[0] < flood.can_id]
        after = sorted((f for f in frames if f[0] >= flood.can_id), key=lambda f: f[0])
        n_flood = min(n_flood, max(0, capacity - len(before)))
        room = max(0, capacity - len(before) - n_flood)
        babble = [(flood.can_id, bytes(self.rng.integers(0, 256, 8, dtype=np.uint8)))] * n_flood
        kept = {id(f) for f in after[:room]}
        # The babbling node wins arbitration first; what survives keeps the bench's send order.
        return before + babble + [f for f in frames if id(f) in kept]

    def _stall_frame(self, stall: _Stall) -> Frame:
        buf = bytearray(8)
        codec.encode_sim_stall(buf, 1, stall.ms)
        if stall.cycles is not None:
            stall.cycles -= 1
            if stall.cycles <= 0:
                stall.injection.end_s = self.bench.t_s + self.bench.cycle_ms / 1000.0
                self._stall = None
        return codec.SIM_STALL_ID, bytes(buf)

    # ---- plant faults ------------------------------------------------------------------------
    def internal_short(self, cell: int, ohm: float) -> Injection:
        """A resistor of `ohm` inside cell `cell`: self-discharge and heat (`sim.faults`)."""
        self.plant.internal_short(cell, ohm)
        return self._record("internal_short", cell, ohm=ohm)

    def thermal_runaway(self, cell: int, **params: float) -> Injection:
        """Cell `cell` goes into thermal runaway now (`sim.faults.Runaway` parameters)."""
        self.plant.thermal_runaway(cell, self.bench.t_s, **params)
        return self._record("thermal_runaway", cell, **params)

    def weld(self, contactor: str = "pos") -> Injection:
        """`contactor` ("neg", "pre", "pos") welds: once closed it stays closed."""
        self.plant.weld(contactor)
        return self._record("weld", contactor)

    def on_plant(self, pack: Pack, dt_s: float) -> None:
        """Apply the plant faults for the next step (a `FaultHooks` method)."""
        self.plant.apply(pack, self.bench.t_s, dt_s)


def _flip(data: bytes, positions: Iterable[int]) -> bytes:
    out = bytearray(data)
    for bit in positions:
        out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)
