"""Protection: limit checks with qualification times, fault bits (BMS_Faults), latching, tiers.

A rule's fault becomes active once its condition has held continuously for its qualification
time. Faults detected elsewhere (precharge, loop timing, watchdog, exceptions) come in through
set_fault(). Bits, tiers and how each fault clears:

    bit  fault                    tier     qualification    clears
    0    CellOverVoltage          open     v_qualify_ms     latched
    1    CellUnderVoltage         open     v_qualify_ms     latched
    2    OverTempCharge           open     t_qualify_ms     latched
    3    OverTempDischarge        open     t_qualify_ms     latched
    4    UnderTempCharge          open     t_qualify_ms     latched
    5    UnderTempDischarge       open     t_qualify_ms     latched
    6    OverCurrentCharge        open     i_qualify_ms     latched
    7    OverCurrentDischarge     open     i_qualify_ms     latched
    8    MeasurementStale         open     immediate        by itself when data is fresh again
    9    MeasurementImplausible   open     immediate        latched
    10   VcuRequestStale          open     immediate        by itself when requests are fresh
    11   PrechargeFailed          open     set_fault        latched
    12   LoopOverrun              warning  set_fault        latched
    13   WatchdogReset            warning  set_fault        latched
    14   InternalError            open     set_fault        latched

"Latched" means the fault stays active until request_reset() is called while its condition is
gone. A set_fault() condition counts as present until the next check(): report it every cycle
while it persists (set_fault(bit, False) withdraws it at once); a one-shot event (precharge
timeout, watchdog reset) is reported once and can be reset from the next cycle on.

Charging means current_ma < -rest_current_ma: only then do the charge temperature limits apply;
the discharge temperature limits always apply. While the measurements are stale or implausible
their values are not trusted: the value rules are frozen (no new faults from old or broken data,
and a latched fault cannot be reset while its condition is unknown). check() reads the
statistics of `meas`: call meas.update_stats() first.
"""

from .compat import const, ticks_diff

FAULT_CELL_OV = const(0)
FAULT_CELL_UV = const(1)
FAULT_OT_CHARGE = const(2)
FAULT_OT_DISCHARGE = const(3)
FAULT_UT_CHARGE = const(4)
FAULT_UT_DISCHARGE = const(5)
FAULT_OC_CHARGE = const(6)
FAULT_OC_DISCHARGE = const(7)
FAULT_MEAS_STALE = const(8)
FAULT_MEAS_IMPLAUSIBLE = const(9)
FAULT_VCU_STALE = const(10)
FAULT_PRECHARGE_FAILED = const(11)
FAULT_LOOP_OVERRUN = const(12)
FAULT_WATCHDOG_RESET = const(13)
FAULT_INTERNAL_ERROR = const(14)
FAULT_BITS = const(15)

WARNING_MASK = const(0x3000)  # LoopOverrun, WatchdogReset
OPEN_MASK = const(0x4FFF)  # every other fault opens the contactors
_EXTERNAL = const(0x7800)  # bits reported through set_fault()

TIER_NONE = const(0)
TIER_WARNING = const(1)
TIER_DERATE = const(2)  # reserved: no derate-tier faults yet
TIER_OPEN = const(3)


class Protection:
    """Fault evaluation and latching; see the module docstring."""

    def __init__(self, cfg):
        self._cfg = cfg
        # When each pending condition started, ms (a list: ticks exceed 32 bits on the unix port).
        self._since = [0] * FAULT_BITS
        self._pending = 0  # conditions present but maybe not yet qualified
        self._latched = 0
        self._live = 0  # self-clearing faults
        self.measurements_valid = False  # last check(): fresh and plausible, fit for estimation

    def _rule(self, bit, cond, now_ms, qualify_ms):
        m = 1 << bit
        if not cond:
            self._pending &= ~m
            return
        if not self._pending & m:
            self._pending |= m
            self._since[bit] = now_ms
        if ticks_diff(now_ms, self._since[bit]) >= qualify_ms:
            self._latched |= m

    def check(self, meas, now_ms, stale, vcu_stale):
        self._pending &= ~_EXTERNAL
        self._live = 0
        self.measurements_valid = False
        if vcu_stale:
            self._live = 1 << FAULT_VCU_STALE
        if stale:
            self._live |= 1 << FAULT_MEAS_STALE
            return
        implausible = not meas.plausible()
        self._rule(FAULT_MEAS_IMPLAUSIBLE, implausible, now_ms, 0)
        if implausible:
            return
        self.measurements_valid = True
        cfg = self._cfg
        i = meas.current_ma
        charging = i < -cfg.rest_current_ma
        vq = cfg.v_qualify_ms
        tq = cfg.t_qualify_ms
        iq = cfg.i_qualify_ms
        self._rule(FAULT_CELL_OV, meas.vmax_mv > cfg.cell_ov_mv, now_ms, vq)
        self._rule(FAULT_CELL_UV, meas.vmin_mv < cfg.cell_uv_mv, now_ms, vq)
        self._rule(FAULT_OT_CHARGE, charging and meas.tmax_dc > cfg.ot_charge_dc, now_ms, tq)
        self._rule(FAULT_OT_DISCHARGE, meas.tmax_dc > cfg.ot_discharge_dc, now_ms, tq)
        self._rule(FAULT_UT_CHARGE, charging and meas.tmin_dc < cfg.ut_charge_dc, now_ms, tq)
        self._rule(FAULT_UT_DISCHARGE, meas.tmin_dc < cfg.ut_discharge_dc, now_ms, tq)
        self._rule(FAULT_OC_CHARGE, -i > cfg.oc_charge_ma, now_ms, iq)
        self._rule(FAULT_OC_DISCHARGE, i > cfg.oc_discharge_ma, now_ms, iq)

    def set_fault(self, bit, active):
        """Report the condition of a fault detected outside check(); latches when active."""
        m = 1 << bit
        if not m & _EXTERNAL:
            raise ValueError("fault bit not settable")
        if active:
            self._pending |= m
            self._latched |= m
        else:
            self._pending &= ~m

    def request_reset(self):
        """Clear the latched faults whose condition is gone."""
        self._latched &= self._pending

    @property
    def active(self):
        return self._latched | self._live

    @property
    def open_required(self):
        return (self.active & OPEN_MASK) != 0

    @property
    def tier(self):
        a = self.active
        if a & OPEN_MASK:
            return TIER_OPEN
        if a & WARNING_MASK:
            return TIER_WARNING
        return TIER_NONE

    @property
    def count(self):
        a = self.active
        n = 0
        while a:
            a &= a - 1
            n += 1
        return n
