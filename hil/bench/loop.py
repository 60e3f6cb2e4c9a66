"""The closed loop: plant -> sensors -> CAN -> BMS -> CAN -> contactors, balancing, limits -> plant.

One `Bench.step()` is one control period: the bench measures the plant, injects the measurements and
a vehicle request, ticks the BMS (lock-step) or waits one period (real time), decodes what the BMS
sent with cantools, applies the contactor and balancing commands to the plant and advances the plant
with the load the scenario asks for, clipped by nothing: respecting the published limits is the
scenario's job, so tests can also drive a pack beyond them.

Usage:
    bench = Bench(transport, Pack(PackConfig(n_cells=16)), SensorModel())
    status = bench.step(load_current_a=10.0)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import can
import cantools
import numpy as np
from crccheck.crc import Crc8SaeJ1850

from firmware import can_codec as codec
from hil import DBC_PATH
from hil.bench.canlog import CanLog, CanLogMode
from hil.bench.transport import Frame, Transport
from sim.pack import Pack
from sim.scenario import Limits
from sim.sensors import Measurement, SensorModel
from sim.vehicle import VcuRequests

if TYPE_CHECKING:
    from hil.bench.dut import ProcessDut

CELLS_PER_FRAME = 4
BALANCING_CELLS_PER_FRAME = 24
FAULT_NAMES = (
    "CellOverVoltage",
    "CellUnderVoltage",
    "OverTempCharge",
    "OverTempDischarge",
    "UnderTempCharge",
    "UnderTempDischarge",
    "OverCurrentCharge",
    "OverCurrentDischarge",
    "MeasurementStale",
    "MeasurementImplausible",
    "VcuRequestStale",
    "PrechargeFailed",
    "LoopOverrun",
    "WatchdogReset",
    "InternalError",
    "CellImbalance",
    "ThermalRunaway",
    "OpenSenseWire",
    "StuckCellVoltage",
    "PackVoltageMismatch",
    "CurrentSensorMismatch",
    "VcuRequestInvalid",
    "ContactorFeedback",
    "ContactorWelded",
    "OverCurrentChargeCold",
    "TempHighDerate",
    "TempLowDerate",
    "StorageFault",
    "CurrentLimitIgnored",
    "ChargerFault",
)
BMS_STATES = ("INIT", "STANDBY", "PRECHARGE", "CLOSED", "FAULT", "OPENING", "RETRY_WAIT")

VCU_DATA_ID = VcuRequests.DATA_ID
vcu_crc = VcuRequests.crc


def e2e_crc(can_id: int, frame: bytes | bytearray) -> int:
    """The E2E CRC-8 SAE J1850 of a frame's bytes 0..6 under its data ID (the CAN id, low byte
    first), as firmware/e2e.py checks it."""
    return int(Crc8SaeJ1850.calc(bytes((can_id & 0xFF, can_id >> 8)) + bytes(frame[:7])))


class BenchError(RuntimeError):
    """The device under test did not answer as the protocol requires."""


@dataclass
class BmsStatus:
    """The latest values the BMS published, decoded with cantools from its frames."""

    state: int = 0
    contactor_neg: bool = False
    contactor_pre: bool = False
    contactor_pos: bool = False
    fault_tier: int = 0
    cooling: bool = False
    heating: bool = False
    thermal_reason: int = 0
    reset_cause: int = 0
    alive: int = -1
    soc_pct: float = float("nan")
    soh_pct: float = float("nan")
    pack_voltage_v: float = float("nan")
    pack_current_a: float = float("nan")
    cell_v_min: float = float("nan")
    cell_v_max: float = float("nan")
    temp_min_c: float = float("nan")
    temp_max_c: float = float("nan")
    limits: Limits = field(default_factory=lambda: Limits(0.0, 0.0, 0.0))
    faults: frozenset[str] = frozenset()
    balancing: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    balancing_reason: int = 0
    cycle_time_us: int = 0
    heap_used: int = 0
    frames: int = 0
    # BMS_Estimation, BMS_PowerLimits, BMS_CellSoc (the estimator's messages)
    soc_bound_pct: float = float("nan")
    soh_capacity_pct: float = float("nan")
    soh_capacity_confidence_pct: float = float("nan")
    soh_resistance_pct: float = float("nan")
    soh_resistance_confidence_pct: float = float("nan")
    current_offset_a: float = float("nan")
    sop_a: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    """Charge 10 s, discharge 10 s, charge 30 s, discharge 30 s (A, magnitudes)."""
    cell_soc_pct: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @property
    def closed(self) -> bool:
        """True when the BMS commands both main contactors closed."""
        return self.contactor_neg and self.contactor_pos

    @property
    def state_name(self) -> str:
        """BmsState as text."""
        return BMS_STATES[self.state] if self.state < len(BMS_STATES) else str(self.state)


@dataclass
class StepRecord:
    """What one step saw; the report's time series is a list of these."""

    t_s: float
    load_a: float
    current_a: float
    status: BmsStatus
    measurement: Measurement


MeasurementHook = Callable[[Measurement], Measurement | None]


class FaultHooks(Protocol):
    """Where a fault injector (`hil.bench.inject.FaultInjector`) acts in every step."""

    def on_measurement(self, m: Measurement) -> Measurement:
        """The sensor readings as a faulty sensor chain delivers them."""

    def on_frames(self, frames: list[Frame]) -> list[Frame]:
        """The bench's frames (before SIM_Tick) as a faulty bus delivers them."""

    def on_plant(self, pack: Pack, dt_s: float) -> None:
        """Plant faults for the next plant step (after the BMS's commands were applied)."""


class Bench:
    """Closes the loop between a plant model and a BMS reached through a transport."""

    def __init__(
        self,
        transport: Transport,
        pack: Pack,
        sensors: SensorModel,
        *,
        cycle_ms: int = 100,
        lockstep: bool = True,
        log_path: str | None = None,
        log_mode: CanLogMode = "full",
        reply_timeout_s: float = 5.0,
    ) -> None:
        self.transport = transport
        self.pack = pack
        self.sensors = sensors
        self.cycle_ms = cycle_ms
        self.lockstep = lockstep
        self.reply_timeout_s = reply_timeout_s
        self.db = cantools.database.load_file(str(DBC_PATH))
        self.status = BmsStatus(
            balancing=np.zeros(pack.n_cells, dtype=bool),
            cell_soc_pct=np.full(pack.n_cells, np.nan),
        )
        self.t_s = 0.0
        """Plant time (s): the control periods run so far times the period, exact (a sum of
        0.1 s steps would drift off the whole seconds the report's rows fall on)."""
        self.periods = 0
        self.seq = 0
        self.vcu_alive = 0
        self.vcu = VcuRequests()
        """The vehicle's VCU (sim.vehicle): no key until `attach_dut` (or a caller) gives one."""
        self.shunt_counter = 0
        self.measurement_hook: MeasurementHook | None = None
        self.faults: FaultHooks | None = None  # set by hil.bench.inject.FaultInjector
        self.dut: ProcessDut | None = None  # set when the bench started the firmware itself
        self.listeners: list[Callable[[StepRecord], None]] = []
        """Called with every step's record (a run recorder, the test-centre report)."""
        self._buf = bytearray(8)
        self.can_log = CanLog(Path(log_path), log_mode, self.db) if log_path else None
        """The run's CAN log (`log_path`, every frame or the windows of `log_mode`,
        hil.bench.canlog); its `describe()` says what it holds once the bench is closed."""
        self._logger: CanLog | None = self.can_log
        self.log_start = time.time()
        """Wall-clock time (s since the epoch) of simulated time 0 in the CAN log: a log's
        timestamps are this plus the simulated time, so BLF readers show when the run started."""
        self._decoders = {
            m.frame_id: m
            for m in self.db.messages
            if m.senders == ["BMS"] and m.name not in ("BMS_CellVoltages", "BMS_CellTemps")
        }

    # ---- frames ------------------------------------------------------------------------------
    def _frame(self, encode: Callable[..., None], can_id: int, *values: int) -> Frame:
        encode(self._buf, *values)
        return can_id, bytes(self._buf)

    def injection_frames(self, m: Measurement) -> list[Frame]:
        """SIM_* frames carrying one measurement set, in firmware units."""
        frames = []
        cells = _padded(m.cell_mv)
        for g in range(len(cells) // CELLS_PER_FRAME):
            v = cells[g * CELLS_PER_FRAME : (g + 1) * CELLS_PER_FRAME]
            frames.append(
                self._frame(codec.encode_sim_cell_voltages, codec.SIM_CELL_VOLTAGES_ID, g, *v)
            )
        temps = _padded(m.temp_dc)
        for g in range(len(temps) // CELLS_PER_FRAME):
            t = temps[g * CELLS_PER_FRAME : (g + 1) * CELLS_PER_FRAME]
            frames.append(self._frame(codec.encode_sim_cell_temps, codec.SIM_CELL_TEMPS_ID, g, *t))
        frames.append(
            self._frame(
                codec.encode_sim_pack_measurements,
                codec.SIM_PACK_MEASUREMENTS_ID,
                int(m.current_ma),
                round(int(m.pack_mv) / 100),
                round(int(m.link_mv) / 100),
                self.seq & 15,
            )
        )
        frames.extend(self.shunt_frames(m))
        fb = int(m.feedback)
        frames.append(
            self._frame(
                codec.encode_sim_aux,
                codec.SIM_AUX_ID,
                fb & 1,
                (fb >> 1) & 1,
                (fb >> 2) & 1,
                int(m.current2_ma),
            )
        )
        return frames

    def shunt_frames(self, m: Measurement) -> list[Frame]:
        """CS_Current and CS_Voltage of the pack's CAN shunt (measurement source `can-sensor`),
        each with its E2E counter and CRC (see the DBC comments). A bench board takes its pack
        values from SIM_PackMeasurements and drops these; they are on the bus as in a vehicle."""
        self.shunt_counter = (self.shunt_counter + 1) & 15
        cur = bytearray(8)
        codec.encode_cs_current(cur, int(m.current_ma), self.shunt_counter, 0)
        cur[7] = e2e_crc(codec.CS_CURRENT_ID, cur)
        volt = bytearray(8)
        codec.encode_cs_voltage(volt, int(m.pack_mv), int(m.link_mv), self.shunt_counter, 0)
        volt[7] = e2e_crc(codec.CS_VOLTAGE_ID, volt)
        return [(codec.CS_CURRENT_ID, bytes(cur)), (codec.CS_VOLTAGE_ID, bytes(volt))]

    def vcu_frame(self, close: bool, fault_reset: bool, charge: bool = False) -> Frame:
        """VCU_Request from the bench's VCU (`vcu`): counter, freshness, MAC, CRC."""
        data = self.vcu.frame(close, fault_reset, charge)
        self.vcu_alive = self.vcu.alive
        return codec.VCU_REQUEST_ID, data

    def attach_dut(self, dut: ProcessDut) -> None:
        """The bench started `dut` (and stops it with itself); its VCU is `dut`'s (`vcu_of`)."""
        self.dut = dut
        self.vcu_of(dut)

    def vcu_of(self, dut: ProcessDut) -> None:
        """The VCU signs with `dut`'s key and keeps its freshness value beside the DUT, so a
        restarted firmware or a new bench on the same DUT goes on where the last one stopped."""
        self.vcu = VcuRequests(dut.vcu_key, dut.vcu_freshness_file)

    # ---- the loop ----------------------------------------------------------------------------
    def within_limits(self, load_current_a: float) -> float:
        """`load_current_a` (A, + = discharge) clipped to the current limits the BMS published
        last (BMS_Limits): the load of a vehicle that honours them."""
        lim = self.status.limits
        return min(max(load_current_a, -lim.charge_current_a), lim.discharge_current_a)

    def step(
        self,
        load_current_a: float,
        *,
        vcu_close: bool = True,
        fault_reset: bool = False,
        inject: bool = True,
        vcu: bool = True,
        charge_request: bool = False,
    ) -> StepRecord:
        """Run one control period. `inject=False` withholds measurements (a stale-data test)."""
        faults = self.faults
        m = self.sensors.measure(self.pack)
        if faults is not None:
            m = faults.on_measurement(m)
        if self.measurement_hook is not None:
            m = self.measurement_hook(m) or m
        frames = self.injection_frames(m) if inject else []
        if vcu:
            frames.append(self.vcu_frame(vcu_close, fault_reset, charge_request))
        if faults is not None:
            frames = faults.on_frames(frames)
        self.seq = (self.seq + 1) & 0xFFFF
        if self.lockstep:
            frames.append(
                self._frame(codec.encode_sim_tick, codec.SIM_TICK_ID, self.seq, self.cycle_ms)
            )
        self._log(frames)
        try:
            self.transport.send_many(frames)
            self._receive()
        except (OSError, BenchError):
            if self.dut is not None:  # a firmware that stopped says why (DutError)
                self.dut.raise_if_stopped()
            raise
        self._apply()
        dt = self.cycle_ms / 1000.0
        if faults is not None:
            faults.on_plant(self.pack, dt)
        self.pack.step(dt, load_current_a)
        snapshot = replace(
            self.status,
            balancing=self.status.balancing.copy(),
            cell_soc_pct=self.status.cell_soc_pct.copy(),
        )
        record = StepRecord(self.t_s, load_current_a, self.pack.current_a, snapshot, m)
        self.periods += 1
        self.t_s = self.periods * self.cycle_ms / 1000.0
        for listener in self.listeners:
            listener(record)
        return record

    def step_until(
        self,
        done: Callable[[BmsStatus], bool],
        max_steps: int,
        load_current_a: float = 0.0,
        **step_kwargs: bool,
    ) -> list[StepRecord]:
        """Step until `done(status)` holds or `max_steps` ran; returns the records of those steps.

        bench.step_until(lambda s: s.closed, 30) closes the contactors (the caller asserts it).
        """
        records = []
        for _ in range(max_steps):
            records.append(self.step(load_current_a, **step_kwargs))
            if done(self.status):
                break
        return records

    def _receive(self) -> None:
        status = self.status
        status.frames = 0
        deadline = time.monotonic() + (
            self.reply_timeout_s if self.lockstep else self.cycle_ms / 1000.0
        )
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                if self.lockstep:
                    console = self.dut.console()[-2000:] if self.dut else ""
                    raise BenchError(
                        f"no BMS_CycleDiag for tick {self.seq} within the timeout\n{console}"
                    )
                return
            frame = self.transport.recv(remaining)
            if frame is None:
                continue
            status.frames += 1
            self._log_rx(frame)
            if self._decode(*frame) and self.lockstep:
                return

    def _decode(self, can_id: int, data: bytes) -> bool:
        """Update the status from one frame; True when it acknowledges the current tick."""
        msg = self._decoders.get(can_id)
        if msg is None:
            return False
        v = msg.decode(data, decode_choices=False)
        s = self.status
        name = msg.name
        if name == "BMS_State":
            s.state = int(v["BmsState"])
            s.contactor_neg = bool(v["ContactorNeg"])
            s.contactor_pre = bool(v["ContactorPre"])
            s.contactor_pos = bool(v["ContactorPos"])
            s.fault_tier = int(v["FaultTier"])
            s.reset_cause = int(v["ResetCause"])
            s.alive = int(v["AliveCounter"])
        elif name == "BMS_Pack":
            s.soc_pct = float(v["SOC"])
            s.soh_pct = float(v["SOH"])
            s.pack_voltage_v = float(v["PackVoltage"])
            s.pack_current_a = float(v["PackCurrent"])
        elif name == "BMS_CellVoltageStats":
            s.cell_v_min = float(v["CellVoltageMin"])
            s.cell_v_max = float(v["CellVoltageMax"])
        elif name == "BMS_TempStats":
            s.temp_min_c = float(v["TempMin"])
            s.temp_max_c = float(v["TempMax"])
        elif name == "BMS_Limits":
            s.limits = Limits(
                float(v["ChargeCurrentLimit"]),
                float(v["DischargeCurrentLimit"]),
                float(v["ChargeVoltageLimit"]),
            )
        elif name == "BMS_Faults":
            s.faults = frozenset(n for n in FAULT_NAMES if v[n])
        elif name == "BMS_Balancing":
            g = int(v["BalancingGroup"])
            bits = int(v[f"BalancingMask_G{g}"])
            lo = g * BALANCING_CELLS_PER_FRAME
            n = min(BALANCING_CELLS_PER_FRAME, len(s.balancing) - lo)
            if n > 0:
                s.balancing[lo : lo + n] = [(bits >> k) & 1 for k in range(n)]
            s.balancing_reason = int(v["BalancingReason"])
        elif name == "BMS_Thermal":
            s.cooling = bool(v["Cooling"])
            s.heating = bool(v["Heating"])
            s.thermal_reason = int(v["ThermalReason"])
        elif name in ("BMS_Estimation", "BMS_PowerLimits", "BMS_CellSoc"):
            self._decode_estimation(name, v)
        elif name == "BMS_CycleDiag":
            s.cycle_time_us = int(v["CycleTime"])
            s.heap_used = int(v["HeapUsed"])
            return int(v["TickSeq"]) == self.seq
        return False

    def _decode_estimation(self, name: str, v: dict[str, Any]) -> None:
        s = self.status
        if name == "BMS_Estimation":
            s.soc_bound_pct = float(v["SocErrorBound"])
            s.soh_capacity_pct = float(v["SohCapacity"])
            s.soh_capacity_confidence_pct = float(v["SohCapacityConfidence"])
            s.soh_resistance_pct = float(v["SohResistance"])
            s.soh_resistance_confidence_pct = float(v["SohResistanceConfidence"])
            s.current_offset_a = float(v["CurrentOffset"])
        elif name == "BMS_PowerLimits":
            s.sop_a = (
                float(v["ChargeCurrent10s"]),
                float(v["DischargeCurrent10s"]),
                float(v["ChargeCurrent30s"]),
                float(v["DischargeCurrent30s"]),
            )
        else:
            g = int(v["CellSocGroup"])
            for k in range(CELLS_PER_FRAME):
                i = g * CELLS_PER_FRAME + k
                if i < len(s.cell_soc_pct):
                    s.cell_soc_pct[i] = float(v[f"Cell{i + 1:03d}_Soc"])

    def _apply(self) -> None:
        s = self.status
        self.pack.set_contactors(s.contactor_neg, s.contactor_pre, s.contactor_pos)
        self.pack.set_balancing(s.balancing)
        self.pack.set_thermal(s.cooling, s.heating)

    # ---- CAN log -----------------------------------------------------------------------------
    def _log(self, frames: list[Frame]) -> None:
        if self._logger is None:
            return
        for can_id, data in frames:
            self._logger.on_message_received(
                can.Message(
                    timestamp=self.log_start + self.t_s,
                    arbitration_id=can_id,
                    data=data,
                    is_extended_id=False,
                    is_rx=False,
                    channel=0,
                )
            )

    def _log_rx(self, frame: Frame) -> None:
        if self._logger is None:
            return
        self._logger.on_message_received(
            can.Message(
                timestamp=self.log_start + self.t_s + self.cycle_ms / 1000.0,
                arbitration_id=frame[0],
                data=frame[1],
                is_extended_id=False,
                channel=0,
            )
        )

    def close(self) -> None:
        """Flush the CAN log and close the transport."""
        if self._logger is not None:
            self._logger.stop()
            self._logger = None
        self.transport.close()


def _padded(values: np.ndarray) -> list[int]:
    """Values as ints, padded with zeros to a whole number of 4-value frames."""
    out = [int(x) for x in values]
    out += [0] * (-len(out) % CELLS_PER_FRAME)
    return out
