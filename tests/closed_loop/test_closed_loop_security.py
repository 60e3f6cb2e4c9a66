"""Closed-loop attacks on the vehicle request (docs/security.md), black-box through CAN against the
firmware on the micropython binary (and the Cortex-M image with -m mcu --dut qemu): the genuine
VCU asks to open while another node replays its recorded requests or guesses MACs with the
right CRC and counter. Nothing closes; the guesser is flagged."""

from __future__ import annotations

import pytest

from firmware import can_codec as codec
from hil.bench.loop import Bench

VCU_BAD_COUNT = 3  # firmware default (firmware/config.py)


def _close_recording(bench: Bench, n: int = 16) -> list[bytes]:
    """Close the contactors with the genuine VCU, keeping a copy of `n` of its requests as an
    eavesdropper on the bus would."""
    recorded = []
    for _ in range(40):
        can_id, data = bench.vcu_frame(True, False)
        recorded.append(data)
        bench.transport.send_many([(can_id, data)])
        bench.step(0.0, vcu=False)
        if bench.status.closed and len(recorded) >= n:
            break
    assert bench.status.closed, bench.status
    return recorded[-n:]


@pytest.mark.mcu
def test_recorded_requests_replayed_while_the_vcu_asks_to_open_never_close(bench: Bench) -> None:
    recorded = _close_recording(bench)
    by_counter = {data[0] >> 4: data for data in recorded}  # 16 in a row: every counter value
    assert len(by_counter) == 16
    states = []
    for k in range(120):
        # In counter order, one ahead of the genuine VCU and sent first in every period: a CRC
        # and counter check alone takes the replay and rejects the genuine request.
        replay = by_counter[(bench.vcu.alive + 1) & 15]
        bench.transport.send_many([(codec.VCU_REQUEST_ID, replay)])
        bench.step(0.0, vcu_close=False)
        states.append(bench.status.state_name)
        if k >= 5:  # once the open request has been carried out
            assert not bench.status.contactor_pre and not bench.status.contactor_pos, states
    assert "CLOSED" not in states[5:] and "PRECHARGE" not in states[5:]


@pytest.mark.mcu
def test_guessed_macs_with_the_right_crc_and_counter_are_flagged_and_close_nothing(
    bench: Bench,
) -> None:
    bench.step_until(lambda s: s.state_name == "STANDBY", 20, vcu_close=False)
    vcu = bench.vcu
    flagged = None
    for k in range(60):
        # The forger follows the genuine VCU's counter and freshness, computes the CRC and
        # guesses the MAC; it sends just ahead of the genuine request, which asks to open.
        alive = (vcu.alive + 1) & 15
        forged = bytearray(vcu.sign(True, False, False, alive, vcu.freshness + 1))
        forged[3] ^= 1 + k % 255
        forged[7] = vcu.crc(forged)
        bench.transport.send_many([(codec.VCU_REQUEST_ID, bytes(forged))])
        bench.step(0.0, vcu_close=False)
        assert not bench.status.contactor_pre and not bench.status.contactor_pos
        if flagged is None and "VcuRequestInvalid" in bench.status.faults:
            flagged = k
    assert flagged is not None and flagged < 2 * VCU_BAD_COUNT, flagged
