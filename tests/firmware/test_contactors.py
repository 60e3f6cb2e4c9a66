from firmware import config
from firmware import contactors as c


def _cont():
    return c.Contactors(config.load())


def _outputs(k):
    return (k.state, k.neg, k.pre, k.pos)


def test_normal_sequence():
    k = _cont()
    assert _outputs(k) == (c.INIT, 0, 0, 0)
    k.step(0, True, False, 60000, 0)
    assert _outputs(k) == (c.STANDBY, 0, 0, 0)
    k.step(100, True, False, 60000, 0)
    assert _outputs(k) == (c.PRECHARGE, 1, 1, 0)
    k.step(200, True, False, 60000, 56999)  # 94.998 %
    assert _outputs(k) == (c.PRECHARGE, 1, 1, 0)
    k.step(300, True, False, 60000, 57000)  # 95 %
    assert _outputs(k) == (c.CLOSED, 1, 0, 1)
    k.step(400, True, False, 60000, 60000)
    assert _outputs(k) == (c.CLOSED, 1, 0, 1)
    k.step(500, False, False, 60000, 60000)
    assert _outputs(k) == (c.STANDBY, 0, 0, 0)


def test_pos_never_without_precharge_step():
    k = _cont()
    k.step(0, True, False, 60000, 60000)
    k.step(100, True, False, 60000, 60000)
    assert k.pos == 0 and k.state == c.PRECHARGE
    k.step(200, True, False, 60000, 60000)
    assert k.pos == 1


def test_no_pack_voltage_never_closes():
    k = _cont()
    k.step(0, True, False, 0, 0)
    for t in range(100, 3200, 100):
        k.step(t, True, False, 0, 0)
        assert k.pos == 0
    assert k.state == c.FAULT


def test_precharge_timeout():
    k = _cont()
    k.step(0, True, False, 60000, 0)
    k.step(1000, True, False, 60000, 0)
    k.step(3999, True, False, 60000, 50000)
    assert k.state == c.PRECHARGE and not k.precharge_failed
    k.step(4000, True, False, 60000, 50000)
    assert _outputs(k) == (c.FAULT, 0, 0, 0) and k.precharge_failed
    k.step(4100, True, False, 60000, 50000)
    assert not k.precharge_failed  # a one-step pulse
    assert _outputs(k) == (c.STANDBY, 0, 0, 0)


def test_open_required_opens_at_once_from_any_state():
    for steps in (0, 1, 2, 3):
        k = _cont()
        for t in range(steps):
            k.step(t * 100, True, False, 60000, 60000)
        k.step(1000, True, True, 60000, 60000)
        assert _outputs(k) == (c.FAULT, 0, 0, 0)


def test_fault_recovery_needs_fault_gone_then_precharge():
    k = _cont()
    k.step(0, True, False, 60000, 60000)
    k.step(100, True, False, 60000, 60000)
    k.step(200, True, False, 60000, 60000)
    assert k.state == c.CLOSED
    for t in range(300, 1000, 100):
        k.step(t, True, True, 60000, 60000)
        assert _outputs(k) == (c.FAULT, 0, 0, 0)
    k.step(1000, True, False, 60000, 60000)
    assert _outputs(k) == (c.STANDBY, 0, 0, 0)
    k.step(1100, True, False, 60000, 60000)
    assert _outputs(k) == (c.PRECHARGE, 1, 1, 0)


def test_dropped_request_during_precharge():
    k = _cont()
    k.step(0, True, False, 60000, 0)
    k.step(100, True, False, 60000, 0)
    k.step(200, False, False, 60000, 60000)
    assert _outputs(k) == (c.STANDBY, 0, 0, 0)


def test_force_open():
    k = _cont()
    for t in range(3):
        k.step(t * 100, True, False, 60000, 60000)
    k.force_open()
    assert _outputs(k) == (c.FAULT, 0, 0, 0)


def test_192_cell_pack_voltage():
    k = _cont()
    pack = 192 * 4200
    k.step(0, True, False, pack, 0)
    k.step(100, True, False, pack, 0)
    k.step(200, True, False, pack, pack * 95 // 100 - 1)
    assert k.state == c.PRECHARGE
    k.step(300, True, False, pack, pack * 95 // 100)
    assert k.state == c.CLOSED
