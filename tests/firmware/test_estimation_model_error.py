"""The SOC filter's model error (docs/estimation.md, "Model error"): what the voltage may and may
not tell it where the cell model is only approximately right. Plain functions: they also run
under MicroPython (tests/firmware/mp_runner.py)."""

from fw_support import fresh

from firmware.estimation import SocEstimator

_PLATEAU = {
    "format": "cellguard-cell-profile",
    "version": 1,
    "name": "plateau",
    "chemistry": "LFP",
    "source": "test",
    "capacity_ah": 2.3,
    "voltage_min_v": 2.5,
    "voltage_max_v": 3.6,
    "coulombic_efficiency": 1.0,
    "soc_pct": [0, 10, 30, 70, 90, 100],
    "temperature_c": [25],
    # LFP-like: steep ends, and between 30 and 70 % a plateau rising 2 mV in all (0.05 mV/%)
    "ocv_v": [[2.9, 3.2, 3.28, 3.282, 3.33, 3.45]],
    "hysteresis_v": [[0, 0, 0, 0, 0, 0]],
    "hysteresis_rate_per_ah": 0.0,
    "r0_ohm": [[0.02] * 6],
    "r1_ohm": [[0.005] * 6],
    "tau1_s": [[20] * 6],
    "r2_ohm": [[0.005] * 6],
    "tau2_s": [[300] * 6],
}


def _restored(est, soc, bound):
    buf = bytearray(est.state_size)
    est.save_state(buf)
    buf[2], buf[3], buf[4], buf[5] = soc & 255, soc >> 8, bound & 255, bound >> 8
    for i in range(est._cfg.cell_count):
        buf[22 + 2 * i], buf[23 + 2 * i] = soc & 255, soc >> 8
    assert est.restore_state(buf)


def _rest(mv, hours):
    cfg, m = fresh({"cell_count": 2, "profile": _PLATEAU}, mv=mv)
    est = SocEstimator(cfg)
    _restored(est, 5000, 300)
    est.update(m, 1000, 0)
    lo = hi = est.soc
    for _ in range(hours * 3600):
        est.update(m, 1000, 0)
        lo, hi = min(lo, est.soc), max(hi, est.soc)
    return lo, hi, est


def test_on_a_plateau_a_small_voltage_error_does_not_move_the_soc():
    """Law: on a flat OCV segment the voltage cannot tell SOC. A cell at rest whose voltage sits
    4 mV above the table (inside the table's own error, est_ocv_mv) leaves a correct SOC within
    0.5 % over two hours; without the table-error state the filter read those 4 mV as 80 % of
    SOC on a 0.05 mV/% slope and walked off the plateau."""
    lo, hi, est = _rest(3281 + 4, 2)
    assert 4950 <= lo and hi <= 5050
    # ... and the bound still covers the (correct) start, so the error stays inside it.
    assert abs(est.soc - 5000) <= est.soc_bound


def test_on_a_steep_segment_the_voltage_still_corrects():
    """Contrast (the table-error state is bounded, est_ocv_mv x 3): where OCV is steep (70 to
    90 %: 2.4 mV/%) a voltage 24 mV above the table at 80 % is SOC, not table error: a SOC
    restored at 80 % moves up by several %."""
    cfg, m = fresh({"cell_count": 2, "profile": _PLATEAU}, mv=3306 + 24)
    est = SocEstimator(cfg)
    _restored(est, 8000, 1000)
    for _ in range(3600):
        est.update(m, 1000, 0)
    assert est.soc >= 8500


def _rested(soc, mv):
    # Restored at `soc` (0.01 %), then 25 min at rest at `mv`: past balance_rest_ms (20 min).
    # The plateau runs on to 90 % here (3.28 -> 3.283 V), then the knee: 16.7 mV/% to 100 %.
    prof = dict(_PLATEAU, ocv_v=[[2.9, 3.2, 3.28, 3.282, 3.283, 3.45]])
    cfg, m = fresh({"cell_count": 2, "profile": prof}, mv=mv)
    est = SocEstimator(cfg)
    _restored(est, soc, 300)
    for _ in range(1500):
        est.update(m, 1000, 0)
    return est


def test_a_rest_anchors_only_where_the_voltage_can_tell_soc():
    """Law: a rest re-anchors the SOC from OCV only where the OCV, within its error
    (est_init_mv), pins SOC down (the steepness rule over that whole range). A rest voltage
    1 mV above the plateau's end reads 90.06 % on the knee's straight line, yet within 10 mV
    it is anywhere on the plateau: no anchor (the rule used to look at one segment only and
    anchored there). At the knee's 95 % it anchors."""
    assert _rested(9500, 3283 + 1)._anchor_soc == -1
    est = _rested(9300, 3366)  # the table's OCV at 95 %
    assert abs(est._anchor_soc - 9500) <= 50
