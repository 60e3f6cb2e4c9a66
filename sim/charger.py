"""A simulated GB/T 27930 DC charger: the off-board side, independent of the firmware's code.

Its protocol side packs and unpacks through cantools and dbc/gbt27930.dbc, its transport is
sim/j1939tp.py; nothing here imports `firmware`. The charger's state machine (charger view of
../shared/GBT27930.md §3):

    PLUGGED    CHM every 250 ms; the insulation monitor checks for `insulation_ms` once BHM came
    RECOGNISE  CRM 0x00 every 250 ms until the BRM (transport) arrives, then CRM 0xAA
    PARAMETERS on BCP: CTS every 500 ms, CML every 250 ms; on BRO 0xAA: the power stage
               matches its output to the battery, the relay closes, CRO 0x00 then 0xAA
    CHARGING   CCS every 50 ms once BCL and BCS came; the power stage follows BCL (CC: the
               current, CV: the voltage, with the current as a ceiling), within its own limits
    STOPPING   on BST (CST 1.7 "BMS stopped") or its own stop (CST reason): output to 0, relay
               open, CST every 10 ms until the current is below 5 A, then CSD on BSD
    ERROR      a BMS message missing (BRM 5 s, BCP 5 s, BRO 60 s, BCL 1 s, BCS 5 s, BSD 10 s) or
               a BEM: output off, CEM every 250 ms, from CRM again after 1 s, at most 3 times

The power stage ramps its current at `ramp_a_s` toward its setpoint, never above `max_a` or
below 0, and regulates its voltage to at most `max_v`. Fault cases (`ChargerFaults`): a timeout
(it stops sending CCS, or never acknowledges the BRM), over-current (delivers `overcurrent_pct`
of the demand), a stuck output relay, an insulation fault (found during the check, or during
charging) and an emergency stop at a given time.

Usage: ``ch = DcCharger(); out = ch.step(now_ms, frames_in, battery_v)``; `output_a` is the
current into the battery (>= 0), `relay_closed` whether its output is connected.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cantools

from hil import GBT_DBC_PATH
from sim.j1939tp import Frame, Transport

CHARGER, BMS = 0x56, 0xF4
PLUGGED, RECOGNISE, PARAMETERS, CHARGING, STOPPING, FINISHED, ERROR, OFF = range(8)
STAGES = ("PLUGGED", "RECOGNISE", "PARAMETERS", "CHARGING", "STOPPING", "FINISHED", "ERROR", "OFF")


@dataclass
class ChargerFaults:
    """Fault cases of the simulated charger; times in ms since the start, None = never."""

    ccs_stops_at: int | None = None  # it stops sending CCS (BEM CCS on the BMS side)
    no_crm_aa: bool = False  # never acknowledges the BRM (BEM CRM 0xAA)
    overcurrent_at: int | None = None  # from here it delivers overcurrent_pct of BCL
    overcurrent_pct: int = 150
    stuck_relay: bool = False  # the output relay never opens
    insulation_at_check: bool = False  # the insulation check fails: the charger stops
    insulation_at: int | None = None  # an insulation fault while charging
    emergency_stop_at: int | None = None


@dataclass
class DcCharger:
    """One charger at address 0x56 on the charger bus; see the module docstring."""

    max_v: float = 750.0
    min_v: float = 50.0
    max_a: float = 250.0
    ramp_a_s: float = 100.0  # current slew of the power stage, A/s (down: 5 times faster)
    insulation_ms: int = 2000
    send_chm: bool = True  # False: a charger of the 2011 order that starts at CRM (no CHM)
    faults: ChargerFaults = field(default_factory=ChargerFaults)
    stage: int = PLUGGED
    relay_closed: bool = False
    output_a: float = 0.0  # delivered into the battery, A (>= 0)
    output_v: float = 0.0
    demand_a: float = 0.0  # from the last BCL (magnitude)
    demand_v: float = 0.0
    cv_mode: bool = False
    bms_stop: dict[str, int] = field(default_factory=dict)  # the BST fields that were set
    own_stop: str = ""  # why the charger stopped on its own ("" = it did not)
    cem_sent: list[str] = field(default_factory=list)
    bem_received: list[dict[str, int]] = field(default_factory=list)
    attempts: int = 0
    energy_wh: float = 0.0
    history: list[tuple[int, str]] = field(default_factory=list)  # (ms, stage name)

    def __post_init__(self) -> None:
        self.db = cantools.database.load_file(str(GBT_DBC_PATH))
        self.tp = Transport(CHARGER, BMS)
        self.version = (1, 1)
        self._due: dict[str, int] = {}
        self._t = 0  # when the current wait began
        self._seen: dict[str, int] = {}
        self._bhm = False
        self._brm = self._bcp = False
        self._bro_ready = False
        self._bcl = self._bcs = False
        self._bsd = False
        self._last_ms = 0
        self._insulation_ok_at: int | None = None
        self._cem = ""
        self.history.append((0, STAGES[self.stage]))

    # -- helpers ---------------------------------------------------------------------------
    def _frame(self, name: str, **signals: float) -> Frame:
        msg = self.db.get_message_by_name(name)
        values = {s.name: 0 for s in msg.signals}
        for s in msg.signals:  # reserved and unset fields: all ones (GB/T 7.9)
            if "Reserved" in s.name or s.name.startswith(("CrmRegion", "CtsYear")):
                values[s.name] = (1 << s.length) - 1
        values.update(signals)
        return Frame(msg.frame_id, msg.encode(values, scaling=False, strict=False))

    def _every(self, key: str, now: int, period: int) -> bool:
        if now >= self._due.get(key, 0):
            self._due[key] = now + period
            return True
        return False

    def _go(self, stage: int, now: int) -> None:
        self.stage = stage
        self._t = now
        self._due.clear()
        self.history.append((now, STAGES[stage]))

    # -- one step --------------------------------------------------------------------------
    def step(self, now: int, frames: list[Frame], battery_v: float) -> list[Frame]:
        """Advance to `now` (ms) with the frames received since the last step and the battery
        voltage at the vehicle inlet; return the frames to send."""
        out: list[Frame] = []
        for f in frames:
            out += self._receive(f, now)
        out += self.tp.poll(now)
        out += self._decide(now, battery_v)
        out += self._send(now)
        self._power(now, battery_v)
        return out

    def _receive(self, f: Frame, now: int) -> list[Frame]:
        if (f.can_id >> 16) & 0xFF in (0xEC, 0xEB):
            replies = self.tp.feed(f, now)
            while self.tp.received:
                pgn, payload = self.tp.received.pop(0)
                self._long(pgn, payload, now)
            return replies
        try:
            msg = self.db.get_message_by_frame_id(f.can_id)
        except KeyError:
            return []
        if msg.senders != ["BMS"] or len(f.data) < msg.length:
            return []
        v = msg.decode(f.data[: msg.length], scaling=False, decode_choices=False)
        self._seen[msg.name] = now
        if msg.name == "BHM":
            self._bhm = True
        elif msg.name == "BRO":
            self._bro_ready = v["BroReady"] == 0xAA
        elif msg.name == "BCL":
            self._bcl = True
            self.demand_v = v["BclVoltageDemand"] * 0.1
            self.demand_a = max(0.0, 400.0 - v["BclCurrentDemand"] * 0.1)
            self.cv_mode = v["BclMode"] == 1
        elif msg.name == "BST" and self.stage in (PARAMETERS, CHARGING, STOPPING):
            if not self.bms_stop:
                self.bms_stop = {k: x for k, x in v.items() if x == 1}
            if self.stage != STOPPING:
                self._go(STOPPING, now)
        elif msg.name == "BSD":
            self._bsd = True
        elif msg.name == "BEM" and self.stage not in (ERROR, FINISHED, OFF):
            self.bem_received.append({k: x for k, x in v.items() if x == 1})
            self._error(now, "")
        return []

    def _long(self, pgn: int, payload: bytes, now: int) -> None:
        name = {0x0200: "BRM", 0x0600: "BCP", 0x1100: "BCS"}.get(pgn)
        if name is None:
            return
        msg = self.db.get_message_by_name(name)
        if len(payload) < msg.length:
            return
        self._seen[name] = now
        if name == "BRM":
            self._brm = True
        elif name == "BCP":
            self._bcp = True
        else:
            self._bcs = True

    def _error(self, now: int, cem: str) -> None:
        if cem:
            self.cem_sent.append(cem)
        self._cem = cem
        self.tp.reset()
        self._go(ERROR, now)

    def _decide(self, now: int, battery_v: float) -> list[Frame]:
        fl = self.faults
        st = self.stage
        if st == PLUGGED:
            if (self._bhm or not self.send_chm) and self._insulation_ok_at is None:
                self._insulation_ok_at = now + self.insulation_ms
            if self._insulation_ok_at is not None and now >= self._insulation_ok_at:
                if fl.insulation_at_check:
                    self.own_stop = "insulation"
                    self._go(OFF, now)  # it finds the fault and never goes on
                else:
                    self._go(RECOGNISE, now)
        elif st == RECOGNISE:
            if self._brm and not fl.no_crm_aa:
                self._go(PARAMETERS, now)
            elif not self._brm and now - self._t > 5000:
                self._error(now, "CemBrmTimeout")
        elif st == PARAMETERS:
            if not self._bcp and now - self._t > 5000:
                self._error(now, "CemBcpTimeout")
            elif self._bcp and "BRO" not in self._seen and now - self._t > 5000:
                self._error(now, "CemBroTimeout")
            elif self._bcp and not self._bro_ready and now - self._t > 60000:
                self._error(now, "CemBroTimeout")
            elif self._bro_ready and abs(self.output_v - battery_v) < 10 and battery_v > 0:
                self.relay_closed = True
        elif st == CHARGING:
            if self._bcl and now - self._seen.get("BCL", now) > 1000:
                self._error(now, "CemBclTimeout")
            elif self._bcs and now - self._seen.get("BCS", now) > 5000:
                self._error(now, "CemBcsTimeout")
            elif fl.emergency_stop_at is not None and now >= fl.emergency_stop_at:
                self.own_stop = "CstFaultEmergencyStop"
                self._go(STOPPING, now)
            elif fl.insulation_at is not None and now >= fl.insulation_at:
                self.own_stop = "BsmInsulation"  # its monitor: reported as a CST fault
                self._go(STOPPING, now)
        elif st == STOPPING:
            if self.output_a < 5.0:
                self.relay_closed = self.faults.stuck_relay
                if self._bsd:
                    self._go(FINISHED, now)
            if now - self._t > 10000 and not self._bsd:
                self._error(now, "CemBsdTimeout")
        elif st == ERROR:
            if now - self._t > 1000 and self.output_a < 5.0:
                if self.attempts < 3 and not self.bms_stop:
                    self.attempts += 1
                    self._brm = self._bcp = self._bro_ready = self._bcl = self._bcs = False
                    self._seen.clear()
                    self._go(RECOGNISE, now)
                else:
                    self._go(OFF, now)
        return []

    def _send(self, now: int) -> list[Frame]:
        st = self.stage
        out: list[Frame] = []
        if st == PLUGGED and self.send_chm and self._every("CHM", now, 250):
            out.append(self._frame("CHM", ChmVersionMajor=1, ChmVersionMinor=1))
        elif st == RECOGNISE and self._every("CRM", now, 250):
            out.append(self._frame("CRM", CrmRecognition=0, CrmChargerNumberLow=1))
        elif st == PARAMETERS:
            if self._every("CRM", now, 250) and not self._bcp:
                out.append(self._frame("CRM", CrmRecognition=0xAA, CrmChargerNumberLow=1))
            if self._bcp and self._every("CTS", now, 500):
                out.append(self._frame("CTS", CtsSecond=0, CtsYearByte6=0x20, CtsYearByte7=0x26))
            if self._bcp and self._every("CML", now, 250):
                out.append(
                    self._frame(
                        "CML",
                        CmlMaxVoltage=round(self.max_v * 10),
                        CmlMinVoltage=round(self.min_v * 10),
                        CmlMaxCurrent=round((400 - self.max_a) * 10),
                        CmlMinCurrent=4000,
                    )
                )
            if self._bro_ready and self._every("CRO", now, 250):
                ready = self.relay_closed
                out.append(self._frame("CRO", CroReady=0xAA if ready else 0))
            if self.relay_closed and self._bcl and self._bcs:
                self._go(CHARGING, now)
        elif st == CHARGING:
            ccs_off = self.faults.ccs_stops_at is not None and now >= self.faults.ccs_stops_at
            if not ccs_off and self._every("CCS", now, 50):
                minutes = (now - self._t) // 60000
                out.append(
                    self._frame(
                        "CCS",
                        CcsVoltage=round(self.output_v * 10),
                        CcsCurrent=round((400 - self.output_a) * 10),
                        CcsChargingTime=min(600, minutes),
                        CcsPermitted=1,
                    )
                )
        elif st == STOPPING:
            if self._every("CST", now, 10) and now - self._t < 5000:
                fields = {"CstBmsStopped": 1} if self.bms_stop else {}
                if self.own_stop == "CstFaultEmergencyStop":
                    fields = {"CstFault": 1, "CstFaultEmergencyStop": 1}
                elif self.own_stop:
                    fields = {"CstFault": 1, "CstFaultOther": 1}
                if self.faults.stuck_relay and self.output_a < 5.0:
                    fields["CstFaultOther"] = 1
                out.append(self._frame("CST", **fields))
            if self._bsd and self._every("CSD", now, 250):
                out.append(
                    self._frame("CSD", CsdEnergy=round(self.energy_wh / 100), CsdChargerNumberLow=1)
                )
        elif st == FINISHED and self._every("CSD", now, 250) and now - self._t < 1000:
            out.append(
                self._frame("CSD", CsdEnergy=round(self.energy_wh / 100), CsdChargerNumberLow=1)
            )
        elif st == ERROR and self._cem and self._every("CEM", now, 250):
            out.append(self._frame("CEM", **{self._cem: 1}))
        return out

    # -- power stage -----------------------------------------------------------------------
    def _power(self, now: int, battery_v: float) -> None:
        dt = max(0, now - self._last_ms) / 1000.0
        self._last_ms = now
        target = 0.0
        if self.stage == CHARGING and self.relay_closed:
            target = min(self.demand_a, self.max_a)
            oc = self.faults.overcurrent_at
            if oc is not None and now >= oc:
                target = self.demand_a * self.faults.overcurrent_pct / 100 + 1.0
            v_limit = min(self.demand_v, self.max_v)
            if battery_v > v_limit:  # CV: back off in proportion to the overshoot
                target = max(0.0, min(target, self.output_a - 20.0 * (battery_v - v_limit)))
        step_up, step_down = self.ramp_a_s * dt, 5 * self.ramp_a_s * dt
        if target > self.output_a:
            self.output_a = min(target, self.output_a + step_up)
        else:
            self.output_a = max(target, self.output_a - step_down)
        if not self.relay_closed:
            self.output_a = 0.0
        # Before the relay closes the stage pre-charges its output to the battery voltage.
        self.output_v = battery_v if (self.relay_closed or self._bro_ready) else 0.0
        self.energy_wh += self.output_a * self.output_v * dt / 3600
