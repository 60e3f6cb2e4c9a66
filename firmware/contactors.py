"""Contactor state machine with precharge, feedback and weld checks; its state is BmsState.

    INIT       --first step-->                              STANDBY
    STANDBY    --close_request-->                           PRECHARGE  (neg, pre closed)
    PRECHARGE  --link >= precharge_pct of pack, confirmed-->CLOSED     (pos closed, pre opened)
    PRECHARGE  --precharge_timeout_ms, retries left-->      RETRY_WAIT (all open)
    PRECHARGE  --precharge_timeout_ms, none left-->         FAULT      (all open, precharge_failed)
    RETRY_WAIT --precharge_pause_ms, close_request-->       PRECHARGE  (else STANDBY)
    CLOSED     --request dropped, |I| > open_current_ma-->  OPENING    (still closed)
    OPENING    --|I| <= open_current_ma or open_wait_ms-->  STANDBY    (all open)
    OPENING    --close_request again-->                     CLOSED
    PRECHARGE  --close_request dropped-->                   STANDBY    (all open)
    any        --open_required-->                           FAULT      (all open, same step)
    FAULT      --open_required gone-->                      STANDBY    (still open)
    any        --force_open()-->                            FAULT      (all open, outside step)

One transition per step, so the precharge end is judged on a link voltage measured while the
precharge path was already closed: pos never closes without a completed precharge. The end needs
precharge_confirm consecutive steps with the link at or above precharge_pct of the pack, each on
a reading of its own (`sample` changes with every new measurement; a step that sees the one before
again neither counts nor breaks the run), so one glitching reading (a link ADC spike, a corrupted
frame), even reused by cycles that ran without a new one, cannot end it early; the caller passes as
pack voltage the larger of the pack sensor and the sum of the cells, so a pack reading that is
low cannot either (the stateful bench tests closed pos at 91 % on one). A fault opens at once
whatever the current; only a vehicle open request waits (bounded) for the current to fall.
Retries are bounded by precharge_retries: the count is restored by a completed close or by
reset_retries() (a fault reset), never by dropping and renewing the request. The caller turns the
one-step `precharge_failed` pulse into a latched fault.

check_feedback() (boards with contactor_feedback 1; call it before step) compares the feedback
(bit 0 neg, 1 pre, 2 pos; 1 = closed) with the outputs commanded so far. A difference lasting
fb_timeout_ms since the last command change is `welded` when a contactor commanded open reads
closed, `fb_mismatch` when one commanded closed reads open; the caller raises the faults (open
tier, latched), whose open_required also keeps a welded pack from any close attempt.

test() (a tester's contactor test, RoutineData; call it before step) turns the request into a
close request for step(), so the test closes through precharge like the vehicle's request. It
starts only from STANDBY with |I| <= rest_current_ma, no vehicle close request and no fault of
derate tier or above (`blocked`); it ends PASSED after contactor_hold_ms in CLOSED, FAILED when
precharge gives up (RETRY_WAIT or FAULT), ABORTED when the tester stops it, the vehicle asks to
close, `blocked` or |I| > open_current_ma (then step() opens by its own rules).
"""

from .compat import const, ticks_diff
from .data import TEST_ABORTED, TEST_FAILED, TEST_PASSED, TEST_REFUSED, TEST_RUNNING, ContactorData

INIT = const(0)
STANDBY = const(1)
PRECHARGE = const(2)
CLOSED = const(3)
FAULT = const(4)
OPENING = const(5)
RETRY_WAIT = const(6)


class Contactors:
    """Drives the negative, precharge and positive contactor outputs (1 = closed), written with
    the state and the check results into ContactorData `out`."""

    def __init__(self, cfg, out=None):
        self._cfg = cfg
        self.out = ContactorData() if out is None else out
        self._start_ms = 0
        self._retries = cfg.precharge_retries
        self._charged = 0  # consecutive precharge readings with the link at precharge_pct
        self._sample = None  # `sample` of the last reading judged in PRECHARGE
        self._fb_since = None  # when the current feedback difference started
        self._test_ms = 0  # when the running test started
        self._closed_ms = None  # when it reached CLOSED

    def _set(self, state, neg, pre, pos):
        o = self.out
        if state != PRECHARGE:
            self._charged = 0
        if neg != o.neg or pre != o.pre or pos != o.pos:
            self._fb_since = None  # the feedback gets fb_timeout_ms to follow a new command
        o.state = state
        o.neg = neg
        o.pre = pre
        o.pos = pos

    def force_open(self):
        """Open everything now (the caller's safe state after an exception)."""
        self._set(FAULT, 0, 0, 0)

    def reset_retries(self):
        """A fault reset: the precharge attempts are available again."""
        self._retries = self._cfg.precharge_retries

    def test(self, now_ms, req, close_request, current_ma, blocked):
        """The close request for step(): the vehicle's (`close_request`), or a running contactor
        test's (RoutineData `req`); see the module docstring."""
        o = self.out
        cfg = self._cfg
        amps = current_ma if current_ma >= 0 else -current_ma
        run = req.contactor_run
        if run != o.test_run:
            o.test_run = run
            if o.test == TEST_RUNNING:
                o.test = TEST_ABORTED
            if run:
                idle = o.state == STANDBY and not (o.neg | o.pre | o.pos)
                ok = idle and not close_request and not blocked and amps <= cfg.rest_current_ma
                o.test = TEST_RUNNING if ok else TEST_REFUSED
                self._test_ms = now_ms
                self._closed_ms = None
        if o.test != TEST_RUNNING:
            return close_request
        if close_request or blocked or amps > cfg.open_current_ma:
            o.test = TEST_ABORTED
            return close_request
        state = o.state
        if state == RETRY_WAIT or state == FAULT:
            o.test = TEST_FAILED
            return False
        if state != CLOSED:
            if ticks_diff(now_ms, self._test_ms) > cfg.precharge_timeout_ms + cfg.cycle_ms * 4:
                o.test = TEST_FAILED  # precharge neither ended nor gave up in time
                return False
            return True
        if self._closed_ms is None:
            self._closed_ms = now_ms
        if ticks_diff(now_ms, self._closed_ms) >= req.contactor_hold_ms:
            o.test = TEST_PASSED
            return False
        return True

    def check_feedback(self, now_ms, feedback):
        o = self.out
        cmd = o.neg | o.pre << 1 | o.pos << 2
        if feedback == cmd:
            self._fb_since = None
            o.fb_mismatch = o.welded = False
            return
        if self._fb_since is None:
            self._fb_since = now_ms
        if ticks_diff(now_ms, self._fb_since) >= self._cfg.fb_timeout_ms:
            o.welded = feedback & ~cmd != 0
            o.fb_mismatch = cmd & ~feedback != 0

    def step(
        self, now_ms, close_request, open_required, pack_mv, link_mv, current_ma=0, sample=None
    ):
        """One step. `sample` identifies the pack/link reading (a counter of measurements);
        None: every step's reading is a new one (callers without a measurement store)."""
        o = self.out
        o.precharge_failed = False
        cfg = self._cfg
        state = o.state
        if state != PRECHARGE:
            # The reading that starts a precharge was taken before its path closed: never judged.
            self._sample = sample
        elapsed = ticks_diff(now_ms, self._start_ms)
        if open_required:
            self._set(FAULT, 0, 0, 0)
        elif state == INIT or state == FAULT:
            self._set(STANDBY, 0, 0, 0)
        elif state == RETRY_WAIT:
            if elapsed >= cfg.precharge_pause_ms:
                self._set(STANDBY, 0, 0, 0)
                if close_request:
                    self._set(PRECHARGE, 1, 1, 0)
                    self._start_ms = now_ms
        elif not close_request:
            under_load = current_ma > cfg.open_current_ma or -current_ma > cfg.open_current_ma
            if state == CLOSED and under_load:
                self._set(OPENING, 1, 0, 1)
                self._start_ms = now_ms
            elif state != OPENING or not under_load or elapsed >= cfg.open_wait_ms:
                self._set(STANDBY, 0, 0, 0)
        elif state == STANDBY:
            self._set(PRECHARGE, 1, 1, 0)
            self._start_ms = now_ms
        elif state == OPENING:
            self._set(CLOSED, 1, 0, 1)
        elif state == PRECHARGE:
            # Products stay below 2**30 for voltages up to 10 kV.
            if sample is not None and sample == self._sample:
                pass  # no new reading since the last step: nothing to judge
            elif pack_mv > 0 and link_mv * 100 >= pack_mv * cfg.precharge_pct:
                self._charged += 1
            else:
                self._charged = 0
            self._sample = sample
            if self._charged >= cfg.precharge_confirm:
                self._set(CLOSED, 1, 0, 1)
                self._retries = cfg.precharge_retries
            elif elapsed >= cfg.precharge_timeout_ms:
                self._set(RETRY_WAIT, 0, 0, 0)
                self._start_ms = now_ms
                if self._retries:
                    self._retries -= 1
                else:
                    self._set(FAULT, 0, 0, 0)
                    o.precharge_failed = True
