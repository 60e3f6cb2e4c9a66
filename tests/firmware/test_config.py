import json

from fw_support import raises_naming

from firmware import config


def test_nmc_defaults():
    c = config.load()
    assert c.chemistry == "NMC"
    assert c.cell_count == 16 and c.temp_count == 16
    assert c.capacity_mah == 5000 and c.cycle_ms == 100
    assert c.cell_ov_mv == 4250 and c.cell_uv_mv == 2700
    assert c.cell_charge_max_mv == 4200 and c.cell_discharge_min_mv == 3000
    assert c.charge_taper_mv == 4100 and c.discharge_taper_mv == 3300
    assert c.balance_min_mv == 3800
    assert c.oc_charge_ma == 10000 and c.oc_discharge_ma == 25000
    assert c.max_charge_ma == 5000 and c.max_discharge_ma == 15000
    assert len(c.ocv_mv) == 21 and c.ocv_mv[0] == 3000 and c.ocv_mv[20] == 4200
    assert c.ocv_mv[10] == 3790
    assert c.tx_status_ms == 100 and c.tx_cells_ms == 1000 and c.tx_balancing_ms == 1000
    assert c.meas_stale_ms == 500 and c.vcu_stale_ms == 500 and c.rest_current_ma == 100


def test_lfp_defaults():
    c = config.load({"chemistry": "LFP"})
    assert c.chemistry == "LFP"
    assert c.capacity_mah == 2300
    assert c.cell_ov_mv == 3650 and c.cell_uv_mv == 2500
    assert c.cell_charge_max_mv == 3600 and c.cell_discharge_min_mv == 2800
    assert c.charge_taper_mv == 3450 and c.discharge_taper_mv == 3000
    assert c.balance_min_mv == 3300
    assert c.max_charge_ma == 2300 and c.oc_charge_ma == 4600
    assert c.ocv_mv[0] == 2500 and c.ocv_mv[10] == 3305 and c.ocv_mv[20] == 3600
    # Common keys keep their defaults.
    assert c.ot_charge_dc == 450 and c.v_qualify_ms == 300 and c.precharge_pct == 95


def test_overrides_beat_chemistry_defaults():
    c = config.load({"chemistry": "LFP", "cell_ov_mv": 3700, "cell_count": 96})
    assert c.cell_ov_mv == 3700 and c.cell_uv_mv == 2500
    assert c.cell_count == 96 and c.temp_count == 96
    assert config.load({"cell_count": 8, "temp_count": 3}).temp_count == 3


def test_currents_scale_with_capacity_unless_overridden():
    c = config.load({"capacity_mah": 10000, "max_charge_ma": 4000})
    assert c.max_charge_ma == 4000
    assert c.max_discharge_ma == 30000 and c.oc_charge_ma == 20000 and c.oc_discharge_ma == 50000
    assert c.plaus_current_ma == 100000


def test_unknown_key_is_named():
    assert raises_naming({"cell_ov": 4200}, "cell_ov")


def test_wrong_types_are_named():
    assert raises_naming({"cell_count": "16"}, "cell_count")
    assert raises_naming({"cell_count": 16.0}, "cell_count")
    assert raises_naming({"balance_enable": True}, "balance_enable")
    assert raises_naming({"chemistry": 1}, "chemistry")
    assert raises_naming({"chemistry": "NCA"}, "chemistry")


def test_ranges_are_named():
    assert raises_naming({"cell_count": 0}, "cell_count")
    assert raises_naming({"cell_count": 193}, "cell_count")
    assert raises_naming({"capacity_mah": 10**6}, "capacity_mah")
    assert raises_naming({"precharge_pct": 101}, "precharge_pct")
    assert config.load({"cell_count": 192}).cell_count == 192


def test_ordering_between_keys_is_checked():
    assert raises_naming({"charge_taper_mv": 4200}, "cell_charge_max_mv")
    assert raises_naming({"cell_uv_mv": 3100}, "cell_discharge_min_mv")
    assert raises_naming({"balance_stop_delta_mv": 15}, "balance_start_delta_mv")
    assert raises_naming({"ot_charge_dc": 300}, "ot_charge_dc")
    assert raises_naming({"max_charge_ma": 10000}, "oc_charge_ma")
    assert raises_naming({"meas_stale_ms": 100}, "meas_stale_ms")


def test_ocv_table_is_checked():
    table = list(config.load().ocv_mv)
    assert config.load({"ocv_mv": table}).ocv_mv == tuple(table)
    assert raises_naming({"ocv_mv": table[:20]}, "ocv_mv")
    table[5] = table[4]
    assert raises_naming({"ocv_mv": table}, "ocv_mv")
    assert raises_naming({"ocv_mv": "3000"}, "ocv_mv")


def test_overrides_must_be_a_dict():
    try:
        config.load([("cell_count", 4)])
    except ValueError:
        return
    raise AssertionError("not rejected")


def test_as_dict_round_trips():
    c = config.load({"chemistry": "LFP", "cell_count": 24})
    d = c.as_dict()
    assert d["chemistry"] == "LFP" and d["cell_count"] == 24 and d["capacity_mah"] == 2300
    assert "ocv_mv" in d and "balance_max_cells" in d
    assert config.load(d).as_dict() == d


def test_json_file_round_trip():
    # The board's path: a JSON file parsed into a dict (lists instead of tuples).
    c = config.load({"chemistry": "LFP", "cell_count": 12, "balance_enable": 0})
    text = json.dumps(c.as_dict())
    assert config.load(json.loads(text)).as_dict() == c.as_dict()
