"""Helpers shared by the firmware tests; runs under CPython and MicroPython."""

from firmware import config
from firmware.balancing import Balancer
from firmware.data import Data
from firmware.estimation import SocEstimator
from firmware.measurement import Measurements
from firmware.soc_record import HEAD

# Fault bits that firmware/protection.py keeps private (bit = BMS_Faults signal position;
# test_fault_catalogue.py checks these against the DBC).
FAULT_IMBALANCE = 15
FAULT_RUNAWAY = 16
FAULT_OPEN_WIRE = 17
FAULT_STUCK = 18
FAULT_PACK_MISMATCH = 19
FAULT_CURRENT2 = 20
FAULT_OC_CHARGE_COLD = 24
FAULT_TEMP_HIGH_DERATE = 25
FAULT_TEMP_LOW_DERATE = 26
FAULT_LIMIT = 28


def raises_naming(overrides, key):
    """True if config.load(overrides) raises ValueError whose message names `key`."""
    try:
        config.load(overrides)
    except ValueError as e:
        return key in str(e)
    return False


def feed(meas, cfg, mv=3700, dc=250, current_ma=0, now_ms=0, feedback=0):
    """Fill every group, the pack value and the auxiliary inputs (the second current sensor
    agreeing) with uniform readings, then take the cycle's verdict (fresh) and statistics."""
    for g in range((cfg.cell_count + 3) // 4):
        meas.set_cells(g, mv, mv, mv, mv, now_ms)
    for g in range((cfg.temp_count + 3) // 4):
        meas.set_temps(g, dc, dc, dc, dc, now_ms)
    pack = cfg.cell_count * mv
    meas.set_pack(current_ma, pack, pack, now_ms)
    meas.set_aux(feedback, current_ma, now_ms)
    meas.evaluate(now_ms)


def fresh(overrides=None, mv=3700, dc=250, current_ma=0, now_ms=0):
    """A config and a Measurements filled with uniform fresh readings."""
    cfg = config.load(overrides)
    meas = Measurements(cfg)
    feed(meas, cfg, mv, dc, current_ma, now_ms)
    return cfg, meas


# Short balancing phases (window 300 ms, relaxed window before an anchor 600 ms, bleed 1 s, no
# settling time unless a test sets one); readings stay fresh for 10 s of board time.
BALANCE = {
    "balance_measure_ms": 300,
    "balance_relax_ms": 600,
    "balance_bleed_ms": 1000,
    "balance_soc_bleed_ms": 1000,
    "balance_settle_ms": 0,
    "meas_stale_ms": 10000,
}


def bled(bal, n):
    """Cells (0-based) whose bleed resistor `bal` has on."""
    return [i for i in range(n) if bal.out.mask[i >> 3] & (1 << (i & 7))]


def estimator(cfg):
    """A SocEstimator on blocks of its own; the blocks are `est.data`."""
    data = Data(cfg)
    est = SocEstimator(cfg, data)
    est.data = data
    return est


def saved_state(est, soc, bound):
    """`est`'s saved record (firmware/soc_record.py) with the pack and every cell at `soc` and
    the error bound `bound` (both 0.01 %)."""
    buf = bytearray(est.state_size)
    est.save_state(buf)
    buf[2], buf[3], buf[4], buf[5] = soc & 255, soc >> 8, bound & 255, bound >> 8
    for i in range(est._cfg.cell_count):
        buf[HEAD + 2 * i], buf[HEAD + 2 * i + 1] = soc & 255, soc >> 8
    return buf


class Rig:
    """Estimator and balancer run in 100 ms cycles (at most 10 s) on readings of `cells` (mV);
    the estimator starts from them, at rest unless `current_ma` says otherwise."""

    def __init__(self, cells, overrides=None, current_ma=0, dc=250):
        o = {"cell_count": len(cells)}
        o.update(BALANCE)
        o.update(overrides or {})
        self.cfg, self.m = fresh(o, mv=3900, dc=dc, current_ma=current_ma)
        self._dc = dc
        self.set(cells)
        self.data = Data(self.cfg)
        self.est = SocEstimator(self.cfg, self.data)
        self.charge = self.data.charge  # the per-cell charge the balancer books
        self.est.update(self.m, 100, 0)
        self.bal = Balancer(self.cfg, self.data)
        self.now = 0
        self.fault = False

    def set(self, cells):
        """New cell voltages (mV)."""
        for i, v in enumerate(cells):
            self.m.cell_mv[i] = v
        self.m.update_stats()

    def refresh(self):
        """Take every reading again, unchanged, at the current board time (for runs longer than
        meas_stale_ms)."""
        cells = list(self.m.cell_mv[: self.cfg.cell_count])
        feed(self.m, self.cfg, 3900, self._dc, self.m.current_ma, self.now)
        self.set(cells)

    def cycle(self, n=1):
        """Run `n` control cycles."""
        for _ in range(n):
            self.now += 100
            self.m.evaluate(self.now)
            self.est.update(self.m, 100, self.now)
            self.bal.update(self.m, self.fault, self.now)

    def decide(self):
        """Run through the first measurement window to the first bleeding cycle; bled cells."""
        self.cycle(4)
        return bled(self.bal, self.cfg.cell_count)
