"""Every threshold, period, pack size and chemistry table of the firmware: one place.

`load(overrides)` starts from the defaults of the selected chemistry, applies the overrides (a dict,
parsed by the board from a JSON file), checks every key, type, range and the ordering between
related keys, and returns a `Config`. Anything wrong raises ValueError naming the key, so a bad file
stops the BMS at start-up (contactors never close) instead of running with a half-valid setup.

Keys marked "derived" default to a value computed from other keys (currents scale as C-rates with
capacity_mah, temp_count follows cell_count) unless they are overridden themselves.
"""

# One row per key: name, min, max, NMC default, LFP default ("*" = derived, see _derive); units
# and meaning in the comment. Ranges keep every product the firmware forms below 2**30 (small ints
# on the boards). A string rather than tuples: a fraction of the heap on MicroPython.
_SCHEMA = (
    # pack
    "cell_count 1 192 16 16 "  # cells in series
    "temp_count 1 192 * * "  # temperature sensors; derived: cell_count
    "capacity_mah 100 200000 5000 2300 "  # rated cell capacity, mAh
    # timing
    "cycle_ms 10 1000 100 100 "  # control period, ms
    "meas_stale_ms 10 10000 500 500 "  # measurement older than this is stale, ms
    "vcu_stale_ms 10 10000 500 500 "  # VCU request older than this is stale, ms
    "tx_status_ms 10 10000 100 100 "  # period of the BMS status frames, ms
    "tx_cells_ms 10 60000 1000 1000 "  # period of the full set of cell/temperature frames, ms
    "tx_balancing_ms 10 60000 1000 1000 "  # period of the full set of balancing frames, ms
    # protection thresholds and qualification times
    "cell_ov_mv 1000 6000 4250 3650 "  # cell over-voltage, mV
    "cell_uv_mv 500 5000 2700 2500 "  # cell under-voltage, mV
    "ot_charge_dc -500 1500 450 450 "  # over-temperature while charging, 0.1 degC
    "ot_discharge_dc -500 1500 600 600 "  # over-temperature, always, 0.1 degC
    "ut_charge_dc -500 1500 0 0 "  # under-temperature while charging, 0.1 degC
    "ut_discharge_dc -500 1500 -200 -200 "  # under-temperature, always, 0.1 degC
    "oc_charge_ma 100 1000000 * * "  # charge over-current, mA; derived: 2 C
    "oc_discharge_ma 100 1000000 * * "  # discharge over-current, mA; derived: 5 C
    "v_qualify_ms 0 60000 300 300 "  # cell OV/UV must persist this long, ms
    "t_qualify_ms 0 60000 1000 1000 "  # OT/UT must persist this long, ms
    "i_qualify_ms 0 60000 500 500 "  # OC must persist this long, ms
    "rest_current_ma 0 100000 100 100 "  # |I| below = at rest; I below minus this = charging, mA
    # physical ranges: a value outside is MeasurementImplausible
    "plaus_cell_min_mv 0 8191 500 500 "  # mV
    "plaus_cell_max_mv 0 8191 5500 5500 "  # mV
    "plaus_temp_min_dc -2048 2047 -500 -500 "  # 0.1 degC
    "plaus_temp_max_dc -2048 2047 1500 1500 "  # 0.1 degC
    "plaus_current_ma 100 2000000 * * "  # |I| limit, mA; derived: 2 * the larger OC threshold
    "plaus_pack_delta_mv 100 100000 5000 5000 "  # |pack voltage - sum of cells| limit, mV
    # contactors
    "precharge_pct 50 100 95 95 "  # link voltage share of pack voltage ending precharge, %
    "precharge_timeout_ms 100 60000 3000 3000 "  # precharge must finish within, ms
    # current and voltage limits
    "max_charge_ma 0 1000000 * * "  # charge current limit, mA; derived: 1 C
    "max_discharge_ma 0 1000000 * * "  # discharge current limit, mA; derived: 3 C
    "cell_charge_max_mv 1000 6000 4200 3600 "  # CV target; charge limit 0 from here, mV
    "cell_discharge_min_mv 500 5000 3000 2800 "  # discharge limit 0 from here down, mV
    "charge_taper_mv 1000 6000 4100 3450 "  # charge limit derates above this cell voltage, mV
    "discharge_taper_mv 500 5000 3300 3000 "  # discharge limit derates below this, mV
    "charge_temp_full_lo_dc -500 1500 100 100 "  # full charge limit from, 0.1 degC
    "charge_temp_full_hi_dc -500 1500 350 350 "  # full charge limit up to, 0.1 degC
    "discharge_temp_full_lo_dc -500 1500 0 0 "  # full discharge limit from, 0.1 degC
    "discharge_temp_full_hi_dc -500 1500 450 450 "  # full discharge limit up to, 0.1 degC
    # passive balancing
    "balance_enable 0 1 1 1 "  # 1 = balancing allowed
    "balance_min_mv 0 6000 3800 3300 "  # no balancing while every cell is below, mV
    "balance_start_delta_mv 1 1000 15 15 "  # start bleeding a cell this far above vmin, mV
    "balance_stop_delta_mv 0 1000 5 5 "  # stop bleeding it this close to vmin, mV
    "balance_max_cells 1 192 8 8 "  # cells bleeding at once (heat budget)
    "balance_max_temp_dc -500 1500 500 500"  # no balancing at or above, 0.1 degC
)
_ROW = 5

# ocv_mv: open-circuit voltage at SOC 0, 5, ..., 100 % at 25 degC, mV (the plant model's tables).
# The keys of this dict are the valid values of the "chemistry" key (default NMC).
_OCV_POINTS = 21
# fmt: off
_OCV = {
    "NMC": (3000, 3400, 3500, 3560, 3600, 3630, 3660, 3690, 3720, 3750, 3790,
            3830, 3870, 3920, 3960, 4000, 4040, 4080, 4120, 4160, 4200),
    "LFP": (2500, 3100, 3200, 3240, 3260, 3280, 3290, 3295, 3300, 3302, 3305,
            3310, 3320, 3325, 3330, 3335, 3340, 3345, 3360, 3400, 3600),
}
# fmt: on

# Each chain must be strictly increasing: keeps derating ramps non-degenerate and every threshold
# inside the plausible range, so a protection rule can always trip.
_ORDER = (
    "plaus_cell_min_mv < cell_uv_mv < cell_discharge_min_mv < discharge_taper_mv;"
    "charge_taper_mv < cell_charge_max_mv < cell_ov_mv < plaus_cell_max_mv;"
    "plaus_temp_min_dc < ut_charge_dc < charge_temp_full_lo_dc < charge_temp_full_hi_dc;"
    "charge_temp_full_hi_dc < ot_charge_dc < plaus_temp_max_dc;"
    "plaus_temp_min_dc < ut_discharge_dc < discharge_temp_full_lo_dc;"
    "discharge_temp_full_lo_dc < discharge_temp_full_hi_dc < ot_discharge_dc < plaus_temp_max_dc;"
    "max_charge_ma < oc_charge_ma < plaus_current_ma;"
    "max_discharge_ma < oc_discharge_ma < plaus_current_ma;"
    "balance_stop_delta_mv < balance_start_delta_mv;"
    "cycle_ms < meas_stale_ms;"
    "cycle_ms < vcu_stale_ms"
)


class Config:
    """Validated settings; one attribute per key (see _SCHEMA for units)."""

    def __init__(self, values):
        for key in values:
            setattr(self, key, values[key])

    def as_dict(self):
        d = {"chemistry": self.chemistry, "ocv_mv": self.ocv_mv}
        t = _SCHEMA.split()
        for i in range(0, len(t), _ROW):
            d[t[i]] = getattr(self, t[i])
        return d


def _fail(key, why):
    raise ValueError("config key '" + key + "': " + why)


def _is_int(v):
    # JSON true/false arrive as bool, which CPython would accept as int.
    return type(v) is int


def _check_ocv(v):
    if not isinstance(v, (list, tuple)) or len(v) != _OCV_POINTS:
        _fail("ocv_mv", "needs " + str(_OCV_POINTS) + " integers (SOC 0, 5, ..., 100 %)")
    prev = 0
    for mv in v:
        if not _is_int(mv) or mv <= prev or mv > 8191:
            _fail("ocv_mv", "must be strictly increasing integers in 1..8191 mV")
        prev = mv
    return tuple(v)


def _derive(values, key, default):
    if values[key] == "*":
        values[key] = default


def load(overrides=None):
    """Build a Config from chemistry defaults plus `overrides`; ValueError names a bad key."""
    if overrides is None:
        overrides = {}
    if not isinstance(overrides, dict):
        raise ValueError("config overrides must be a dict")
    chem = overrides.get("chemistry", "NMC")
    if type(chem) is not str or chem not in _OCV:
        _fail("chemistry", "must be one of NMC, LFP")
    column = 3 if chem == "NMC" else 4
    values = {"chemistry": chem, "ocv_mv": _OCV[chem]}
    ranges = {}
    t = _SCHEMA.split()
    for i in range(0, len(t), _ROW):
        d = t[i + column]
        values[t[i]] = d if d == "*" else int(d)
        ranges[t[i]] = (int(t[i + 1]), int(t[i + 2]))
    for key in overrides:
        v = overrides[key]
        if key == "chemistry":
            continue
        if key == "ocv_mv":
            values[key] = _check_ocv(v)
            continue
        if key not in ranges:
            _fail(key, "unknown key")
        lo, hi = ranges[key]
        if not _is_int(v):
            _fail(key, "must be an integer")
        if v < lo or v > hi:
            _fail(key, "must be in " + str(lo) + ".." + str(hi))
        values[key] = v
    cap = values["capacity_mah"]
    _derive(values, "temp_count", values["cell_count"])
    _derive(values, "oc_charge_ma", 2 * cap)
    _derive(values, "oc_discharge_ma", 5 * cap)
    _derive(values, "max_charge_ma", cap)
    _derive(values, "max_discharge_ma", 3 * cap)
    _derive(values, "plaus_current_ma", 2 * max(values["oc_charge_ma"], values["oc_discharge_ma"]))
    for chain in _ORDER.split(";"):
        keys = chain.split(" < ")
        for i in range(1, len(keys)):
            if values[keys[i]] <= values[keys[i - 1]]:
                _fail(keys[i], "must be greater than " + keys[i - 1])
    return Config(values)
