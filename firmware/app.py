"""The BMS application: builds every layer from a board and a configuration and runs the loop.

Owns the control cycle (measure -> protect (with contactor feedback and VCU frame integrity) ->
estimate -> command contactors -> thermal outputs -> limits -> balance -> fault memory ->
transmit), its timing, the watchdog policy (fed only when a cycle completes) and the rule that
no exception escapes the loop: an exception opens the contactors and raises InternalError.
"""

import gc
import sys

from . import config as config_mod
from .balancing import Balancer
from .comm import Comm
from .compat import IS_MICROPYTHON, ticks_add, ticks_diff, ticks_us
from .contactors import Contactors
from .data import Data
from .diag_port import DiagPort
from .estimation import SocEstimator
from .fault_memory import FaultMemory
from .gcpolicy import Collector
from .limits import Limits
from .persistence import CORRUPT, ERASED, FALLBACK, OK, Persistence
from .protection import (
    FAULT_CHARGER,
    FAULT_CONTACTOR_FB,
    FAULT_INTERNAL_ERROR,
    FAULT_LOOP_OVERRUN,
    FAULT_PRECHARGE_FAILED,
    FAULT_STORAGE,
    FAULT_VCU_INVALID,
    FAULT_WATCHDOG_RESET,
    FAULT_WELDED,
    TIER_DERATE,
    Protection,
)
from .sop import Sop
from .thermal import Thermal

_MAX_ERROR_REPORTS = 10  # console reports of caught exceptions; bounded so a loop cannot flood it
_RESET_CAUSE_WATCHDOG = 1


class Bms:
    """One BMS instance: the layers, their wiring, and one control cycle."""

    def __init__(self, board, cfg):
        self.board = board
        self.cfg = cfg
        # First: its one contiguous buffer is the largest allocation here.
        self.fault_memory = FaultMemory(cfg)
        self.data = d = Data(cfg)  # every block that crosses a module boundary (data.py)
        self.meas = d.meas
        self.estimator = SocEstimator(cfg, d)
        self.protection = Protection(cfg, d.faults)
        self.contactors = Contactors(cfg, d.contactors)
        self.limits = Limits(cfg, d.limits)
        self.sop = Sop(cfg, d)
        self.balancer = Balancer(cfg, d)
        self.comm = Comm(board, cfg, d)
        self.thermal = Thermal(cfg, d.thermal)
        self.alive = 0
        self.cycle_us = 0
        self.cycle_load_pct = 0
        self.errors = 0
        self.skipped = 0  # control cycles skipped after a delay (run() runs the latest one)
        self.heap_live = 0  # heap in use after the last collection, bytes
        self.gc = Collector()  # collections between cycles only (firmware/gcpolicy.py)
        self.reset_cause = board.reset_cause()
        if self.reset_cause == _RESET_CAUSE_WATCHDOG:
            self.protection.set_fault(FAULT_WATCHDOG_RESET, True)
        # SOC, SOH, counters and the fault memory come back before the first cycle; a damaged
        # or erased record is a (resettable) StorageFault warning, its client starting from
        # defaults. A record the periodic policy wrote (not at an orderly shutdown) may be older
        # than the state when the power went: the SOC bound grows by what can have moved since.
        self.persist = p = Persistence(board, cfg.persist_dirty_ms)
        self._est_rec = est = p.register("est", self.estimator, cfg.persist_interval_ms)
        p.register("faults", self.fault_memory, cfg.persist_interval_ms)
        # The last vehicle-request freshness value taken: replays of older frames stay refused
        # after a reset (firmware/secoc.py).
        p.register("secoc", self.comm.secoc, cfg.persist_interval_ms)
        p.restore()
        if p.status in (FALLBACK, CORRUPT, ERASED):
            self.protection.set_fault(FAULT_STORAGE, True)
        if est.restored in (OK, FALLBACK) and not est.clean:
            self.estimator.widen_bound(unrecorded_soc(cfg))
        self._persist_soc = -1  # SOC (0.01 %) when the estimator's record was last written
        self._last_ms = None
        # Work that runs between control cycles, never inside one (diagnostics, charging
        # communication): objects with `service(now_ms)`, each bounding its own time per call.
        self.diag = DiagPort(self)  # UDS while a tester talks (firmware/diag_port.py)
        self.comm.diag = self.diag
        self.services = [self.diag]
        # DC charging (GB/T 27930) on a board with a charger CAN channel (firmware/charging.py).
        self.charging = None
        if cfg.charging and hasattr(board, "charger_recv"):
            try:
                from .charging import Charging

                self.charging = Charging(self)
                self.services.append(self.charging)
            except MemoryError:
                # A board without the heap for it (esp32 with .mpy files): no DC charging, the
                # BMS runs on (nothing on the charger bus ever asks for its contactors).
                self.charging = None
                gc.collect()
                print("cellguard: DC charging unavailable: too little heap")

    def run_services(self, now_ms):
        """Give every between-cycle service its turn; a service that raises fails safe. True
        when one has more to do at once (it returned a true value): the loop does not idle."""
        busy = False
        for s in self.services:
            try:
                if s.service(now_ms):
                    busy = True
            except Exception as e:  # noqa: BLE001 - a service fault must not end the BMS
                self.fail(e)
        return busy

    def cycle(self, now_ms):
        """Run one control cycle at board time `now_ms`."""
        board = self.board
        d = self.data
        meas = d.meas
        prot = self.protection
        faults = d.faults
        board.measure(meas, now_ms)
        # The bleed mask still holds last cycle's command: the one on while these values were taken.
        meas.compensate(d.balancing.mask)
        stale = meas.evaluate(now_ms)
        comm = self.comm
        vcu_stale = comm.vcu_stale(now_ms)
        prot.check(meas, now_ms, stale, vcu_stale)
        lim = d.limits  # still the limits published last cycle: what the vehicle knew
        prot.check_limits(meas.current_ma, lim.charge_ma, lim.discharge_ma, now_ms)
        prot.set_fault(FAULT_VCU_INVALID, comm.vcu_bad >= self.cfg.vcu_bad_count)
        cont = self.contactors
        co = d.contactors
        # Only a feedback reading taken since the last cycle can confirm the latest command; the
        # reading is consumed (-1) so a missing frame never looks like a stuck contactor.
        if self.cfg.contactor_feedback and not stale and meas.feedback >= 0:
            cont.check_feedback(now_ms, meas.feedback)
            meas.feedback = -1
        prot.set_fault(FAULT_CONTACTOR_FB, co.fb_mismatch)
        prot.set_fault(FAULT_WELDED, co.welded)
        if comm.take_reset_request():
            prot.request_reset()
            comm.reset_inputs()
            cont.reset_retries()
        dt = self.cfg.cycle_ms if self._last_ms is None else ticks_diff(now_ms, self._last_ms)
        self._last_ms = now_ms
        valid = faults.meas_valid  # fresh and plausible: check() has just looked
        if valid:
            self.estimator.update(meas, dt, now_ms)
        chg = self.charging
        if chg is not None:
            prot.set_fault(FAULT_CHARGER, chg.charger_fault)
        # A charging session asks for the same close (precharge, faults) as the vehicle; a
        # tester's contactor test closes through the same state machine too (precharge first).
        close = (comm.vcu_close and not vcu_stale) or (chg is not None and chg.close_request)
        close = cont.test(now_ms, d.routines, close, meas.current_ma, faults.tier >= TIER_DERATE)
        cont.step(
            now_ms,
            close,
            faults.open_required,
            # Precharge ends against the larger pack reading: a pack sensor reading low must not
            # end it early (firmware/contactors.py).
            max(meas.pack_mv, meas.cell_sum_mv),
            meas.link_mv,
            meas.current_ma,
            meas.pack_count,
        )
        if co.precharge_failed:
            prot.set_fault(FAULT_PRECHARGE_FAILED, True)
        board.set_contactors(co.neg, co.pre, co.pos)
        th = d.thermal
        self.thermal.update(meas, valid, comm.vcu_charge and not vcu_stale)
        board.set_thermal(th.cooling, th.heating)
        self.sop.update(meas, valid and not faults.open_required, dt)
        self.limits.update(meas, faults.open_required, faults.tier, th.heating)
        # The published limits honour both the tables' derating and what the model says every
        # cell can take for 30 s.
        p = d.power
        self.limits.cap(p.charge_ma_30s, p.discharge_ma_30s)
        self.balancer.update(meas, faults.open_required, now_ms)
        board.set_balancing(d.balancing.mask)
        self.fault_memory.update(faults.active, meas, d.soc.soc, dt, valid)
        comm.transmit(self)
        self.alive = (self.alive + 1) & 15

    def persist_service(self, now_ms):
        """Write the persistent records that are due (between cycles: a flash write takes ms).
        The estimator's is due as soon as the SOC moved persist_soc_step since it was written."""
        try:
            soc = self.data.soc
            est = self._est_rec
            if soc.initialised:
                if self._persist_soc < 0:
                    self._persist_soc = soc.soc
                elif abs(soc.soc - self._persist_soc) >= self.cfg.persist_soc_step:
                    est.due = True
            seq = est.seq
            self.persist.service(now_ms)
            if est.seq != seq:
                self._persist_soc = soc.soc
            self.protection.set_fault(FAULT_STORAGE, self.persist.write_failed)
        except Exception as e:  # noqa: BLE001 - storage trouble must not end the BMS
            self.fail(e)

    def safe_state(self):
        """Open everything. Used when a cycle failed: whatever broke, the pack is disconnected."""
        self.contactors.force_open()
        self.board.set_contactors(0, 0, 0)
        self.balancer.clear()
        self.board.set_balancing(self.data.balancing.mask)

    def fail(self, e):
        """Whatever raised: safe state, InternalError (latched), a bounded console report."""
        self.errors += 1
        self.protection.set_fault(FAULT_INTERNAL_ERROR, True)
        try:
            self.safe_state()
        except Exception:  # noqa: BLE001 - a broken output layer still gets the open command
            self.board.set_contactors(0, 0, 0)
        if self.errors <= _MAX_ERROR_REPORTS:
            _report(e)

    def guarded_cycle(self, now_ms, late=False):
        """Run a cycle; on any exception go to the safe state. Returns True when it completed.
        `late`: cycles were skipped before this one (LoopOverrun, as a cycle over its period).
        The collection that is due runs after it, outside its timed part; automatic collection
        stays on inside it as the backstop (firmware/gcpolicy.py)."""
        self.gc.cycle_begin()
        t0 = ticks_us()
        ok = True
        try:
            self.cycle(now_ms)
            self.protection.set_fault(FAULT_INTERNAL_ERROR, False)
        except Exception as e:  # noqa: BLE001 - the loop must survive anything
            ok = False
            self.fail(e)
        us = ticks_diff(ticks_us(), t0)
        self.cycle_us = us
        period_us = self.cfg.cycle_ms * 1000
        self.cycle_load_pct = us * 100 // period_us
        # Late, too long, or frames left waiting in every pass since the last cycle (a flood
        # the receive budget holds back: firmware/comm.py).
        comm = self.comm
        backlog = not comm.rx_drained
        comm.rx_drained = False
        self.protection.set_fault(FAULT_LOOP_OVERRUN, late or backlog or us > period_us)
        if self.gc.between(not ok):
            self.heap_live = self.gc.live
        return ok


def _report(e):
    if IS_MICROPYTHON:
        sys.print_exception(e)
    else:
        print("cellguard: cycle failed:", repr(e))


def build(board, cfg=None):
    """Build the BMS from `cfg` (default: load it through the board; halt on a bad one)."""
    if cfg is None:
        cfg = config_mod.from_board(board)
    gc.collect()  # import-time garbage out of the way before the long-lived objects are made
    return Bms(board, cfg)


def run(board, cfg=None, bms=None):
    """The main loop (of `bms`, built here unless given). Never returns on a board; the sim
    board exits on watchdog reset."""
    if bms is None:
        bms = build(board, cfg)
    period = bms.cfg.cycle_ms
    next_due = ticks_add(board.ticks_ms(), period)
    comm = bms.comm
    try:
        while True:
            more = False
            try:
                more = comm.poll(board.ticks_ms())
            except Exception as e:  # noqa: BLE001 - a receive-path fault must not end the BMS
                bms.fail(e)
            now = board.ticks_ms()
            ran = False
            behind = ticks_diff(now, next_due)
            if behind >= 0:
                # One cycle per pass, on the latest slot that fell due: after a delay the missed
                # cycles are skipped, not run back to back on the one set of measurements that
                # arrived before them (a glitching reading would count for several cycles).
                missed = behind // period
                if missed:
                    next_due = ticks_add(next_due, missed * period)
                    bms.skipped += missed
                if bms.guarded_cycle(next_due, missed > 0):
                    board.wdt_feed()
                next_due = ticks_add(next_due, period)
                ran = True
            if ran and bms.alive == 0:
                bms.persist_service(now)
            busy = bms.run_services(board.ticks_ms()) or more
            try:
                if comm.tick_pending:
                    comm.tick_pending = False
                    comm.send_cycle_diag(comm.tick_seq, bms.cycle_us, bms.heap_live)
                elif ran and board.realtime:
                    comm.send_cycle_diag(bms.alive, bms.cycle_us, bms.heap_live)
                elif busy:
                    board.wait(0)  # a service has frames to send: poll again at once
                else:
                    board.wait(max(0, ticks_diff(next_due, now)) if board.realtime else 1000)
            except Exception as e:  # noqa: BLE001 - nor may a transmit or idle fault
                bms.fail(e)
    except BaseException as e:
        # Stopped on purpose (Ctrl-C from mpremote before an update, a diagnostic ECU reset):
        # keep the latest state as a shutdown record. A watchdog reset or a power loss (the sim
        # board's exit) gives no such chance: the periodic records are what survives.
        if not isinstance(e, SystemExit):
            bms.persist.flush(board.ticks_ms())
        raise


def unrecorded_soc(cfg):
    """The most the SOC (0.01 %) can have moved since the estimator's last periodic record
    when the power goes: persist_soc_step, plus what the largest current before an
    over-current trip moves in the time a due write can wait (persist_dirty_ms and the 16
    cycles between write checks). Products stay small ints: 10 x C-rate times ms."""
    i_ma = max(cfg.oc_discharge_ma, cfg.oc_charge_ma)
    wait_ms = cfg.persist_dirty_ms + 16 * cfg.cycle_ms
    return cfg.persist_soc_step + (i_ma * 10 // cfg.capacity_mah + 1) * wait_ms // 3600 + 1
