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
import sys

from . import cellmodel

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
    # receive budget per pass of the loop (firmware/comm.py): a flood waits, the cycle does not
    "rx_budget_frames 8 4096 256 256 "  # frames handled per pass at most
    "rx_budget_us 500 100000 10000 10000 "  # time spent on them per pass at most, us
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
    "precharge_confirm 1 10 2 2 "  # consecutive readings at or above precharge_pct that end it
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
    "balance_strategy 0 1 0 0 "  # 0 = equal SOC (voltage until every cell's SOC is known), 1 = mV
    "balance_min_mv 0 6000 3800 3300 "  # a cell below never bleeds; none while all are, mV
    "balance_start_delta_mv 1 1000 15 15 "  # voltage: start bleeding this far above vmin, mV
    "balance_stop_delta_mv 0 1000 5 5 "  # voltage: stop bleeding this close to vmin, mV
    "balance_start_soc 1 10000 50 20 "  # SOC: start bleeding this far above the lowest, 0.01 %
    "balance_stop_soc 0 10000 10 5 "  # SOC: stop bleeding this close to the lowest, 0.01 %
    "balance_max_cells 1 192 8 8 "  # cells bleeding at once (heat budget)
    "balance_no_adjacent 0 1 0 0 "  # 1 = two neighbouring cells never bleed at once (AFE rule)
    "balance_max_temp_dc -500 1500 500 500 "  # no balancing at or above, 0.1 degC
    "balance_bleed_ms 100 600000 10000 10000 "  # bleed phase, then the measurement window, ms
    "balance_settle_ms 0 3600000 30000 30000 "  # at rest/charging this long first: a drive's idle
    # moments do not start bleeding, ms
    "balance_measure_ms 20 60000 500 500 "  # all bleeding off; decisions from its last sample, ms
    "balance_bleed_mohm 1000 1000000 33000 33000 "  # bleed resistor: I = cell_mv / it, milliohm
    # each sense line shared with the bleed path, milliohm: the voltages read while resistors
    # bleed are corrected for its drop (measurement.compensate); at most balance_bleed_mohm / 4.
    # Default 0 (separate lines, or a monitor that pauses bleeding while it converts, as the
    # LTC681x does with DCP=0): an uncorrected shared line makes neighbours read high, which
    # trips over-voltage early, while a correction for a drop that is not there would hide it.
    "balance_sense_mohm 0 1000 0 0 "
    "balance_rest_ms 0 86400000 1200000 1200000 "  # |I| below rest_current_ma this long: relaxed
    # SOC strategy at rest: after this much bleeding the next measurement window lasts
    # balance_relax_ms and every cell is re-anchored from OCV at its end, so self-discharge and
    # bookkeeping drift do not go unseen through a long balancing rest, ms. Default 0 (never):
    # at 2 h the pauses cost more bleeding than the drift they correct (benchmarks/balancing.py)
    "balance_reanchor_ms 0 86400000 0 0 "
    "balance_relax_ms 0 3600000 600000 600000 "  # that window, ms (RC relaxation after bleeding)
    "balance_anchor_rise_mv 0 1000 15 15 "  # re-anchor SOC from OCV on a 5 % step rising >= this
    # SOC strategy (issue #5). It decides from booked charge, not from each window's voltages,
    # so at rest its bleed phase may be longer than the voltage strategy's: protection reads
    # sense-line compensated voltages while resistors bleed (balance_sense_mohm) and a clean
    # sample after every phase, so at most this long apart; while charging (over-voltage
    # possible) it keeps balance_bleed_ms, ms
    "balance_soc_bleed_ms 100 600000 30000 30000 "
    # At rest, a cell whose resistor has been off for balance_relax_ms reads its OCV in every
    # window: its charge moves 1/2**this of the way to that OCV's, so the reference cells' self-
    # discharge is seen while others bleed, and single readings' noise averages out
    "balance_track_shift 0 8 3 3 "
    # The SOC strategy learns the weakest cell (the one reading lowest below discharge_taper_mv
    # while discharging) only below this pack SOC: near empty, what is left in each cell, not its
    # resistance, decides which reads lowest under load, 0.01 %
    "balance_weak_soc 0 10000 1500 1500 "
    # ---- fault catalogue (firmware/protection.py _TABLE, docs/faults.md), contactors, thermal ----
    # Spread of a balanced pack is tens of mV; LFP's steep ends turn small SOC spreads into large
    # voltage spreads near full or empty, so its warning sits higher to stay quiet there.
    "imbalance_mv 10 2000 150 200 "  # CellImbalance: vmax - vmin above (for t_qualify_ms), mV
    # Thermal runaway early warning: a sensor rising >= 1 degC/s (the figure; a cell
    # under abuse heats tens of degC/s, normal 5 C operation well below 1) while its cell's
    # voltage drops (internal short), in every 1 s window for runaway_qualify_ms.
    "runaway_rise_dc 1 1000 10 10 "  # temperature rise in a window, 0.1 degC
    "runaway_drop_mv 1 2000 10 10 "  # cell voltage drop in the same window, mV
    "runaway_qualify_ms 0 60000 2000 2000 "  # ms
    # Open sense wire: an LTC681x-type monitor reads an open input near 0 V.
    "open_wire_mv 0 8191 200 200 "  # a cell reading at or below, mV
    # Stuck cell voltage: bit-identical for stuck_window_ms while the current moved by more than
    # stuck_current_ma (0.5 C moves a healthy cell's voltage by far more than 1 mV).
    "stuck_window_ms 100 600000 5000 5000 "  # ms
    "stuck_current_ma 0 1000000 * * "  # mA; derived: 0.5 C
    # Second pack current measurement (hall sensor next to the shunt, SIM_Aux on the bench).
    "current2_enable 0 1 1 1 "  # 1 = fitted and checked
    "current2_delta_ma 100 1000000 * * "  # |shunt - hall| above (i_qualify_ms), mA; derived 0.2 C
    # Cold charging: lithium plating below 0 degC; LFP datasheets allow about 0.1 C there.
    "oc_cold_dc -500 1500 0 0 "  # the cold charge thresholds apply below, 0.1 degC
    "oc_charge_cold_ma 100 1000000 * * "  # charge over-current when cold, mA; derived NMC 1 C,
    # LFP 0.1 C
    "derate_pct 0 100 50 50 "  # DERATE tier: current limits capped at this share of max; cold:
    # charge limit at this share of oc_charge_cold_ma, %
    # VCU_Request integrity (E2E profile 1 style CRC-8, alive counter +1, see firmware/comm.py)
    "vcu_bad_count 1 100 3 3 "  # rejected frames (up/down counter) raising VcuRequestInvalid
    # Contactors
    "contactor_feedback 0 1 1 1 "  # 1 = feedback inputs fitted (board profile says 0 if not)
    "fb_timeout_ms 10 10000 300 300 "  # feedback must follow the command within, ms
    "precharge_retries 0 10 2 2 "  # precharge attempts after a failed one, then latched
    "precharge_pause_ms 0 600000 5000 5000 "  # pause before a retry (resistor cooling), ms
    "open_current_ma 0 1000000 * * "  # a vehicle open request waits while |I| above; derived 0.2 C
    "open_wait_ms 0 10000 2000 2000 "  # longest wait for the current to fall, ms
    # CurrentLimitIgnored: the published current limits enforced (firmware/protection.py)
    "limit_margin_ma 0 1000000 * * "  # current beyond a published limit by more, mA; derived C/10
    "limit_ignored_ms 0 60000 5000 5000 "  # ... this long opens the contactors, ms; 0: rule off
    # Thermal management (firmware/thermal.py)
    "cool_on_dc -500 1500 350 350 "  # cooling on above, 0.1 degC
    "thermal_hyst_dc 1 500 30 30 "  # cooling off below cool_on_dc minus this, preheating off
    # at ut_charge_dc plus this, 0.1 degC
    # SOC/SOH estimation (estimation.py, docs/estimation.md); the cell model is the "profile" key
    "est_sigma_mv 1 100 4 4 "  # voltage error the filter assumes (sensor + model), mV
    "est_sigma_r_pct 0 100 5 20 "  # resistance error the filter assumes, % of R0 + R1 + R2
    "est_model_pct 0 100 2 2 "  # SOC model error after moving one full capacity, %
    "est_sigma_i_ma 1 100000 * * "  # current-sensor noise, mA; derived: C / 200
    "est_offset_max_ma 0 100000 * * "  # largest current-sensor offset learned, mA; derived: C/100
    "est_sigma_min 0 1000 5 5 "  # SOC sigma never below this (EKF overconfidence), 0.01 %
    "est_init_mv 1 1000 10 10 "  # OCV error at the start at rest, mV (plus I * R0 under load)
    "est_rate_soc_s 0 1000 10 10 "  # filter moves the SOC at most this fast, 0.01 %/s; 0: counting
    "est_bound_floor 0 10000 100 150 "  # bound floor: model error the covariance lacks, 0.01 %
    "est_cell_shift 0 8 3 3 "  # per-cell SOC filter gain 2**-shift per update
    "est_cell_max_ma 0 1000000 * * "  # per-cell SOC filter runs while |I| <= this, mA; derived: C/2
    "est_soh_span 500 10000 3000 3000 "  # capacity from OCV anchors this far apart, 0.01 % SOC
    "est_step_ma 1 1000000 * * "  # a current step this large measures R0, mA; derived: C / 2
    "sop_rise_ma_s 1 1000000 * * "  # power limits rise at most this fast, mA/s; derived: C / 2
    "sop_charge_taper_soc 0 9999 9000 9500 "  # charge SOP falls linearly to 0 at 100 %, 0.01 %
    "sop_discharge_taper_soc 1 10000 1000 500 "  # discharge SOP falls linearly to 0 at 0 %, 0.01 %
    # SOC filter: model error it assumes beyond est_sigma_mv (issue #3, docs/estimation.md)
    "est_bend_pct 0 100 12 25 "  # OCV error at the knees, % of slope change x table step
    "est_ocv_mv 0 100 2 5 "  # OCV table error (a bias along the curve, a filter state), mV
    "est_gate_x10 10 1000 30 30 "  # innovations beyond this many sigma (x10) are de-weighted
    # Full charge: charging at most est_full_ma with the highest cell within est_full_mv of
    # cell_charge_max_mv for est_full_ms (the end of CV) sets SOC to 100 %
    "est_full_ma 0 1000000 * * "  # taper current at the end of CV, mA; derived: C / 20
    "est_full_mv 0 500 30 30 "  # mV below cell_charge_max_mv
    "est_full_ms 0 3600000 30000 30000 "  # ms
    # DC charging over GB/T 27930 (firmware/charging.py, docs/charging.md)
    "charging 0 1 1 1 "  # 1 = the charging service runs on a board with a charger CAN channel
    "gbt_2015 0 1 0 0 "  # 1 = 2015 edition behaviour, 0 = 2023 Category A
    "gbt_soc_target 100 10000 10000 10000 "  # BST "SOC target reached" from this SOC, 0.01 %
    "gbt_end_ma 0 1000000 * * "  # CV ends once the charge limit is below this, mA; derived C/20
    "gbt_oc_margin_ma 0 1000000 * * "  # ChargerFault: current above BCL by more; derived C/10
    "gbt_oc_ms 0 60000 1000 1000 "  # ... for this long ends the session, ms
    # Persistence (firmware/persistence.py): SOC, SOH, counters and fault memory in A/B records.
    # A changed state is written at most every persist_interval_ms (flash wear: 120 s while
    # driving is ~15 writes per slot per hour-long drive), a new fault record after persist_dirty_ms
    "persist_interval_ms 1000 3600000 120000 120000 "  # ms
    # ... and at once (after persist_dirty_ms) when the SOC moved this much since the last write
    "persist_soc_step 10 10000 100 100 "  # 0.01 %
    "persist_dirty_ms 0 60000 1000 1000"  # ms
)
_ROW = 5


def _rows():
    # The schema row by row, in one reused list: splitting the whole string at once would put
    # hundreds of small strings on the heap together (a peak the smallest boards feel).
    s = _SCHEMA
    n = len(s)
    row = [""] * _ROW
    i = 0
    while i < n:
        for k in range(_ROW):
            j = s.find(" ", i)
            if j < 0:
                j = n
            row[k] = s[i:j]
            i = j + 1
        yield row


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
    "balance_stop_soc < balance_start_soc;"
    "cycle_ms < balance_measure_ms < balance_bleed_ms;"
    "balance_measure_ms < balance_relax_ms;"
    "balance_measure_ms < balance_soc_bleed_ms;"
    "cycle_ms < meas_stale_ms;"
    "cycle_ms < vcu_stale_ms;"
    "open_wire_mv < plaus_cell_min_mv"
)


# "profile" (optional): the cell model as a JSON object (firmware/profile.py). It sets the
# chemistry and, unless overridden, capacity_mah and ocv_mv; without it the chemistry's built-in
# profile is used (profile.default).


class Config:
    """Validated settings; one attribute per key (see _SCHEMA for units). load() returns a
    subclass whose class dict is the validated dict itself: on MicroPython type() adopts it, where
    an instance would copy every key into a second dict (about 4 KB of heap)."""

    @classmethod
    def as_dict(cls):
        d = {"chemistry": cls.chemistry, "ocv_mv": cls.ocv_mv}
        for row in _rows():
            d[row[0]] = getattr(cls, row[0])
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
    prof = overrides.get("profile")
    if prof is not None:
        from . import profile as profile_mod  # start-up only, dropped below

        try:
            prof = profile_mod.load(prof)
        finally:
            # The loader's bytecode would hold heap for the rest of the run for code run once.
            pkg = __name__[: __name__.rfind(".")]
            sys.modules.pop(pkg + ".profile", None)
            if hasattr(sys.modules[pkg], "profile"):
                delattr(sys.modules[pkg], "profile")
    chem = overrides.get("chemistry", prof.chemistry if prof else "NMC")
    if type(chem) is not str or chem not in _OCV:
        _fail("chemistry", "must be one of NMC, LFP")
    if prof and prof.chemistry != chem:
        _fail("profile", "chemistry differs from the configured one")
    column = 3 if chem == "NMC" else 4
    values = {"chemistry": chem, "ocv_mv": _OCV[chem]}
    for row in _rows():
        key = row[0]
        if key in overrides:
            v = overrides[key]
            _check_range(row, v)
        else:
            v = row[column]
            if v != "*":
                v = int(v)
        values[key] = v
    for key in overrides:
        if key == "ocv_mv":
            values[key] = _check_ocv(overrides[key])
        elif key not in values and key != "profile":
            _fail(key, "unknown key")
    if prof:
        if "capacity_mah" not in overrides:
            values["capacity_mah"] = prof.capacity_mah
        if "ocv_mv" not in overrides:
            values["ocv_mv"] = _profile_ocv(prof)
    cap = values["capacity_mah"]
    _derive(values, "temp_count", values["cell_count"])
    _derive(values, "oc_charge_ma", 2 * cap)
    _derive(values, "oc_discharge_ma", 5 * cap)
    _derive(values, "max_charge_ma", cap)
    _derive(values, "max_discharge_ma", 3 * cap)
    _derive(values, "est_sigma_i_ma", max(1, cap // 200))
    _derive(values, "est_offset_max_ma", cap // 100)
    _derive(values, "est_cell_max_ma", cap // 2)
    _derive(values, "est_step_ma", max(1, cap // 2))
    _derive(values, "est_full_ma", max(1, cap // 20))
    _derive(values, "sop_rise_ma_s", max(1, cap // 2))
    _derive(values, "plaus_current_ma", 2 * max(values["oc_charge_ma"], values["oc_discharge_ma"]))
    _derive(values, "stuck_current_ma", cap // 2)
    _derive(values, "current2_delta_ma", cap // 5)
    _derive(values, "oc_charge_cold_ma", cap if chem == "NMC" else cap // 10)
    _derive(values, "open_current_ma", cap // 5)
    _derive(values, "limit_margin_ma", cap // 10)
    _derive(values, "gbt_end_ma", cap // 20)
    _derive(values, "gbt_oc_margin_ma", cap // 10)
    if 4 * values["balance_sense_mohm"] > values["balance_bleed_mohm"]:
        # Keeps the sense-line correction well-conditioned and its products small (measurement).
        _fail("balance_sense_mohm", "must be at most balance_bleed_mohm / 4")
    _check_order(values)
    values["profile"] = prof or cellmodel.default(chem, cap, values["ocv_mv"])
    return type("Config", (Config,), values)


def _check_range(row, v):
    if not _is_int(v):
        _fail(row[0], "must be an integer")
    if v < int(row[1]) or v > int(row[2]):
        _fail(row[0], "must be in " + row[1] + ".." + row[2])


def _check_order(values):
    # Chains whose keys `values` lacks are skipped (check() passes only the chains of one key).
    for chain in _ORDER.split(";"):
        keys = chain.split(" < ")
        if keys[0] not in values:
            continue
        for i in range(1, len(keys)):
            if values[keys[i]] <= values[keys[i - 1]]:
                _fail(keys[i], "must be greater than " + keys[i - 1])


def rows():
    """The schema rows in order, each a new list [name, min, max, NMC default, LFP default]
    (strings; desktop and diagnostic use)."""
    return [list(r) for r in _rows()]


def key_at(index):
    """Name of the schema's row `index` (the UDS configuration DIDs count rows), or None."""
    for i, row in enumerate(_rows()):
        if i == index:
            return row[0]
    return None


def check(cfg, key, value):
    """Check `key` = `value` with every other key as in `cfg`, by the rules of load(): its
    type and range and the ordering chains. ValueError names the key (diagnostic writes)."""
    for row in _rows():
        if row[0] == key:
            _check_range(row, value)
            break
    else:
        _fail(key, "unknown key")
    if key in _ORDER:
        values = {}
        for chain in _ORDER.split(";"):
            if key in chain.split(" < "):
                for k in chain.split(" < "):
                    values[k] = value if k == key else getattr(cfg, k)
        _check_order(values)


def from_board(board):
    """`load` of the board's overrides; a bad configuration halts the board (contactors open)."""
    try:
        overrides = board.config_overrides()
        from .diag_config import merged  # the keys a diagnostic tester wrote (UDS 0x2E)

        with_diag = merged(board, overrides)
        if with_diag is not overrides:
            try:
                return load(with_diag)
            except ValueError as e:
                print("cellguard: diagnostic configuration ignored:", e)
        return load(overrides)
    except (ValueError, OSError) as e:
        board.halt("configuration rejected: " + str(e))
        raise


def _profile_ocv(p):
    # The profile's 25 degC OCV at SOC 0, 5, ..., 100 %, mV, kept strictly increasing.
    out = []
    for k in range(_OCV_POINTS):
        p.locate(k * 500, 250)
        v = (p.at(p.ocv) + 5) // 10
        out.append(v if not out or v > out[-1] else out[-1] + 1)
    return tuple(out)
