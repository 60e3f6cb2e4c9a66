from firmware import config
from firmware import contactors as c


def _cont(overrides=None):
    return c.Contactors(config.load(overrides))


NO_RETRY = {"precharge_retries": 0}


def _outputs(k):
    return (k.out.state, k.out.neg, k.out.pre, k.out.pos)


def test_normal_sequence():
    k = _cont()
    assert _outputs(k) == (c.INIT, 0, 0, 0)
    k.step(0, True, False, 60000, 0)
    assert _outputs(k) == (c.STANDBY, 0, 0, 0)
    k.step(100, True, False, 60000, 0)
    assert _outputs(k) == (c.PRECHARGE, 1, 1, 0)
    k.step(200, True, False, 60000, 56999)  # 94.998 %
    assert _outputs(k) == (c.PRECHARGE, 1, 1, 0)
    k.step(300, True, False, 60000, 57000)  # 95 %: one reading is not enough
    assert _outputs(k) == (c.PRECHARGE, 1, 1, 0)
    k.step(400, True, False, 60000, 57000)  # confirmed
    assert _outputs(k) == (c.CLOSED, 1, 0, 1)
    k.step(500, True, False, 60000, 60000)
    assert _outputs(k) == (c.CLOSED, 1, 0, 1)
    k.step(600, False, False, 60000, 60000)
    assert _outputs(k) == (c.STANDBY, 0, 0, 0)


def test_one_glitching_link_reading_cannot_end_the_precharge():
    """Safety rule: pos closes only after precharge_confirm consecutive readings at or above
    precharge_pct; a high reading between low ones restarts the count."""
    k = _cont({"precharge_confirm": 3})
    k.step(0, True, False, 60000, 0)
    k.step(100, True, False, 60000, 0)
    for t, link in ((200, 60000), (300, 40000), (400, 60000), (500, 60000), (600, 50000)):
        k.step(t, True, False, 60000, link)
        assert _outputs(k) == (c.PRECHARGE, 1, 1, 0), t
    for t in (700, 800):
        k.step(t, True, False, 60000, 58000)
        assert k.out.pos == 0
    k.step(900, True, False, 60000, 58000)
    assert _outputs(k) == (c.CLOSED, 1, 0, 1)


def test_the_confirmation_count_restarts_with_every_precharge():
    k = _cont()
    k.step(0, True, False, 60000, 0)
    k.step(100, True, False, 60000, 0)
    k.step(200, True, False, 60000, 60000)  # one reading, then the request is dropped
    k.step(300, False, False, 60000, 60000)
    k.step(400, True, False, 60000, 60000)
    assert k.out.state == c.PRECHARGE
    k.step(500, True, False, 60000, 60000)
    assert k.out.pos == 0
    k.step(600, True, False, 60000, 60000)
    assert k.out.pos == 1


def test_pos_never_without_precharge_step():
    k = _cont()
    k.step(0, True, False, 60000, 60000)
    k.step(100, True, False, 60000, 60000)
    assert k.out.pos == 0 and k.out.state == c.PRECHARGE
    k.step(200, True, False, 60000, 60000)
    assert k.out.pos == 0
    k.step(300, True, False, 60000, 60000)
    assert k.out.pos == 1


def test_no_pack_voltage_never_closes():
    k = _cont(NO_RETRY)
    k.step(0, True, False, 0, 0)
    for t in range(100, 3200, 100):
        k.step(t, True, False, 0, 0)
        assert k.out.pos == 0
    assert k.out.state == c.FAULT


def test_precharge_timeout():
    k = _cont(NO_RETRY)
    k.step(0, True, False, 60000, 0)
    k.step(1000, True, False, 60000, 0)
    k.step(3999, True, False, 60000, 50000)
    assert k.out.state == c.PRECHARGE and not k.out.precharge_failed
    k.step(4000, True, False, 60000, 50000)
    assert _outputs(k) == (c.FAULT, 0, 0, 0) and k.out.precharge_failed
    k.step(4100, True, False, 60000, 50000)
    assert not k.out.precharge_failed  # a one-step pulse
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
    k.step(300, True, False, 60000, 60000)
    assert k.out.state == c.CLOSED
    for t in range(400, 1000, 100):
        k.step(t, True, True, 60000, 60000)
        assert _outputs(k) == (c.FAULT, 0, 0, 0)
    k.step(1000, True, False, 60000, 60000)
    assert _outputs(k) == (c.STANDBY, 0, 0, 0)
    k.step(1100, True, False, 60000, 60000)
    assert _outputs(k) == (c.PRECHARGE, 1, 1, 0)
    k.step(1200, True, False, 60000, 60000)
    assert _outputs(k) == (c.PRECHARGE, 1, 1, 0), "the count restarts after a fault"


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
    assert k.out.state == c.PRECHARGE
    k.step(300, True, False, pack, pack * 95 // 100)
    k.step(400, True, False, pack, pack * 95 // 100)
    assert k.out.state == c.CLOSED


def _closed(k, pack=60000):
    # Closed at 300 ms: standby, precharge, then precharge_confirm (2) readings at the pack.
    for t in range(0, 400, 100):
        k.step(t, True, False, pack, pack)
    assert k.out.state == c.CLOSED


def test_precharge_retries_are_bounded_and_pause():
    k = _cont({"precharge_retries": 2, "precharge_pause_ms": 1000})
    k.step(0, True, False, 60000, 0)
    t = 100
    k.step(t, True, False, 60000, 0)  # first attempt starts
    failed = 0
    attempts = 1
    for t in range(200, 30000, 100):
        was = k.out.state
        k.step(t, True, False, 60000, 0)
        assert k.out.pos == 0
        if was == c.RETRY_WAIT and k.out.state == c.PRECHARGE:
            attempts += 1
        if k.out.state == c.RETRY_WAIT:
            assert (k.out.neg, k.out.pre, k.out.pos) == (0, 0, 0)
        failed += k.out.precharge_failed
        if k.out.precharge_failed:
            break
    assert attempts == 3 and failed == 1 and k.out.state == c.FAULT
    # Renewing the request does not restore the attempts (a failure now is final at once);
    # a fault reset does.
    k.step(t + 100, False, False, 60000, 0)
    k.step(t + 200, True, False, 60000, 0)
    k.step(t + 300, True, False, 60000, 0)
    assert k.out.state == c.PRECHARGE
    k.step(t + 3300, True, False, 60000, 0)
    assert k.out.state == c.FAULT and k.out.precharge_failed
    k.reset_retries()
    k.step(t + 3400, True, False, 60000, 0)
    k.step(t + 3500, True, False, 60000, 0)
    k.step(t + 6500, True, False, 60000, 0)
    assert k.out.state == c.RETRY_WAIT and not k.out.precharge_failed


def test_retry_waits_the_pause_before_precharging_again():
    k = _cont({"precharge_retries": 1, "precharge_pause_ms": 1000, "precharge_timeout_ms": 500})
    k.step(0, True, False, 60000, 0)
    k.step(100, True, False, 60000, 0)
    assert k.out.state == c.PRECHARGE
    k.step(600, True, False, 60000, 0)
    assert _outputs(k) == (c.RETRY_WAIT, 0, 0, 0) and not k.out.precharge_failed
    k.step(1599, True, False, 60000, 0)
    assert _outputs(k) == (c.RETRY_WAIT, 0, 0, 0)
    k.step(1600, True, False, 60000, 0)
    assert _outputs(k) == (c.PRECHARGE, 1, 1, 0)
    k.step(2100, True, False, 60000, 0)
    assert _outputs(k) == (c.FAULT, 0, 0, 0) and k.out.precharge_failed


def test_successful_close_restores_the_retries():
    k = _cont({"precharge_retries": 1, "precharge_pause_ms": 0, "precharge_timeout_ms": 500})
    k.step(0, True, False, 60000, 0)
    k.step(100, True, False, 60000, 0)
    k.step(600, True, False, 60000, 0)
    assert k.out.state == c.RETRY_WAIT
    k.step(700, True, False, 60000, 0)
    k.step(800, True, False, 60000, 60000)
    k.step(900, True, False, 60000, 60000)
    assert k.out.state == c.CLOSED
    k.step(1000, False, False, 60000, 60000)
    k.step(1100, True, False, 60000, 0)
    k.step(1600, True, False, 60000, 0)
    assert k.out.state == c.RETRY_WAIT and not k.out.precharge_failed


def test_vehicle_open_under_load_waits_for_the_current_to_fall():
    k = _cont({"open_current_ma": 1000, "open_wait_ms": 2000})
    _closed(k)
    k.step(400, False, False, 60000, 60000, 5000)
    assert _outputs(k) == (c.OPENING, 1, 0, 1)
    k.step(500, False, False, 60000, 60000, -5000)  # charging counts as load too
    assert _outputs(k) == (c.OPENING, 1, 0, 1)
    k.step(600, False, False, 60000, 60000, 1000)  # at the threshold: no longer under load
    assert _outputs(k) == (c.STANDBY, 0, 0, 0)


def test_vehicle_open_under_load_is_bounded_in_time():
    k = _cont({"open_current_ma": 1000, "open_wait_ms": 2000})
    _closed(k)
    k.step(400, False, False, 60000, 60000, 5000)
    k.step(2399, False, False, 60000, 60000, 5000)
    assert k.out.state == c.OPENING and k.out.pos == 1
    k.step(2400, False, False, 60000, 60000, 5000)
    assert _outputs(k) == (c.STANDBY, 0, 0, 0)


def test_fault_opens_under_load_at_once_and_renewed_request_stays_closed():
    k = _cont({"open_current_ma": 1000})
    _closed(k)
    k.step(400, False, False, 60000, 60000, 5000)
    k.step(500, True, False, 60000, 60000, 5000)
    assert _outputs(k) == (c.CLOSED, 1, 0, 1)
    k.step(600, True, True, 60000, 60000, 500000)
    assert _outputs(k) == (c.FAULT, 0, 0, 0)


def test_feedback_following_the_command_is_no_fault():
    k = _cont({"fb_timeout_ms": 300})
    k.step(0, True, False, 60000, 0)
    for t in range(100, 2000, 100):
        fb = k.out.neg | k.out.pre << 1 | k.out.pos << 2
        k.check_feedback(t, fb)
        k.step(t, True, False, 60000, 60000)
        assert not k.out.fb_mismatch and not k.out.welded


def test_feedback_mismatch_after_the_timeout():
    k = _cont({"fb_timeout_ms": 300})
    k.step(0, True, False, 60000, 0)
    k.step(100, True, False, 60000, 0)  # commands neg + pre
    k.check_feedback(200, 0)  # nothing closed
    k.check_feedback(499, 0)
    assert not k.out.fb_mismatch
    k.check_feedback(500, 0)
    assert k.out.fb_mismatch and not k.out.welded
    k.check_feedback(600, 0b011)
    assert not k.out.fb_mismatch


def test_weld_detected_after_an_open_command():
    k = _cont({"fb_timeout_ms": 300})
    _closed(k)
    k.step(400, False, False, 60000, 60000)  # open at rest
    assert k.out.state == c.STANDBY
    k.check_feedback(500, 0b100)  # pos still closed
    k.check_feedback(799, 0b100)
    assert not k.out.welded
    k.check_feedback(800, 0b100)
    assert k.out.welded and not k.out.fb_mismatch


def test_a_new_command_restarts_the_feedback_timer():
    k = _cont({"fb_timeout_ms": 300})
    k.step(0, True, False, 60000, 0)
    k.step(100, True, False, 60000, 0)  # neg + pre commanded
    k.check_feedback(200, 0)
    k.step(300, True, False, 60000, 60000)
    k.step(350, True, False, 60000, 60000)  # pos commanded, pre opened: a new command
    k.check_feedback(500, 0b001)  # the timer starts here, not at 200
    k.check_feedback(799, 0b001)
    assert not k.out.fb_mismatch
    k.check_feedback(800, 0b001)
    assert k.out.fb_mismatch


def test_a_reading_reused_by_several_steps_counts_once():
    """Safety rule (precharge_confirm): steps that run without a new measurement (catch-up after
    a delay) judge no reading; one glitching link reading seen by three steps is one reading,
    and the low readings around it keep pos open."""
    k = _cont({"precharge_confirm": 2})
    k.step(0, True, False, 60000, 0, 0, 1)
    k.step(100, True, False, 60000, 0, 0, 2)
    assert k.out.state == c.PRECHARGE
    for t in (200, 300, 400):  # sample 3, the glitch, seen three times
        k.step(t, True, False, 60000, 60000, 0, 3)
        assert _outputs(k) == (c.PRECHARGE, 1, 1, 0)
    k.step(500, True, False, 60000, 0, 0, 4)
    k.step(600, True, False, 60000, 60000, 0, 5)
    assert _outputs(k) == (c.PRECHARGE, 1, 1, 0)
    k.step(700, True, False, 60000, 60000, 0, 6)  # a second new reading: confirmed
    assert _outputs(k) == (c.CLOSED, 1, 0, 1)


def test_the_reading_that_starts_a_precharge_is_never_judged():
    """Safety rule (one transition per step): the reading taken before the precharge path
    closed does not count toward its end, even when no newer one arrives."""
    k = _cont({"precharge_confirm": 1})
    k.step(0, True, False, 60000, 60000, 0, 7)
    k.step(100, True, False, 60000, 60000, 0, 7)
    assert k.out.state == c.PRECHARGE
    k.step(200, True, False, 60000, 60000, 0, 7)
    assert _outputs(k) == (c.PRECHARGE, 1, 1, 0)
    k.step(300, True, False, 60000, 60000, 0, 8)
    assert _outputs(k) == (c.CLOSED, 1, 0, 1)
