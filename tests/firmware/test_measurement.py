from fw_support import feed, fresh, raises_naming

from firmware import can_codec, config
from firmware.compat import ticks_add
from firmware.measurement import Measurements


def test_never_received_is_stale():
    cfg = config.load()
    m = Measurements(cfg)
    assert m.evaluate(0)
    for g in range(4):
        m.set_cells(g, 3700, 3700, 3700, 3700, 0)
        m.set_temps(g, 250, 250, 250, 250, 0)
    assert m.evaluate(0)  # pack value missing
    m.set_pack(0, 59200, 59200, 0)
    assert m.evaluate(0)  # auxiliary inputs (contactor feedback, second current) missing
    m.set_aux(0, 0, 0)
    assert not m.evaluate(0)


def test_one_missing_group_is_stale():
    cfg = config.load({"cell_count": 10, "temp_count": 5})
    m = Measurements(cfg)
    for g in range(3):
        m.set_cells(g, 3700, 3700, 3700, 3700, 0)
    m.set_temps(0, 250, 250, 250, 250, 0)
    m.set_pack(0, 37000, 37000, 0)
    m.set_aux(0, 0, 0)
    assert m.evaluate(0)
    m.set_temps(1, 250, 0, 0, 0, 0)
    assert not m.evaluate(0)


def test_aux_inputs_count_only_when_fitted():
    cfg = config.load({"contactor_feedback": 0, "current2_enable": 0})
    m2 = Measurements(cfg)
    for g in range(4):
        m2.set_cells(g, 3700, 3700, 3700, 3700, 0)
        m2.set_temps(g, 250, 250, 250, 250, 0)
    m2.set_pack(0, 59200, 59200, 0)
    assert not m2.evaluate(0)  # no auxiliary frame needed without feedback or second sensor


def test_age_limit_and_stays_stale():
    cfg, m = fresh()
    assert not m.evaluate(cfg.meas_stale_ms)
    m.set_cells(0, 3700, 3700, 3700, 3700, 200)
    assert m.evaluate(cfg.meas_stale_ms + 1)
    # Once found stale, an earlier clock can't make it fresh again: only new data can.
    assert m.evaluate(100)
    feed(m, cfg, now_ms=600)
    assert not m.evaluate(650)


def test_tick_wrap():
    cfg = config.load()
    m = Measurements(cfg)
    t = ticks_add(0, -100)
    feed(m, cfg, now_ms=t)
    assert not m.evaluate(ticks_add(t, 300))
    assert m.evaluate(ticks_add(t, 501))


def test_bad_group_counts_error():
    cfg, m = fresh({"cell_count": 6, "temp_count": 6})
    m.set_cells(2, 1, 1, 1, 1, 0)
    m.set_cells(-1, 1, 1, 1, 1, 0)
    m.set_temps(2, 1, 1, 1, 1, 0)
    assert m.rx_errors == 3
    assert list(m.cell_mv) == [3700] * 6 and list(m.temp_dc) == [250] * 6
    m.set_cells(1, 3600, 3601, 9, 9, 0)  # cells 7, 8 don't exist: ignored
    assert list(m.cell_mv) == [3700, 3700, 3700, 3700, 3600, 3601]
    assert m.rx_errors == 3


def test_plausible_ranges():
    cfg, m = fresh()
    assert m.plausible()
    checks = (
        (m.cell_mv, 3, 499),
        (m.cell_mv, 15, 5501),
        (m.temp_dc, 0, -501),
        (m.temp_dc, 7, 1501),
    )
    for arr, i, bad in checks:
        old = arr[i]
        arr[i] = bad
        assert not m.plausible()
        arr[i] = old
        assert m.plausible()
    for current in (cfg.plaus_current_ma + 1, -cfg.plaus_current_ma - 1):
        m.set_pack(current, 59200, 59200, 0)
        assert not m.plausible()
    m.set_pack(-cfg.plaus_current_ma, 59200, 0, 0)
    assert m.plausible()
    m.set_pack(0, -1, 0, 0)
    assert not m.plausible()
    m.set_pack(0, 59200, 16 * 5500 + 1, 0)
    assert not m.plausible()


def test_pack_voltage_sum_is_not_a_range_check():
    # PackVoltageMismatch is protection's rule now (tests/firmware/test_protection.py).
    cfg, m = fresh()
    m.set_pack(0, 59200 + 5001, 0, 0)
    assert m.plausible()


def test_out_of_container_values_stay_implausible():
    cfg, m = fresh()
    m.set_cells(0, -5, 70000, 3700, 3700, 0)
    assert m.cell_mv[0] == 0 and m.cell_mv[1] == 65535
    assert not m.plausible()
    cfg, m = fresh()
    m.set_temps(0, -40000, 40000, 250, 250, 0)
    assert m.temp_dc[0] == -32768 and m.temp_dc[1] == 32767
    assert not m.plausible()


def test_stats_with_numbers():
    cfg, m = fresh({"cell_count": 6, "temp_count": 5})
    assert m.vmin_cell == 1 and m.vmax_cell == 1  # all equal: first cell wins
    m.set_cells(0, 3700, 3650, 3800, 3650, 0)
    m.set_cells(1, 3800, 3701, 0, 0, 0)
    m.set_temps(0, 250, -105, 310, 310, 0)
    m.set_temps(1, -105, 0, 0, 0, 0)
    m.update_stats()
    assert m.vmin_mv == 3650 and m.vmin_cell == 2
    assert m.vmax_mv == 3800 and m.vmax_cell == 3
    assert m.cell_sum_mv == 22301
    assert m.vavg_mv == 3717  # 3716.83 rounded
    assert m.tmin_dc == -105 and m.tmin_sensor == 2
    assert m.tmax_dc == 310 and m.tmax_sensor == 3
    assert m.tavg_dc == 132  # 660 / 5


def test_stats_not_available_before_update():
    m = Measurements(config.load())
    assert m.vmin_cell == 0 and m.vmax_cell == 0 and m.tmin_sensor == 0 and m.tmax_sensor == 0


def test_192_cells():
    cfg, m = fresh({"cell_count": 192}, mv=4000)
    m.set_cells(47, 4000, 4000, 4000, 3000, 0)
    m.update_stats()
    assert m.vmin_cell == 192 and m.cell_sum_mv == 191 * 4000 + 3000
    assert not m.evaluate(0) and m.plausible()


# ---- sense-line compensation (balance_sense_mohm) ----------------------------------------------


def _mask(n, bleeding):
    mask = bytearray((n + 7) // 8)
    for i in bleeding:
        mask[i >> 3] |= 1 << (i & 7)
    return mask


def _sensed(true_mv, bleeding, sense_mohm, bleed_mohm):
    # What the plant's sensor model reads (sim/sensors.py): Ib_i = V_i / R_bleed through both of
    # cell i's lines; cell i reads 2 R Ib_i low and each neighbour R Ib_i high (rounded to 1 mV).
    n = len(true_mv)
    ib = [true_mv[i] / bleed_mohm if i in bleeding else 0.0 for i in range(n)]
    out = []
    for i in range(n):
        drop = -2.0 * ib[i]
        if i > 0:
            drop += ib[i - 1]
        if i + 1 < n:
            drop += ib[i + 1]
        out.append(int(round(true_mv[i] + drop * sense_mohm)))
    return out


def _compensated(true_mv, bleeding, overrides=None):
    n = len(true_mv)
    o = {"cell_count": n, "balance_sense_mohm": 250}  # the plant's default line (sim/sensors.py)
    o.update(overrides or {})
    cfg = config.load(o)
    m = Measurements(cfg)
    raw = _sensed(true_mv, bleeding, cfg.balance_sense_mohm, cfg.balance_bleed_mohm)
    raw += [0, 0, 0]
    for g in range((n + 3) // 4):
        i = 4 * g
        m.set_cells(g, raw[i], raw[i + 1], raw[i + 2], raw[i + 3], 0)
    m.compensate(_mask(n, bleeding))
    return raw[:n], list(m.cell_mv), m


def _close(a, b, tol):
    return len(a) == len(b) and all(abs(a[i] - b[i]) <= tol for i in range(len(a)))


def test_default_assumes_no_shared_sense_line():
    # Fail-safe default: without a stated shared line nothing is corrected (see config.py).
    assert config.load().balance_sense_mohm == 0
    assert config.load({"chemistry": "LFP"}).balance_sense_mohm == 0


def test_sense_line_resistance_is_range_checked():
    assert raises_naming({"balance_sense_mohm": 1001}, "balance_sense_mohm")
    assert raises_naming(
        {"balance_sense_mohm": 251, "balance_bleed_mohm": 1000}, "balance_sense_mohm"
    )
    assert config.load({"balance_sense_mohm": 250, "balance_bleed_mohm": 1000}).balance_sense_mohm


def test_compensation_one_bleeding_cell():
    true = [4000] * 10
    raw, comp, _ = _compensated(true, [5])
    assert raw[5] == 3939 and raw[4] == 4030 and raw[6] == 4030 and raw[3] == 4000
    assert _close(comp, true, 1)


def test_compensation_adjacent_bleeding_cells():
    true = [4000, 4010, 4020, 4030, 4040, 4050, 4060, 4070]
    raw, comp, _ = _compensated(true, [3, 4])
    assert raw[2] > true[2] + 25 and raw[5] > true[5] + 25
    assert _close(comp, true, 1)


def test_compensation_every_cell_bleeding():
    true = [3900 + 7 * i for i in range(9)]
    raw, comp, _ = _compensated(true, list(range(9)))
    assert raw[0] < true[0] - 25 and raw[8] < true[8] - 25  # end cells: one neighbour each
    assert _close(comp, true, 1)


def test_compensation_first_and_last_cell():
    true = [4100, 4000, 4000, 4000, 4000, 4100]
    raw, comp, _ = _compensated(true, [0, 5])
    assert raw[0] < true[0] - 55 and raw[1] > true[1] + 25 and raw[4] > true[4] + 25
    assert _close(comp, true, 1)
    raw, comp, _ = _compensated([4100], [0])
    assert raw[0] < 4100 - 55 and _close(comp, [4100], 1)


def test_compensation_low_bleed_resistor():
    # 10 ohm: 0.4 A bleed, 0.2 V drop on the bleeding cell; second order leaves under 1 mV.
    true = [4150, 4140, 4160, 4150, 4150, 4140, 4150, 4150]
    raw, comp, _ = _compensated(true, [1, 3, 4, 7], {"balance_bleed_mohm": 10000})
    assert raw[2] > true[2] + 90
    assert _close(comp, true, 1)


def test_compensation_zero_resistance_disables_it():
    cfg = config.load({"cell_count": 6, "balance_sense_mohm": 0})
    m = Measurements(cfg)
    m.set_cells(0, 3939, 4030, 4000, 4000, 0)
    m.set_cells(1, 4000, 4000, 0, 0, 0)
    m.compensate(_mask(6, [0, 1, 2]))
    assert list(m.cell_mv) == [3939, 4030, 4000, 4000, 4000, 4000]  # separate lines: as read


def test_compensation_is_idempotent_and_undone_when_bleeding_stops():
    true = [4000] * 8
    raw, comp, m = _compensated(true, [2, 5])
    m.compensate(_mask(8, [2, 5]))
    assert list(m.cell_mv) == comp
    m.compensate(_mask(8, []))
    assert list(m.cell_mv) == raw
    assert list(m.cell_raw_mv) == raw


def _frame(group, v):
    # SIM_CellVoltages / SIM_CellTemps share the BMS_ layouts the firmware encodes.
    buf = bytearray(8)
    can_codec.encode_bms_cell_voltages(buf, group, *v)
    return buf


def test_frames_decoded_in_place_match_the_setters():
    # The receive path (comm.py) decodes straight into cell_raw_mv / temp_dc; cells_in and
    # temps_in then check the group, bring cell_mv along and mark it fresh, as set_cells does.
    for sense in (0, 50):
        cfg = config.load({"cell_count": 6, "temp_count": 5, "balance_sense_mohm": sense})
        m = Measurements(cfg)
        m.cells_in(
            can_codec.decode_sim_cell_voltages_into(_frame(0, (1, 2, 3, 4)), m.cell_raw_mv), 0
        )
        m.cells_in(
            can_codec.decode_sim_cell_voltages_into(_frame(1, (5, 6, 7, 8)), m.cell_raw_mv), 0
        )
        m.cells_in(
            can_codec.decode_sim_cell_voltages_into(_frame(2, (9, 9, 9, 9)), m.cell_raw_mv), 0
        )
        assert list(m.cell_mv) == list(m.cell_raw_mv) == [1, 2, 3, 4, 5, 6]
        assert m.rx_errors == 1  # group 2 does not exist: nothing written
        buf = bytearray(8)
        can_codec.encode_bms_cell_temps(buf, 1, -400, 1200, 7, 8)
        m.temps_in(can_codec.decode_sim_cell_temps_into(buf, m.temp_dc), 0)
        can_codec.encode_bms_cell_temps(buf, 0, 1, 2, 3, 4)
        m.temps_in(can_codec.decode_sim_cell_temps_into(buf, m.temp_dc), 0)
        assert list(m.temp_dc) == [1, 2, 3, 4, -400]
        assert m.stale  # the pack value is missing
        m.set_pack(0, 21, 21, 0)
        m.set_aux(0, 0, 0)
        assert not m.evaluate(0)
        assert (m.cell_mv is m.cell_raw_mv) == (sense == 0)  # one array without compensation


def test_plausible_from_the_statistics_agrees_with_the_scan():
    # Protection asks right after evaluate, where the statistics' extremes are the values'.
    cfg, m = fresh({"cell_count": 9, "temp_count": 9})
    for cell, mv, dc in ((0, 3700, 250), (8, 5600, 250), (4, 3700, -600), (2, 400, 250)):
        feed(m, cfg)
        m.cell_mv[cell] = mv
        m.temp_dc[cell] = dc
        m.update_stats()
        assert m.plausible(True) == m.plausible() == (mv == 3700 and dc == 250)
