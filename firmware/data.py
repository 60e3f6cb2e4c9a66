"""The data blocks: every value that crosses a module boundary, each block with one writer.

In the manner of foxBMS's database (src/app/engine/config/database_cfg.h): a block is a plain
object, allocated once at start-up; exactly one module writes its fields, the others only read
them, and no module reads another's private (`_`) state. The application builds one `Data` and
hands each module the blocks it writes and reads. Fields are integers in firmware units (mV, mA,
0.1 degC, ms, mAs, SOC 0.01 %) unless a comment says otherwise. docs/ARCHITECTURE.md ("Data
blocks") lists who writes and who reads each one.

The measurement block is `measurement.Measurements` itself (sources fill it through its setters,
its module alone derives the statistics and the freshness verdict) and the per-cell charge block
`cellcharge.CellCharge` (its methods are the only writers); both are built by `Data` too.
"""

from array import array

from .cellcharge import CellCharge
from .measurement import Measurements

SOC_FULL = 10000

# Status of a routine a tester started (RoutineData), as its owning module answers it
TEST_NONE = 0
TEST_RUNNING = 1
TEST_PASSED = 2
TEST_REFUSED = 3  # an interlock said no at the start
TEST_ABORTED = 4  # stopped by the tester, or an interlock ended it
TEST_FAILED = 5  # ran, and what it checks did not hold (no precharge, flat OCV)


class SocData:
    """SOC, SOH and the charge counter. Writer: the estimator (estimation.py, soh.py)."""

    def __init__(self, n):
        self.initialised = False  # the estimator has started (first valid measurement)
        self.soc = 0  # pack SOC, 0.01 %
        self.soc_min = 0  # emptiest / fullest cell, 0.01 %
        self.soc_max = 0
        self.soc_bound = SOC_FULL  # |reported - true| bound, 0.01 %
        # Cell i's SOC is soc0[i] - delta, clamped to 0..10000 (cell_soc() below): the counter
        # moves every cell at once, so nothing per cell changes in a cycle unless filtered.
        self.soc0 = array("H", [0] * n)  # per-cell start SOC, 0.01 %
        self.delta = 0  # SOC drop of every cell since the start, 0.01 %
        self.discharged_mas = 0  # the shared counter: net charge taken out since the start, mAs
        self.rest_ms = 0  # how long |I| <= rest_current_ma, saturating at balance_rest_ms
        self.soh_cap = SOC_FULL  # capacity / rated, 0.01 %
        self.soh_cap_conf = 0  # %
        self.soh_res = SOC_FULL  # R0 / the profile's R0, 0.01 %
        self.soh_res_conf = 0  # %
        self.soh_halfpct = 200  # SOH capacity in 0.5 % (BMS_Pack)
        self.offset_ma = 0  # learned current-sensor offset (measured - true), mA
        self.throughput_mah = 0  # charge moved either way, mAh
        self.reanchor_run = 0  # RoutineData.reanchor_run answered, and how (TEST_*)
        self.reanchor = TEST_NONE


def cell_soc(d, i):
    """SOC (0.01 %) of cell `i` (0-based) from SocData `d`."""
    s = d.soc0[i] - d.delta
    return 0 if s < 0 else SOC_FULL if s > SOC_FULL else s


class ModelPoint:
    """The cell model where the pack is now: what the power limits need from the estimator.
    Writer: the estimator, every cycle it runs. Integer units of cellmodel.Profile."""

    def __init__(self):
        self.valid = False  # the estimator has located the model at least once
        self.r0 = 0  # R0 of the profile at the located SOC and temperature, 10 micro-ohm
        self.r1 = 0  # RC pair 1 and 2: resistance 10 micro-ohm, time constant 0.1 s
        self.tau1 = 1
        self.r2 = 0
        self.tau2 = 1
        self.slope = 0  # dOCV/dSOC, 0.1 mV per 1 % SOC
        self.v1_uv = 0  # voltage across RC pair 1 and 2 now, micro-volt (+ = discharge drop)
        self.v2_uv = 0


class PowerData:
    """State of power: constant currents for 10 s and 30 s, magnitudes, mA. Writer: sop.py."""

    def __init__(self):
        self.charge_ma_10s = 0
        self.discharge_ma_10s = 0
        self.charge_ma_30s = 0
        self.discharge_ma_30s = 0


class LimitData:
    """Published current (magnitudes) and pack voltage limits. Writer: limits.py."""

    def __init__(self, charge_voltage_mv, discharge_voltage_mv):
        self.charge_ma = 0
        self.discharge_ma = 0
        self.charge_voltage_mv = charge_voltage_mv
        self.discharge_voltage_mv = discharge_voltage_mv


class ContactorData:
    """Contactor outputs (1 = closed) and the state machine (BmsState). Writer: contactors.py."""

    def __init__(self):
        self.state = 0
        self.neg = 0
        self.pre = 0
        self.pos = 0
        self.precharge_failed = False  # one-step pulse: this step's precharge gave up
        self.fb_mismatch = False  # commanded closed, feedback open for fb_timeout_ms
        self.welded = False  # commanded open, feedback closed for fb_timeout_ms
        self.test_run = 0  # RoutineData.contactor_run answered, and how (TEST_*)
        self.test = TEST_NONE


class FaultData:
    """Active faults (bit = BMS_Faults signal) and what follows from them. Writer: protection.py,
    after every change."""

    def __init__(self):
        self.active = 0
        self.tier = 0  # 0 none, 1 warning, 2 derate, 3 open (BMS_State FaultTier)
        self.count = 0  # active faults
        self.open_required = False  # an open-tier fault is active
        self.meas_valid = False  # last check: measurements fresh and plausible


class BalancingData:
    """Bleed resistors: `mask` bit i of byte i // 8 = cell i bleeding. Writer: balancing.py."""

    def __init__(self, n):
        self.mask = bytearray((n + 7) // 8)
        self.count = 0  # cells bleeding
        self.changed = False  # this cycle changed the mask
        self.reason = 7  # BalancingReason (DBC), NO_DATA until the first decision
        self.strategy = 0  # BalancingStrategy in use
        self.test_run = 0  # RoutineData.balance_run answered, and how (TEST_*)
        self.test = TEST_NONE


class ThermalData:
    """Cooling and heating outputs (1 = on) and why (ThermalReason). Writer: thermal.py."""

    def __init__(self):
        self.cooling = 0
        self.heating = 0
        self.reason = 3  # NO_DATA


class RoutineData:
    """Routines a workshop tester started (UDS 0x31, firmware/uds.py) for the module that owns
    what each one moves. A `*_run` is the number of the run wanted: a new number starts a run,
    0 stops it; the owner answers in its own block (`test_run`, `test`: TEST_*). Writer: the
    diagnostic server; readers: contactors (via app), balancing, estimation."""

    def __init__(self):
        self.contactor_run = 0
        self.contactor_hold_ms = 0  # how long the test keeps the contactors closed
        self.balance_run = 0
        self.balance_cell = 0  # 0-based
        self.balance_ms = 0  # how long the cell bleeds
        self.reanchor_run = 0


class Data:
    """Every block of one BMS instance."""

    def __init__(self, cfg):
        n = cfg.cell_count
        self.meas = Measurements(cfg)
        self.soc = SocData(n)
        self.charge = CellCharge(cfg, self.soc)
        self.model = ModelPoint()
        self.power = PowerData()
        self.limits = LimitData(n * cfg.cell_charge_max_mv, n * cfg.cell_discharge_min_mv)
        self.contactors = ContactorData()
        self.faults = FaultData()
        self.balancing = BalancingData(n)
        self.thermal = ThermalData()
        self.routines = RoutineData()
