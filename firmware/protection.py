"""Protection: the fault catalogue, its rules, qualification, latching, tiers.

The catalogue (_TABLE) has one row per bit of BMS_Faults, bit = row index; new faults are appended,
never inserted (the bits are the CAN contract). docs/faults.md lists the rows with names and
detection rules; tests/hil/test_fault_catalogue.py keeps that page, the DBC and this table in
agreement. Row fields:

    DTC            OBD-II style code P1Axx, numbered P1A00 + bit; on CAN (BMS_FaultMemory) its
                   two-byte form 0x1A00 + bit
    tier           W warning (report only), D derate (current limits capped at derate_pct),
                   O open (contactors open, limits 0)
    recovery       L latched until a FaultReset request finds the condition gone,
                   S self-clearing once the condition is gone
    qualification  the config key holding the time (..._ms) or count the condition must
                   persist; "-" immediate; "ext" qualified by the detector that calls set_fault

A rule's fault becomes active once its condition has held continuously for the qualification time
its row names; tier and recovery (latched or self-clearing) come from the row too. Faults
detected elsewhere (precharge and contactor feedback, VCU frame integrity, loop timing, watchdog,
exceptions, storage) come in through set_fault(), qualified by their detector.

"Latched" means the fault stays active until request_reset() is called while its condition is
gone. A set_fault() condition counts as present until the next check(): report it every cycle
while it persists (set_fault(bit, False) withdraws it at once); a one-shot event (precharge
timeout, watchdog reset) is reported once and can be reset from the next cycle on.

Charging means current_ma < -rest_current_ma: only then do the charge temperature limits apply;
the discharge temperature limits always apply. While the measurements are stale or implausible
their values are not trusted: the value rules are frozen (no new faults from old or broken data,
and a latched fault cannot be reset while its condition is unknown). check() reads the
statistics of `meas`: call meas.update_stats() first.

Windowed detectors, judged at the end of each window:
- stuck cell voltage: a cell's raw reading bit-identical through a whole stuck_window_ms while
  the pack current spanned more than stuck_current_ma in it (the window is the qualification);
- thermal runaway: per 1 s window (the "per second" of the rate), a sensor rising by
  runaway_rise_dc or more while its cell (sensor s of M watches cell s * N // M) dropped by
  runaway_drop_mv; qualified over runaway_qualify_ms of consecutive windows.
"""

from array import array

from .compat import const, ticks_diff
from .data import FaultData

# fmt: off
_TABLE = (
    "P1A00 O L v_qualify_ms "           # 0 CellOverVoltage
    "P1A01 O L v_qualify_ms "           # 1 CellUnderVoltage
    "P1A02 O L t_qualify_ms "           # 2 OverTempCharge
    "P1A03 O L t_qualify_ms "           # 3 OverTempDischarge
    "P1A04 O L t_qualify_ms "           # 4 UnderTempCharge
    "P1A05 O L t_qualify_ms "           # 5 UnderTempDischarge
    "P1A06 O L i_qualify_ms "           # 6 OverCurrentCharge
    "P1A07 O L i_qualify_ms "           # 7 OverCurrentDischarge
    "P1A08 O S meas_stale_ms "          # 8 MeasurementStale
    "P1A09 O L - "                      # 9 MeasurementImplausible
    "P1A0A O S vcu_stale_ms "           # 10 VcuRequestStale
    "P1A0B O L ext "                    # 11 PrechargeFailed
    "P1A0C W L ext "                    # 12 LoopOverrun
    "P1A0D W L ext "                    # 13 WatchdogReset
    "P1A0E O L ext "                    # 14 InternalError
    "P1A0F W S t_qualify_ms "           # 15 CellImbalance
    "P1A10 O L runaway_qualify_ms "     # 16 ThermalRunaway
    "P1A11 O L - "                      # 17 OpenSenseWire
    "P1A12 O L stuck_window_ms "        # 18 StuckCellVoltage
    "P1A13 O L - "                      # 19 PackVoltageMismatch
    "P1A14 D L i_qualify_ms "           # 20 CurrentSensorMismatch
    "P1A15 O L vcu_bad_count "          # 21 VcuRequestInvalid
    "P1A16 O L fb_timeout_ms "          # 22 ContactorFeedback
    "P1A17 O L fb_timeout_ms "          # 23 ContactorWelded
    "P1A18 O L i_qualify_ms "           # 24 OverCurrentChargeCold
    "P1A19 W S t_qualify_ms "           # 25 TempHighDerate
    "P1A1A W S t_qualify_ms "           # 26 TempLowDerate
    "P1A1B W L ext "                    # 27 StorageFault
    "P1A1C O L limit_ignored_ms "       # 28 CurrentLimitIgnored
    "P1A1D O L ext"                     # 29 ChargerFault
)
# fmt: on

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
_FAULT_IMBALANCE = const(15)
_FAULT_RUNAWAY = const(16)
_FAULT_OPEN_WIRE = const(17)
_FAULT_STUCK = const(18)
_FAULT_PACK_MISMATCH = const(19)
_FAULT_CURRENT2 = const(20)
FAULT_VCU_INVALID = const(21)
FAULT_CONTACTOR_FB = const(22)
FAULT_WELDED = const(23)
_FAULT_OC_CHARGE_COLD = const(24)
_FAULT_TEMP_HIGH_DERATE = const(25)
_FAULT_TEMP_LOW_DERATE = const(26)
FAULT_STORAGE = const(27)
_FAULT_LIMIT = const(28)
FAULT_CHARGER = const(29)
# At most 30 bits: the active mask must stay a small int on MicroPython (no heap per cycle).
FAULT_BITS = const(30)

# Bits reported through set_fault(): precharge, loop overrun, watchdog, internal error, VCU
# frame integrity, contactor feedback and weld, storage, the DC charger.
_EXTERNAL = const(0x28E07800)
_RUNAWAY_WINDOW_MS = const(1000)
# The rules Protection._values evaluates through _rules (the current sensor's when fitted).
_VALUE_RULES = const(0x070080FF)


def catalogue(cfg=None, q=None):
    """Parse _TABLE: returns the [open, derate, warning, latched] bit masks; with `cfg` and `q`
    (a list, one slot per bit) also puts each row's qualification time (ms) into q. Allocation
    free apart from the config key slices: it runs at start-up only."""
    m = [0, 0, 0, 0]
    s = _TABLE
    n = len(s)
    i = 0
    bit = 1
    b = 0
    while i < n:
        j = s.find(" ", i) + 1  # tier, recovery, qualification
        k = s.find(" ", j + 4)
        if k < 0:
            k = n
        m[0 if s.startswith("O", j) else 1 if s.startswith("D", j) else 2] |= bit
        if s.startswith("L", j + 2):
            m[3] |= bit
        if q is not None and s.startswith("_ms", k - 3):
            q[b] = getattr(cfg, s[j + 4 : k])
        i = k + 1
        bit <<= 1
        b += 1
    return m


# Bits 15..26 other than those reported through set_fault are private (each public name is a
# qstr on the board's heap); tests/firmware/fw_support.py names them for the tests.
OPEN_MASK, DERATE_MASK, WARNING_MASK, _LATCH = catalogue()

TIER_NONE = const(0)
TIER_WARNING = const(1)
TIER_DERATE = const(2)
TIER_OPEN = const(3)


class Protection:
    """Fault evaluation and latching; see the module docstring."""

    def __init__(self, cfg, out=None):
        self._cfg = cfg
        self.out = FaultData() if out is None else out  # the block it writes
        # Qualification per bit, ms; 0 for immediate rules and set_fault bits. Stale data is
        # judged by Measurements / Comm against its own time and the stuck detector's window is
        # its qualification: their rules qualify at once.
        self._q = q = array("i", [0] * FAULT_BITS)
        catalogue(cfg, q)
        q[_FAULT_STUCK] = q[FAULT_MEAS_STALE] = q[FAULT_VCU_STALE] = 0
        # When each pending condition started, ms (a list: ticks exceed 32 bits on the unix port).
        self._since = [0] * FAULT_BITS
        self._pending = 0  # conditions present but maybe not yet qualified
        self._latched = 0
        self._live = 0  # stale measurements or VCU request: recomputed every check
        n = cfg.cell_count
        self._prev = array("H", [0] * n)  # stuck: raw readings at the window start
        self._changed = bytearray((n + 7) // 8)  # stuck: bit k = cell k changed in this window
        self._unchanged = n  # stuck: cells not changed yet in this window
        self._t_ref = array("h", [0] * cfg.temp_count)  # runaway: readings at the window start
        self._v_ref = array("H", [0] * n)
        # Window state: stuck window start, lowest and highest current in it, runaway window start
        # (None until the first check with valid data).
        self._w = [None, 0, 0, None]

    def _rule(self, bit, cond, now_ms):
        m = 1 << bit
        if not cond:
            self._pending &= ~m
            self._latched &= ~(m & ~_LATCH)
            return
        if not self._pending & m:
            self._pending |= m
            self._since[bit] = now_ms
        if ticks_diff(now_ms, self._since[bit]) >= self._q[bit]:
            self._latched |= m

    def _rules(self, bits, conds, now_ms):
        # `_rule` for every bit of `bits`, `conds` holding the bits whose condition is present:
        # the absent ones all at once (as _rule clears them), the present ones one by one.
        off = bits & ~conds
        self._pending &= ~off
        self._latched &= ~(off & ~_LATCH)
        on = bits & conds
        bit = 0
        while on:
            if on & 1:
                self._rule(bit, True, now_ms)
            on >>= 1
            bit += 1

    def check(self, meas, now_ms, stale, vcu_stale):
        """Evaluate the rules on this cycle's measurements (`stale`: their freshness verdict)
        and publish the result."""
        self._pending &= ~_EXTERNAL
        self._live = 0
        self.out.meas_valid = False
        if vcu_stale:
            self._live = 1 << FAULT_VCU_STALE
        if stale:
            self._live |= 1 << FAULT_MEAS_STALE
        else:
            self._values(meas, now_ms)
        self._publish()

    def _values(self, meas, now_ms):
        cfg = self._cfg
        # Before the range check: a reading near 0 V names its cause (an implausible one, too).
        self._rule(_FAULT_OPEN_WIRE, meas.vmin_mv <= cfg.open_wire_mv, now_ms)
        # check() runs right after the cycle's evaluate: its statistics are the values'.
        implausible = not meas.plausible(True)
        self._rule(FAULT_MEAS_IMPLAUSIBLE, implausible, now_ms)
        # A scaling or wrap-around error here would end a precharge early: rules frozen too.
        d = meas.pack_mv - meas.cell_sum_mv
        mismatch = not -cfg.plaus_pack_delta_mv <= d <= cfg.plaus_pack_delta_mv
        self._rule(_FAULT_PACK_MISMATCH, mismatch, now_ms)
        if implausible or mismatch:
            return
        self.out.meas_valid = True
        i = meas.current_ma
        charging = i < -cfg.rest_current_ma
        tmin = meas.tmin_dc
        tmax = meas.tmax_dc
        # The value rules as one bit set of conditions (`_rules`): one call, not one per rule.
        c = 0
        if meas.vmax_mv > cfg.cell_ov_mv:
            c |= 1 << FAULT_CELL_OV
        if meas.vmin_mv < cfg.cell_uv_mv:
            c |= 1 << FAULT_CELL_UV
        if charging and tmax > cfg.ot_charge_dc:
            c |= 1 << FAULT_OT_CHARGE
        if tmax > cfg.ot_discharge_dc:
            c |= 1 << FAULT_OT_DISCHARGE
        if charging and tmin < cfg.ut_charge_dc:
            c |= 1 << FAULT_UT_CHARGE
        if tmin < cfg.ut_discharge_dc:
            c |= 1 << FAULT_UT_DISCHARGE
        if -i > cfg.oc_charge_ma:
            c |= 1 << FAULT_OC_CHARGE
        if i > cfg.oc_discharge_ma:
            c |= 1 << FAULT_OC_DISCHARGE
        if tmin < cfg.oc_cold_dc and -i > cfg.oc_charge_cold_ma:
            c |= 1 << _FAULT_OC_CHARGE_COLD
        if meas.vmax_mv - meas.vmin_mv > cfg.imbalance_mv:
            c |= 1 << _FAULT_IMBALANCE
        # The limits' temperature ramps are reducing the current of the direction in use.
        if charging:
            hi = cfg.charge_temp_full_hi_dc
            lo = cfg.charge_temp_full_lo_dc
        else:
            hi = cfg.discharge_temp_full_hi_dc
            lo = cfg.discharge_temp_full_lo_dc
        if tmax > hi:
            c |= 1 << _FAULT_TEMP_HIGH_DERATE
        if tmin < lo:
            c |= 1 << _FAULT_TEMP_LOW_DERATE
        bits = _VALUE_RULES
        if cfg.current2_enable:
            bits |= 1 << _FAULT_CURRENT2
            d = i - meas.current2_ma
            if d > cfg.current2_delta_ma or -d > cfg.current2_delta_ma:
                c |= 1 << _FAULT_CURRENT2
        self._rules(bits, c, now_ms)
        self._stuck(meas, now_ms)
        self._runaway(meas, now_ms)

    def _stuck(self, meas, now_ms):
        # A cell changed in the window if a reading differs from the one at its start. Once every
        # cell has, nothing is left to compare until the next window; nor when none moved (the
        # arrays compare in C).
        raw = meas.cell_raw_mv
        prev = self._prev
        ch = self._changed
        if self._unchanged and raw != prev:
            left = 0
            for k in range(len(raw)):
                b = 1 << (k & 7)
                if not ch[k >> 3] & b:
                    if raw[k] != prev[k]:
                        ch[k >> 3] |= b
                    else:
                        left += 1
            self._unchanged = left
        i = meas.current_ma
        w = self._w
        if w[0] is not None:
            if i < w[1]:
                w[1] = i
            elif i > w[2]:
                w[2] = i
            if ticks_diff(now_ms, w[0]) < self._cfg.stuck_window_ms:
                return
            stuck = w[2] - w[1] > self._cfg.stuck_current_ma and self._unchanged > 0
            self._rule(_FAULT_STUCK, stuck, now_ms)
        # A window starts with these readings: nothing has changed in it yet.
        for k in range(len(ch)):
            ch[k] = 0
        prev[:] = raw
        self._unchanged = len(raw)
        w[0] = now_ms
        w[1] = w[2] = i

    def _runaway(self, meas, now_ms):
        cfg = self._cfg
        t = meas.temp_dc
        v = meas.cell_mv
        tr = self._t_ref
        vr = self._v_ref
        w = self._w
        if w[3] is not None:
            dt = ticks_diff(now_ms, w[3])
            if dt < _RUNAWAY_WINDOW_MS:
                return
            # Scaled by the time since the window start: a gap in the data is no sudden rise.
            rise = cfg.runaway_rise_dc * dt // _RUNAWAY_WINDOW_MS
            nt = len(t)
            nc = len(v)
            hit = False
            for s in range(nt):
                c = s * nc // nt
                if t[s] - tr[s] >= rise and vr[c] - v[c] >= cfg.runaway_drop_mv:
                    hit = True
            self._rule(_FAULT_RUNAWAY, hit, now_ms)
        w[3] = now_ms
        tr[:] = t
        vr[:] = v

    def check_limits(self, current_ma, charge_ma, discharge_ma, now_ms):
        """CurrentLimitIgnored: the current beyond the limits published last cycle (what the
        vehicle could know) by more than limit_margin_ma. Call after check(); frozen like the
        value rules while the measurements are not valid; off with limit_ignored_ms 0 (a lab
        cycler's constant-current test through the limits' taper)."""
        if self.out.meas_valid and self._cfg.limit_ignored_ms:
            m = self._cfg.limit_margin_ma
            self._rule(
                _FAULT_LIMIT, current_ma > discharge_ma + m or -current_ma > charge_ma + m, now_ms
            )
            self._publish()

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
            self._latched &= ~(m & ~_LATCH)
        if (self._latched | self._live) != self.out.active:
            self._publish()

    def request_reset(self):
        """Clear the latched faults whose condition is gone."""
        self._latched &= self._pending
        self._publish()

    def _publish(self):
        o = self.out
        a = self._latched | self._live
        o.active = a
        o.open_required = (a & OPEN_MASK) != 0
        if a & OPEN_MASK:
            o.tier = TIER_OPEN
        elif a & DERATE_MASK:
            o.tier = TIER_DERATE
        elif a & WARNING_MASK:
            o.tier = TIER_WARNING
        else:
            o.tier = TIER_NONE
        n = 0
        while a:
            a &= a - 1
            n += 1
        o.count = n
