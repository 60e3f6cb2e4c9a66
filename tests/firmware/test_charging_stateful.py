"""CPython only: random interleavings of a GB/T 27930 session (the whole firmware against the
simulated charger): frame loss, every charger fault, the charger unplugged and plugged again,
time passing in steps of any length. Checked every 50 ms step (charging_rig.Rig.check):

- the current delivered never exceeds what BCL asked for (allowing for the frames in flight and,
  when frames are lost, the bounded wait of the contactors' OPENING) nor the published limit;
- the positive contactor never closes without a precharge, nor outside a configured session;
- every BST carries a reason, every BEM a timeout; no exception in the firmware;
- an over-current charger is disconnected within gbt_oc_ms (+ 500 ms) of the over-current.
"""

from __future__ import annotations

import random

from charging_rig import Rig
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from firmware import charging as fwc
from sim.charger import FINISHED, OFF, ChargerFaults, DcCharger
from sim.j1939tp import Frame

FAULTS = ("ccs", "overcurrent", "emergency", "insulation", "stuck_relay", "no_crm_aa")


class ChargingSession(RuleBasedStateMachine):
    @initialize(
        soc=st.floats(0.2, 0.8),
        edition_2015=st.integers(0, 1),
        seed=st.integers(0, 2**16),
        cts=st.integers(1, 8),
    )
    def start(self, soc: float, edition_2015: int, seed: int, cts: int) -> None:
        self.rng = random.Random(seed)
        self.loss = 0.0
        self.rig = Rig(
            soc=soc,
            overrides={"gbt_soc_target": round(soc * 10000) + 40, "gbt_2015": edition_2015},
            lose=self._lose,
        )
        self.rig.charger.tp.cts_packets = cts
        self.oc_from: int | None = None
        self.oc_onset: int | None = None

    def _lose(self, frame: Frame) -> bool:
        return self.loss > 0 and self.rng.random() < self.loss

    @rule(ms=st.integers(50, 4000))
    def time_passes(self, ms: int) -> None:
        self.rig.run(ms)

    @rule(pct=st.sampled_from([0, 0, 2, 10, 30]))
    def frame_loss(self, pct: int) -> None:
        self.loss = pct / 100
        if pct:
            self.rig.grace_ms = self.rig.bms.cfg.open_wait_ms + 500

    @rule(fault=st.sampled_from(FAULTS))
    def charger_fault(self, fault: str) -> None:
        f = self.rig.charger.faults
        now = self.rig.now
        if fault == "ccs":
            f.ccs_stops_at = now
        elif fault == "overcurrent":
            f.overcurrent_at = now
            self.oc_from = now
        elif fault == "emergency":
            f.emergency_stop_at = now
        elif fault == "insulation":
            f.insulation_at = now
        elif fault == "stuck_relay":
            f.stuck_relay = True
        else:
            f.no_crm_aa = True

    @rule()
    def replug(self) -> None:
        """A new, healthy charger once the old one has finished or given up (a new session)."""
        if self.rig.charger.stage in (FINISHED, OFF) and not self.rig.charger.relay_closed:
            self.rig.charger = DcCharger(insulation_ms=500, faults=ChargerFaults())
            self.oc_from = self.oc_onset = None

    @invariant()
    def nothing_broken(self) -> None:
        rig = self.rig
        assert rig.violations == [], rig.violations[:3]
        if self.oc_from is not None:
            cfg = rig.bms.cfg
            # From when the charger actually delivers above the demand by the margin.
            over = -rig.pack.current_a * 1000 - rig.chg.bcl_ma > cfg.gbt_oc_margin_ma
            if self.oc_onset is None and over:
                self.oc_onset = rig.now
            bound = cfg.gbt_oc_ms + 500  # ChargerFault is open tier: no OPENING wait
            if self.oc_onset is not None and rig.now - self.oc_onset > bound:
                assert rig.pack.current_a > -0.1, "an over-current charger still connected"
        for _, f in rig.log[-200:]:
            if f.can_id == fwc.c.BEM_ID:
                assert int.from_bytes(f.data, "little") & 0x01050505, f.data.hex()  # a timeout


ChargingSession.TestCase.settings = settings(
    max_examples=15,
    stateful_step_count=10,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_charging_session = ChargingSession.TestCase
