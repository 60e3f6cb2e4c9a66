"""Contactor state machine with precharge; its state is BmsState on the wire.

    INIT      --first step-->                             STANDBY
    STANDBY   --close_request-->                          PRECHARGE  (neg, pre closed)
    PRECHARGE --link >= precharge_pct of pack-->          CLOSED     (pos closed, pre opened)
    PRECHARGE --precharge_timeout_ms-->                   FAULT      (all open, precharge_failed)
    PRECHARGE, CLOSED --close_request dropped-->          STANDBY    (all open)
    any       --open_required-->                          FAULT      (all open, same step)
    FAULT     --open_required gone-->                     STANDBY    (still open)
    any       --force_open()-->                           FAULT      (all open, outside step)

One transition per step, so the precharge end is judged on a link voltage measured while the
precharge path was already closed: pos never closes without a completed precharge. The caller
turns the one-step `precharge_failed` pulse into a latched fault.
"""

from .compat import const, ticks_diff

INIT = const(0)
STANDBY = const(1)
PRECHARGE = const(2)
CLOSED = const(3)
FAULT = const(4)


class Contactors:
    """Drives the negative, precharge and positive contactor outputs (1 = closed)."""

    def __init__(self, cfg):
        self._pct = cfg.precharge_pct
        self._timeout_ms = cfg.precharge_timeout_ms
        self._start_ms = 0
        self.state = INIT
        self.neg = 0
        self.pre = 0
        self.pos = 0
        self.precharge_failed = False

    def _set(self, state, neg, pre, pos):
        self.state = state
        self.neg = neg
        self.pre = pre
        self.pos = pos

    def force_open(self):
        """Open everything now (the caller's safe state after an exception)."""
        self._set(FAULT, 0, 0, 0)

    def step(self, now_ms, close_request, open_required, pack_mv, link_mv):
        self.precharge_failed = False
        state = self.state
        if open_required:
            self._set(FAULT, 0, 0, 0)
        elif state == INIT or state == FAULT or not close_request:
            self._set(STANDBY, 0, 0, 0)
        elif state == STANDBY:
            self._set(PRECHARGE, 1, 1, 0)
            self._start_ms = now_ms
        elif state == PRECHARGE:
            # Products stay below 2**30 for voltages up to 10 kV.
            if pack_mv > 0 and link_mv * 100 >= pack_mv * self._pct:
                self._set(CLOSED, 1, 0, 1)
            elif ticks_diff(now_ms, self._start_ms) >= self._timeout_ms:
                self._set(FAULT, 0, 0, 0)
                self.precharge_failed = True
