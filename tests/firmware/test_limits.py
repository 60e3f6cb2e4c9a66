from fw_support import fresh

from firmware.limits import Limits


def _limits(overrides=None, mv=3700, dc=250, cells=None, temps=None, open_required=False):
    cfg, m = fresh(overrides, mv=mv, dc=dc)
    for i, v in cells or ():
        m.cell_mv[i] = v
    for i, t in temps or ():
        m.temp_dc[i] = t
    m.update_stats()
    lim = Limits(cfg)
    lim.update(m, open_required)
    return lim


def test_nominal_and_voltage_limits():
    lim = _limits()
    assert lim.out.charge_ma == 5000 and lim.out.discharge_ma == 15000
    assert lim.out.charge_voltage_mv == 16 * 4200 and lim.out.discharge_voltage_mv == 16 * 3000
    lim = _limits({"chemistry": "LFP", "cell_count": 192}, mv=3300)
    assert lim.out.charge_ma == 2300 and lim.out.discharge_ma == 6900
    assert lim.out.charge_voltage_mv == 192 * 3600 and lim.out.discharge_voltage_mv == 192 * 2800


def test_open_required_zeroes_currents():
    lim = _limits(open_required=True)
    assert lim.out.charge_ma == 0 and lim.out.discharge_ma == 0


def test_charge_derates_by_highest_cell():
    assert _limits(cells=[(3, 4100)]).out.charge_ma == 5000
    assert _limits(cells=[(3, 4150)]).out.charge_ma == 2500
    assert _limits(cells=[(3, 4190)]).out.charge_ma == 500
    assert _limits(cells=[(3, 4200)]).out.charge_ma == 0
    assert _limits(cells=[(3, 4240)]).out.charge_ma == 0
    assert _limits(cells=[(3, 4150)]).out.discharge_ma == 15000


def test_discharge_derates_by_lowest_cell():
    assert _limits(cells=[(9, 3300)]).out.discharge_ma == 15000
    assert _limits(cells=[(9, 3150)]).out.discharge_ma == 7500
    assert _limits(cells=[(9, 3000)]).out.discharge_ma == 0
    assert _limits(cells=[(9, 2800)]).out.discharge_ma == 0
    assert _limits(cells=[(9, 3150)]).out.charge_ma == 5000


def test_charge_derates_by_temperature():
    assert _limits(temps=[(0, 100)]).out.charge_ma == 5000
    assert _limits(temps=[(0, 50)]).out.charge_ma == 2500
    assert _limits(temps=[(0, 0)]).out.charge_ma == 0
    assert _limits(temps=[(0, -100)]).out.charge_ma == 0
    assert _limits(temps=[(0, 350)]).out.charge_ma == 5000
    assert _limits(temps=[(0, 400)]).out.charge_ma == 2500
    assert _limits(temps=[(0, 450)]).out.charge_ma == 0


def test_discharge_derates_by_temperature():
    assert _limits(temps=[(0, 0)]).out.discharge_ma == 15000
    assert _limits(temps=[(0, -100)]).out.discharge_ma == 7500
    assert _limits(temps=[(0, -200)]).out.discharge_ma == 0
    assert _limits(temps=[(0, 450)]).out.discharge_ma == 15000
    assert _limits(temps=[(0, 525)]).out.discharge_ma == 7500
    assert _limits(temps=[(0, 600)]).out.discharge_ma == 0


def test_most_restrictive_factor_wins():
    lim = _limits(cells=[(0, 4175)], temps=[(1, 50)])  # voltage 25 %, temperature 50 %
    assert lim.out.charge_ma == 1250
