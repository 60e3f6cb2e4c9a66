from fw_support import feed, fresh

from firmware import config
from firmware.compat import ticks_add
from firmware.measurement import Measurements


def test_never_received_is_stale():
    cfg = config.load()
    m = Measurements(cfg)
    assert m.stale(0)
    for g in range(4):
        m.set_cells(g, 3700, 3700, 3700, 3700, 0)
        m.set_temps(g, 250, 250, 250, 250, 0)
    assert m.stale(0)  # pack value missing
    m.set_pack(0, 59200, 59200, 0)
    assert not m.stale(0)


def test_one_missing_group_is_stale():
    cfg = config.load({"cell_count": 10, "temp_count": 5})
    m = Measurements(cfg)
    for g in range(3):
        m.set_cells(g, 3700, 3700, 3700, 3700, 0)
    m.set_temps(0, 250, 250, 250, 250, 0)
    m.set_pack(0, 37000, 37000, 0)
    assert m.stale(0)
    m.set_temps(1, 250, 0, 0, 0, 0)
    assert not m.stale(0)


def test_age_limit_and_stays_stale():
    cfg, m = fresh()
    assert not m.stale(cfg.meas_stale_ms)
    m.set_cells(0, 3700, 3700, 3700, 3700, 200)
    assert m.stale(cfg.meas_stale_ms + 1)
    # Once found stale, an earlier clock can't make it fresh again: only new data can.
    assert m.stale(100)
    feed(m, cfg, now_ms=600)
    assert not m.stale(650)


def test_tick_wrap():
    cfg = config.load()
    m = Measurements(cfg)
    t = ticks_add(0, -100)
    feed(m, cfg, now_ms=t)
    assert not m.stale(ticks_add(t, 300))
    assert m.stale(ticks_add(t, 501))


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


def test_pack_voltage_must_match_cell_sum():
    cfg, m = fresh()  # 16 cells at 3700 mV: sum 59200 mV
    for pack, ok in ((59200 + 5000, True), (59200 - 5000, True), (64201, False), (54199, False)):
        m.set_pack(0, pack, 0, 0)
        assert m.plausible() == ok


def test_wrapped_pack_voltage_is_implausible():
    # 192 NMC cells at 4.2 V = 806.4 V does not fit a 16-bit 10 mV field (655.35 V): it wraps.
    cfg, m = fresh({"cell_count": 192}, mv=4200)
    assert m.plausible()
    m.set_pack(0, 806400 - 655360, 0, 0)
    assert not m.plausible()


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
    assert not m.stale(0) and m.plausible()
