"""The contactor test's own interlocks (Contactors.test, firmware/contactors.py), apart from the
diagnostic server's checks: started only from STANDBY without current, vehicle request or a
derate/open fault, always through precharge, ended by load, faults or the vehicle. Runs under
CPython and MicroPython.
"""

from firmware import config
from firmware import contactors as k
from firmware.data import (
    TEST_ABORTED,
    TEST_PASSED,
    TEST_REFUSED,
    TEST_RUNNING,
    RoutineData,
)

PACK = 60000


def _rig(hold_ms=300):
    cont = k.Contactors(config.load())
    cont.step(0, False, False, PACK, 0)  # INIT -> STANDBY
    req = RoutineData()
    req.contactor_hold_ms = hold_ms
    return cont, req


def _cycle(cont, req, now, current=0, blocked=False, vehicle=False, link=PACK):
    close = cont.test(now, req, vehicle, current, blocked)
    cont.step(now, close, False, PACK, link, current)
    o = cont.out
    return (o.neg, o.pre, o.pos)


def test_refused_with_current_a_fault_or_the_vehicle_asking():
    for kw in ({"current": 5000}, {"blocked": True}, {"vehicle": True}):
        cont, req = _rig()
        req.contactor_run = 1
        _cycle(cont, req, 100, **kw)
        assert cont.out.test == TEST_REFUSED, kw
        assert not kw.get("vehicle") and cont.out.state == k.STANDBY or kw.get("vehicle")


def test_closes_through_precharge_holds_and_opens():
    cont, req = _rig(300)
    req.contactor_run = 1
    seen = [_cycle(cont, req, 100 * t) for t in range(1, 12)]
    first_closed = seen.index((1, 0, 1))
    assert seen[0] == (1, 1, 0) and all(s == (1, 1, 0) for s in seen[:first_closed])
    # The cycle that closed, then the hold (timed from the next one).
    assert seen.count((1, 0, 1)) == 1 + 3 and seen[-1] == (0, 0, 0)
    assert cont.out.test == TEST_PASSED
    _cycle(cont, req, 1300)
    assert cont.out.test == TEST_PASSED and cont.out.state == k.STANDBY  # no new run: stays


def test_load_fault_or_stop_end_a_running_test():
    for kw in ({"current": 60000}, {"blocked": True}, {}):
        cont, req = _rig(10000)
        req.contactor_run = 1
        for t in range(1, 6):
            _cycle(cont, req, 100 * t)
        assert cont.out.state == k.CLOSED and cont.out.test == TEST_RUNNING
        if not kw:
            req.contactor_run = 0  # the tester's stop
        _cycle(cont, req, 600, **kw)
        assert cont.out.test == TEST_ABORTED, kw
        for t in range(7, 40):
            _cycle(cont, req, 100 * t, current=0)
        assert (cont.out.neg, cont.out.pre, cont.out.pos) == (0, 0, 0)
