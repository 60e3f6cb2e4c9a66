"""Cell profile loader and run-time tables (also runs under MicroPython)."""

from firmware import config
from firmware.profile import load


def _profile():
    # 3 SOC points x 2 temperatures; OCV rises 100 mV from 0 to 25 degC at every SOC.
    return {
        "format": "cellguard-cell-profile",
        "version": 1,
        "name": "test cell",
        "chemistry": "NMC",
        "source": "hand-made",
        "capacity_ah": 4.0,
        "voltage_min_v": 2.5,
        "voltage_max_v": 4.2,
        "coulombic_efficiency": 0.999,
        "soc_pct": [0, 50, 100],
        "temperature_c": [0, 25],
        "ocv_v": [[3.0, 3.6, 4.0], [3.1, 3.7, 4.1]],
        "hysteresis_v": [[0, 0.01, 0], [0, 0.005, 0]],
        "hysteresis_rate_per_ah": 30.0,
        "r0_ohm": [[0.04, 0.03, 0.03], [0.02, 0.01, 0.01]],
        "r1_ohm": [[0.01, 0.01, 0.01], [0.01, 0.01, 0.01]],
        "tau1_s": [[10, 10, 10], [10, 10, 10]],
        "r2_ohm": [[0.01, 0.01, 0.01], [0.01, 0.01, 0.01]],
        "tau2_s": [[100, 100, 100], [100, 100, 100]],
        "fit": {"rms_mv": 1.2},
    }


def _error(d):
    try:
        load(d)
    except ValueError as e:
        return str(e)
    return ""


def test_tables_in_integer_units_and_bilinear_lookup():
    p = load(_profile())
    assert p.capacity_mah == 4000 and p.vmin_mv == 2500 and p.vmax_mv == 4200
    assert p.gamma_milli == 30000 and p.eta_ppm == 999000
    p.locate(5000, 250)
    assert p.at(p.ocv) == 37000 and p.at(p.r0) == 1000 and p.at(p.tau2) == 1000
    p.locate(2500, 125)  # halfway in SOC and temperature
    assert p.at(p.ocv) == (30000 + 36000 + 31000 + 37000) // 4
    p.locate(-100, -100)  # clamped at both low ends
    assert p.at(p.ocv) == 30000 and p.at(p.r0) == 4000
    p.locate(20000, 900)  # and at both high ends
    assert p.at(p.ocv) == 41000
    p.locate(2500, 250)
    assert p.slope() == 120  # 600 mV over 50 %: 12 mV per %, in 0.1 mV


def test_ocv_inverse_follows_temperature():
    p = load(_profile())
    assert p.soc_at(37000, 250) == 5000 and p.soc_at(36000, 0) == 5000
    assert p.soc_at(36500, 125) == 5000
    assert p.soc_at(10, 250) == 0 and p.soc_at(60000, 250) == 10000


def test_errors_name_the_key_and_index():
    cases = (
        ("typo_key", 1, "'typo_key': unknown key"),
        ("format", "x", "'format'"),
        ("version", 2, "'version'"),
        ("chemistry", "NiMH", "'chemistry'"),
        ("capacity_ah", "5", "'capacity_ah': must be a number"),
        ("capacity_ah", True, "'capacity_ah': must be a number"),
        ("coulombic_efficiency", 0.8, "'coulombic_efficiency'"),
        ("soc_pct", [0, 50, 90], "'soc_pct'"),
        ("soc_pct", [0, 60, 50, 100], "'soc_pct[2]'"),
        ("temperature_c", [25, 0], "'temperature_c[1]'"),
        ("ocv_v", [[3.0, 3.6, 4.0]], "'ocv_v': needs one row"),
        ("ocv_v", [[3.0, 3.6, 4.0], [3.1, 3.7]], "'ocv_v[1]'"),
        ("ocv_v", [[3.0, 3.6, 4.0], [3.1, 3.0, 4.1]], "'ocv_v[1][1]'"),
        ("r0_ohm", [[0.04, 0.03, 0.03], [0.02, 0, 0.01]], "'r0_ohm[1][1]'"),
        ("hysteresis_v", [[0, -0.01, 0], [0, 0, 0]], "'hysteresis_v[0][1]'"),
        ("tau2_s", [[100, 100, 100], [100, "x", 100]], "'tau2_s': must be a number"),
    )
    for key, value, needle in cases:
        d = _profile()
        d[key] = value
        msg = _error(d)
        assert needle in msg, key + ": " + msg
    d = _profile()
    del d["r1_ohm"]
    assert "'r1_ohm'" in _error(d)
    assert "must be a JSON object" in _error([1])


def test_a_missing_key_is_called_missing():
    """A profile without capacity_ah (or an axis, or a table) says the key is missing, not that
    its value is not a number."""
    for key in ("capacity_ah", "voltage_min_v", "soc_pct", "r1_ohm"):
        d = _profile()
        del d[key]
        assert "'" + key + "': missing" in _error(d), key


def test_config_takes_chemistry_capacity_and_ocv_from_the_profile():
    c = config.load({"profile": _profile()})
    assert c.chemistry == "NMC" and c.capacity_mah == 4000
    assert c.ocv_mv[0] == 3100 and c.ocv_mv[10] == 3700 and c.ocv_mv[20] == 4100
    assert config.load({"profile": _profile(), "capacity_mah": 3000}).capacity_mah == 3000
    for bad, key in (({"chemistry": "LFP"}, "'profile'"), ({}, "'r0_ohm")):
        o = {"profile": _profile()}
        o.update(bad)
        if key == "'r0_ohm":
            o["profile"]["r0_ohm"] = 1
        try:
            config.load(o)
            raise AssertionError("accepted")
        except ValueError as e:
            assert key in str(e), str(e)


def test_builtin_profile_without_one():
    for chem, r0 in (("NMC", 1800), ("LFP", 1000)):
        c = config.load({"chemistry": chem})
        p = c.profile
        p.locate(5000, 250)
        assert p.at(p.r0) == r0  # the plant's cell class at 25 degC
        assert p.at(p.ocv) == 10 * c.ocv_mv[10]
        p.locate(5000, 0)
        assert p.at(p.r0) == 3 * r0  # conservative in the cold
