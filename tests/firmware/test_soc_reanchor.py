"""The SOC re-anchor a tester asks for (SocEstimator.reanchor, UDS routine 0x0303): refused
unless the pack has rested, failed on a flat OCV, and where it passes the SOC moves toward what
OCV says faster than without it. Runs under CPython and MicroPython.
"""

from fw_support import estimator, feed, fresh

from firmware.data import TEST_FAILED, TEST_PASSED, TEST_REFUSED

OCV_3900 = 6301  # SOC (0.01 %) of a rested 3900 mV on the default NMC profile
REST = {"cell_count": 4, "balance_rest_ms": 1000, "rest_current_ma": 5000}


def _run(e, m, cfg, now, n, mv, current_ma=0):
    for _ in range(n):
        now += 100
        feed(m, cfg, mv=mv, current_ma=current_ma, now_ms=now)
        e.update(m, 100, now)
    return now


def test_refused_until_rested():
    cfg, m = fresh(REST, mv=3900)
    e = estimator(cfg)
    now = _run(e, m, cfg, 0, 5, 3900)
    assert e.reanchor(m) == TEST_REFUSED  # 0.5 s of the 1 s
    now = _run(e, m, cfg, now, 10, 3900)
    assert e.reanchor(m) == TEST_PASSED
    _run(e, m, cfg, now, 1, 3900, current_ma=-6000)  # charging: the rest is over
    assert e.reanchor(m) == TEST_REFUSED


def test_failed_on_the_lfp_plateau():
    o = dict(REST, chemistry="LFP")
    cfg, m = fresh(o, mv=3300)
    e = estimator(cfg)
    _run(e, m, cfg, 0, 15, 3300)
    assert e.reanchor(m) == TEST_FAILED


def test_a_drifted_counter_moves_back_toward_ocv():
    # At rest by the threshold (|I| <= rest_current_ma) but with current counted for minutes,
    # on cells whose voltage does not move: the counter drifted from what OCV says.
    errors = []
    for call in (False, True):
        cfg, m = fresh(REST, mv=3900)
        e = estimator(cfg)
        now = _run(e, m, cfg, 0, 20, 3900)  # rested: the one automatic anchor
        now = _run(e, m, cfg, now, 2000, 3900, current_ma=4900)
        before = e.out.soc
        if call:
            assert e.reanchor(m) == TEST_PASSED
        _run(e, m, cfg, now, 100, 3900, current_ma=4900)
        errors.append((before, e.out.soc))
    (b0, without), (b1, with_) = errors
    assert b0 == b1 and b0 < OCV_3900 - 150  # drifted 1.5 % and more below OCV's SOC
    assert without <= b0 + 5  # the counter alone keeps it there
    assert b1 + 50 <= with_ < OCV_3900  # the anchor moves it back (at est_rate_soc_s)
