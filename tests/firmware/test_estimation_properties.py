"""CPython only (hypothesis): the laws of the SOC estimator for random inputs."""

from fw_support import estimator, fresh, saved_state
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware import config
from firmware.data import cell_soc
from firmware.ocv import soc_to_ocv

NMC = config.load().ocv_mv
FIXED = settings(deadline=None, max_examples=60, derandomize=True)

steps = st.lists(
    st.tuples(
        st.integers(2500, 4300),  # mean cell voltage, mV
        st.integers(-30, 30),  # spread between the cells, mV
        st.integers(-50000, 50000),  # current, mA
        st.integers(-200, 600),  # temperature, 0.1 degC
        st.integers(1, 1000),  # cycle, ms
    ),
    min_size=2,
    max_size=80,
)


@FIXED
@given(steps)
def test_soc_in_range_and_moves_only_by_counting_plus_the_rate_limit(seq):
    """Law: whatever the measurements, every reported SOC stays in 0..100 %, and per cycle the
    pack SOC moves at most by the charge counted in that cycle plus est_rate_soc_s x dt (the
    filter's corrections are rate-limited: the SOC never jumps on its own)."""
    cfg, m = fresh({"cell_count": 4})
    est = estimator(cfg)
    per_pct = cfg.capacity_mah * 36  # mAs per 1 %
    for mv, spread, ma, dc, dt in seq:
        for c in range(4):
            m.cell_mv[c] = mv + spread * c
        m.current_ma = ma
        for t in range(4):
            m.temp_dc[t] = dc
        m.update_stats()
        before = est.out.soc
        started = est.out.initialised
        est.update(m, dt, 0)
        for v in (est.out.soc, est.out.soc_min, est.out.soc_max, est.out.soc_bound):
            assert 0 <= v <= 10000
        assert all(0 <= cell_soc(est.out, i) <= 10000 for i in range(4))
        if started:
            counted = abs(ma) * dt * 100 // (per_pct * 1000) + 1
            assert abs(est.out.soc - before) <= counted + cfg.est_rate_soc_s * dt // 1000 + 1


@FIXED
@given(st.integers(1000, 9500), st.integers(0, 10000))
def test_at_rest_with_exact_ocv_the_soc_converges_to_the_truth(true_soc, start_soc):
    """Law: at rest on the exact OCV of `true_soc` (where NMC's OCV is steep), from any restored
    SOC, the estimate ends within 0.5 % of the truth once the rate limit allowed it to get there
    (100 % at 0.1 %/s: under 17 minutes), and its bound covers the error all along."""
    cfg, m = fresh({"cell_count": 2}, mv=soc_to_ocv(true_soc, NMC))
    est = estimator(cfg)
    assert est.restore_state(saved_state(est, start_soc, 10000))  # bound 100 %
    for _ in range(1100):
        est.update(m, 1000, 0)
        assert abs(est.out.soc - true_soc) <= est.out.soc_bound
    assert abs(est.out.soc - true_soc) <= 50
