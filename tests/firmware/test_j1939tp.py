"""CPython only: the firmware's J1939-21 transport (firmware/j1939tp.py) against the desktop one
written separately from the standard's text (sim/j1939tp.py), both directions, with frame loss."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from firmware import j1939tp as fwtp
from sim.j1939tp import Frame, Transport, frame_id

BMS, CHARGER = 0xF4, 0x56
PGN_BRM = 0x000200


class Link:
    """The firmware transport (BMS) and the desktop one (charger) on one simulated bus."""

    def __init__(self, lose=(), cts_packets=255, hold_once=False, refuse=()):
        self.to_peer: list[Frame] = []
        self.lose = set(lose)  # indices (in send order, both ways) of frames the bus drops
        self.refuse = set(refuse)  # indices of firmware sends the board refuses (queue full)
        self.sent = 0
        self.fw_calls = 0
        self.log: list[Frame] = []
        self.fw = fwtp.J1939Tp(self._fw_send, BMS, CHARGER, tx_size=64, rx_size=64)
        self.peer = Transport(CHARGER, BMS, cts_packets=cts_packets, hold_once=hold_once)
        self.now = 0

    def _fw_send(self, can_id, buf, dlc):
        self.fw_calls += 1
        if self.fw_calls in self.refuse:
            return False
        self._bus(Frame(can_id, bytes(buf[:dlc])), to_peer=True)
        return True

    def _bus(self, frame: Frame, to_peer: bool) -> None:
        self.sent += 1
        self.log.append(frame)
        if self.sent in self.lose:
            return
        if to_peer:
            self.to_peer.append(frame)
        else:
            self.fw.on_frame(frame.can_id, frame.data, len(frame.data), self.now)

    def run(self, ms: int, step: int = 10) -> None:
        end = self.now + ms
        while self.now < end:
            self.fw.service(self.now)
            while self.to_peer:
                frame = self.to_peer.pop(0)
                for reply in self.peer.feed(frame, self.now):
                    self._bus(reply, to_peer=False)
            for reply in self.peer.poll(self.now):
                self._bus(reply, to_peer=False)
            self.now += step

    def peer_sends(self, frames: list[Frame]) -> None:
        for f in frames:
            self._bus(f, to_peer=False)


payloads = st.binary(min_size=9, max_size=64)


@settings(max_examples=60, deadline=None)
@given(payload=payloads, cts=st.integers(1, 255), hold=st.booleans())
def test_bms_to_charger_arrives_intact(payload: bytes, cts: int, hold: bool) -> None:
    """Law: without loss every message arrives byte for byte and both ends finish cleanly."""
    link = Link(cts_packets=cts, hold_once=hold)
    link.fw.tx_buf[: len(payload)] = payload
    assert link.fw.send(PGN_BRM, len(payload), 0)
    link.run(3000 if hold else 500)
    assert link.peer.received == [(PGN_BRM, payload)]
    assert link.fw.tx_done == 1 and link.fw.tx_failed == 0 and not link.fw.busy()
    dts = [f for f in link.log if (f.can_id >> 16) & 0xFF == fwtp.PF_DT]
    assert len(dts) == -(-len(payload) // 7)
    assert dts[-1].data[1 + (len(payload) - 1) % 7 + 1 :] == b"\xff" * (6 - (len(payload) - 1) % 7)


@settings(max_examples=80, deadline=None)
@given(payload=payloads, cts=st.integers(1, 8), lose=st.sets(st.integers(1, 30), max_size=3))
def test_lost_frames_end_in_success_or_a_reported_failure(
    payload: bytes, cts: int, lose: set[int]
) -> None:
    """Law: with frames lost the transfer either delivers the exact payload or ends, within
    T3 + T4, counted as failed on the sender; never a wrong payload, never stuck busy."""
    link = Link(lose=lose, cts_packets=cts)
    link.fw.tx_buf[: len(payload)] = payload
    assert link.fw.send(PGN_BRM, len(payload), 0)
    link.run(fwtp.T3_MS + fwtp.T4_MS + 1000)
    assert not link.fw.busy()
    assert all(p == payload for _, p in link.peer.received)
    assert link.fw.tx_done + link.fw.tx_failed == 1
    if link.fw.tx_done:
        assert link.peer.received == [(PGN_BRM, payload)]


@settings(max_examples=40, deadline=None)
@given(payload=payloads, refuse=st.sets(st.integers(2, 12), max_size=4))
def test_a_full_transmit_queue_only_delays(payload: bytes, refuse: set[int]) -> None:
    """Law: a frame the board refuses goes out on a later call; the message still arrives."""
    link = Link(refuse=refuse)
    link.fw.tx_buf[: len(payload)] = payload
    assert link.fw.send(PGN_BRM, len(payload), 0)
    link.run(1000)
    assert link.peer.received == [(PGN_BRM, payload)]
    assert link.fw.tx_done == 1


@settings(max_examples=40, deadline=None)
@given(payload=payloads, lose=st.sets(st.integers(1, 20), max_size=2))
def test_charger_to_bms_reception(payload: bytes, lose: set[int]) -> None:
    """Law: the firmware receives what the desktop sender sends (RTS/CTS), or reports a failure;
    a lost packet is asked for again."""
    link = Link(lose=lose)
    link.peer_sends(link.peer.start(0x001100, payload, 0))
    link.run(fwtp.T2_MS + fwtp.T3_MS + 500)
    if link.fw.take():
        assert bytes(link.fw.rx_buf[: link.fw.rx_len]) == payload
        assert link.fw.rx_pgn == 0x001100
    else:
        assert lose, "nothing was lost, yet the message did not arrive"
        peer = link.peer
        assert link.fw.rx_failed or peer.aborts_sent or peer.aborts_received
    assert link.fw.rx_state == fwtp.RX_IDLE


def test_broadcast_both_ways() -> None:
    link = Link()
    payload = bytes(range(20))
    link.fw.tx_buf[:20] = payload
    assert link.fw.send(0x001500, 20, 0, bam=True)
    link.run(400)
    assert link.peer.received == [(0x001500, payload)]
    assert link.fw.tx_done == 1
    frames = link.peer.broadcast(0x001600, payload[::-1])
    for f in frames:
        link.peer_sends([f])
        link.now += 60
    assert link.fw.take() and bytes(link.fw.rx_buf[:20]) == payload[::-1]


def test_no_cts_aborts_with_timeout_after_t3() -> None:
    sent = []
    tp = fwtp.J1939Tp(lambda i, b, n: sent.append((i, bytes(b))) or True, BMS, CHARGER)
    tp.tx_buf[:9] = bytes(9)
    assert tp.send(PGN_BRM, 9, 0)
    tp.service(fwtp.T3_MS)
    assert tp.busy()
    tp.service(fwtp.T3_MS + 1)
    assert not tp.busy() and tp.tx_failed == 1
    cid, data = sent[-1]
    assert cid == 0x1CEC56F4 and data == bytes([0xFF, 3, 0xFF, 0xFF, 0xFF, 0x00, 0x02, 0x00])


def test_cts_while_sending_aborts_with_reason_4() -> None:
    sent = []
    tp = fwtp.J1939Tp(lambda i, b, n: sent.append(bytes(b)) or True, BMS, CHARGER, burst=1)
    tp.tx_buf[:49] = bytes(49)
    assert tp.send(PGN_BRM, 49, 0)
    cts = bytes([0x11, 7, 1, 0xFF, 0xFF, 0x00, 0x02, 0x00])
    tp.on_frame(0x1CECF456, cts, 8, 10)
    tp.service(20)  # one packet of seven
    tp.on_frame(0x1CECF456, cts, 8, 30)
    assert not tp.busy() and tp.tx_failed == 1 and sent[-1][:2] == bytes([0xFF, 4])


def test_rts_refusals() -> None:
    sent = []
    tp = fwtp.J1939Tp(lambda i, b, n: sent.append(bytes(b)) or True, BMS, CHARGER, rx_size=16)
    too_big = bytes([0x10, 49, 0, 7, 0xFF, 0, 2, 0])
    assert tp.on_frame(0x1CECF456, too_big, 8, 0)
    assert sent[-1][:2] == bytes([0xFF, 2])
    ok = bytes([0x10, 13, 0, 2, 0xFF, 0, 6, 0])
    tp.on_frame(0x1CECF456, ok, 8, 0)
    assert sent[-1] == bytes([0x11, 2, 1, 0xFF, 0xFF, 0, 6, 0])
    tp.on_frame(0x1CECF456, bytes([0x10, 9, 0, 2, 0xFF, 0, 0x11, 0]), 8, 1)
    assert sent[-1][:2] == bytes([0xFF, 1])  # busy with the first
    # Out-of-order packets are asked for again, twice, then the reception is aborted.
    for k in range(3):
        tp.on_frame(0x1CEBF456, bytes([2]) + bytes(7), 8, 2 + k)
    assert sent[-1][:2] == bytes([0xFF, 5]) and tp.rx_failed == 1
    # Frames of another node or another destination are not the transport's.
    assert not tp.on_frame(0x1CECF457, ok, 8, 10)
    assert not tp.on_frame(frame_id(0xEC, 0x01, CHARGER), ok, 8, 10)
    assert not tp.on_frame(frame_id(0xEA, BMS, CHARGER), ok, 8, 10)


def test_observed_brm_session_bytes() -> None:
    """The BRM exchange of the real charger log in ../shared/GBT27930.md §4, byte for byte."""
    sent = []
    tp = fwtp.J1939Tp(lambda i, b, n: sent.append((i, bytes(b))) or True, BMS, CHARGER)
    tp.tx_buf[:49] = bytes(range(49))
    tp.send(PGN_BRM, 49, 0)
    assert sent[0] == (0x1CEC56F4, bytes.fromhex("10310007FF000200"))
    tp.on_frame(0x1CECF456, bytes.fromhex("110701FFFF000200"), 8, 5)
    tp.service(10)
    assert [i for i, _ in sent[1:]] == [0x1CEB56F4] * 7
    assert [d[0] for _, d in sent[1:]] == list(range(1, 8))
    tp.on_frame(0x1CECF456, bytes.fromhex("13310007FF000200"), 8, 20)
    assert tp.tx_done == 1
