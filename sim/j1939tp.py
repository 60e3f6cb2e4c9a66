"""A desktop J1939-21 transport (TP.CM / TP.DT), written from the standard's text (SAE J1939-21
§5.10 as GB/T 27930 cites it; ../shared/GBT27930.md §4), independent of `firmware/j1939tp.py`.

The simulated charger uses it to receive BRM/BCP/BCS, and the tests use it as the other side of
the firmware's transport. `Transport(sa, da)` is driven with `feed(frame, now_ms)` for every frame
received and `poll(now_ms)` for the timers; both return the frames to send. A finished message
appears in `received` as (pgn, payload). `cts_packets` sets how many packets one CTS allows
(the GB/T logs show all at once), `hold_once` makes the first CTS a hold (CTS 0) to exercise T4.

Usage: ``tp = Transport(0x56, 0xF4); out = tp.feed(Frame(can_id, data), now)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

CM, DT = 0xEC, 0xEB
CONTROL_RTS, CONTROL_CTS, CONTROL_EOMA, CONTROL_BAM, CONTROL_ABORT = 0x10, 0x11, 0x13, 0x20, 0xFF
# J1939-21 timers, ms.
T1, T2, T3, T4 = 750, 1250, 1250, 1050
TH = 500  # a receiver holding the connection repeats CTS(0) or sends the real CTS within Th


@dataclass(frozen=True)
class Frame:
    """One CAN frame: 29-bit id and payload."""

    can_id: int
    data: bytes


def frame_id(pf: int, da: int, sa: int, priority: int = 7) -> int:
    """J1939 PDU1 id: priority << 26 | PF << 16 | DA << 8 | SA."""
    return priority << 26 | pf << 16 | da << 8 | sa


def _pgn_bytes(pgn: int) -> bytes:
    return pgn.to_bytes(3, "little")


@dataclass
class _Inbound:
    pgn: int
    size: int
    packets: int
    data: bytearray
    expected: int = 1
    window_end: int = 0
    deadline: int = 0
    broadcast: bool = False


@dataclass
class _Outbound:
    pgn: int
    payload: bytes
    packets: int
    next_seq: int = 1
    window_end: int = 0
    deadline: int = 0
    waiting: bool = True  # for a CTS or the EndOfMsgAck


@dataclass
class Transport:
    """One node's transport towards one peer (both directions)."""

    sa: int
    da: int
    cts_packets: int = 255
    hold_once: bool = False
    received: list[tuple[int, bytes]] = field(default_factory=list)
    aborts_received: list[int] = field(default_factory=list)
    aborts_sent: list[int] = field(default_factory=list)
    sent_ok: int = 0
    _in: _Inbound | None = None
    _out: _Outbound | None = None
    _held: bool = False
    _release_at: int | None = None  # when a held reception gets its real CTS

    # -- sending ---------------------------------------------------------------------------
    def start(self, pgn: int, payload: bytes, now_ms: int) -> list[Frame]:
        """Begin a connection-mode transfer of `payload` (9..1785 bytes): the RTS to send."""
        if not 9 <= len(payload) <= 1785:
            raise ValueError(f"transport carries 9..1785 bytes, not {len(payload)}")
        packets = -(-len(payload) // 7)
        self._out = _Outbound(pgn, bytes(payload), packets, deadline=now_ms + T3)
        rts = bytes([CONTROL_RTS]) + len(payload).to_bytes(2, "little")
        return [self._cm(rts + bytes([packets, 0xFF]) + _pgn_bytes(pgn))]

    def broadcast(self, pgn: int, payload: bytes) -> list[Frame]:
        """A whole BAM transfer: the announcement and every packet (the caller spaces them)."""
        packets = -(-len(payload) // 7)
        head = bytes([CONTROL_BAM]) + len(payload).to_bytes(2, "little") + bytes([packets, 0xFF])
        frames = [Frame(frame_id(CM, 0xFF, self.sa), head + _pgn_bytes(pgn))]
        for seq in range(1, packets + 1):
            chunk = payload[(seq - 1) * 7 : seq * 7].ljust(7, b"\xff")
            frames.append(Frame(frame_id(DT, 0xFF, self.sa), bytes([seq]) + chunk))
        return frames

    def _packets(self, first: int, count: int) -> list[Frame]:
        out = self._out
        assert out is not None
        frames = []
        for seq in range(first, min(first + count, out.packets + 1)):
            chunk = out.payload[(seq - 1) * 7 : seq * 7].ljust(7, b"\xff")
            frames.append(Frame(frame_id(DT, self.da, self.sa), bytes([seq]) + chunk))
        return frames

    # -- receiving -------------------------------------------------------------------------
    def feed(self, frame: Frame, now_ms: int) -> list[Frame]:
        """Process one received frame; return the frames to answer with."""
        cid, data = frame.can_id, frame.data
        pf, dest, src = (cid >> 16) & 0xFF, (cid >> 8) & 0xFF, cid & 0xFF
        if src != self.da or dest not in (self.sa, 0xFF) or pf not in (CM, DT) or not data:
            return []
        if pf == DT:
            return self._on_data(data, now_ms)
        if len(data) < 8:
            return []
        control, pgn = data[0], int.from_bytes(data[5:8], "little")
        if control in (CONTROL_RTS, CONTROL_BAM):
            return self._on_announce(data, pgn, now_ms, control == CONTROL_BAM)
        if control == CONTROL_CTS:
            return self._on_cts(data, pgn, now_ms)
        if control == CONTROL_EOMA:
            if self._out is not None and self._out.pgn == pgn:
                self._out = None
                self.sent_ok += 1
            return []
        if control == CONTROL_ABORT:
            self.aborts_received.append(data[1])
            if self._out is not None and self._out.pgn == pgn:
                self._out = None
            if self._in is not None and self._in.pgn == pgn:
                self._in = None
        return []

    def _on_announce(self, data: bytes, pgn: int, now_ms: int, broadcast: bool) -> list[Frame]:
        size, packets = int.from_bytes(data[1:3], "little"), data[3]
        if packets != -(-size // 7) or size < 9:
            return []
        if self._in is not None and not broadcast:
            return [self._abort(1, pgn)]
        self._in = _Inbound(pgn, size, packets, bytearray(size), broadcast=broadcast)
        if broadcast:
            self._in.deadline = now_ms + T1
            return []
        if self.hold_once and not self._held:
            self._held = True
            self._in.deadline = now_ms + T2
            self._release_at = now_ms + TH
            return [self._cm(bytes([CONTROL_CTS, 0, 1, 0xFF, 0xFF]) + _pgn_bytes(pgn))]
        return [self._cts(1, now_ms, data[4])]

    def _cts(self, first: int, now_ms: int, limit: int = 0xFF) -> Frame:
        inbound = self._in
        assert inbound is not None
        count = min(inbound.packets - first + 1, self.cts_packets, limit or 0xFF)
        inbound.window_end = first + count - 1
        inbound.deadline = now_ms + T2
        return self._cm(bytes([CONTROL_CTS, count, first, 0xFF, 0xFF]) + _pgn_bytes(inbound.pgn))

    def _on_data(self, data: bytes, now_ms: int) -> list[Frame]:
        inbound = self._in
        if inbound is None or len(data) < 8 or data[0] != inbound.expected:
            return []
        start = (data[0] - 1) * 7
        inbound.data[start : start + 7] = data[1:8][: max(0, inbound.size - start)]
        inbound.expected += 1
        inbound.deadline = now_ms + T1
        if data[0] == inbound.packets:
            self._in = None
            self.received.append((inbound.pgn, bytes(inbound.data)))
            if inbound.broadcast:
                return []
            ack = bytes([CONTROL_EOMA]) + inbound.size.to_bytes(2, "little")
            return [self._cm(ack + bytes([inbound.packets, 0xFF]) + _pgn_bytes(inbound.pgn))]
        if not inbound.broadcast and data[0] == inbound.window_end:
            return [self._cts(inbound.expected, now_ms)]
        return []

    def _on_cts(self, data: bytes, pgn: int, now_ms: int) -> list[Frame]:
        out = self._out
        if out is None or out.pgn != pgn:
            return []
        count, first = data[1], data[2]
        if count == 0:
            out.deadline = now_ms + T4
            return []
        out.waiting = True
        out.deadline = now_ms + T3
        return self._packets(first, count)

    # -- timers ----------------------------------------------------------------------------
    def poll(self, now_ms: int) -> list[Frame]:
        """Check the timers at `now_ms`: a transfer that timed out is aborted (reason 3)."""
        frames = []
        if self._release_at is not None and now_ms >= self._release_at:
            self._release_at = None
            if self._in is not None and not self._in.broadcast:
                frames.append(self._cts(1, now_ms))
        if self._in is not None and now_ms > self._in.deadline:
            if not self._in.broadcast:
                frames.append(self._abort(3, self._in.pgn))
            self._in = None
        if self._out is not None and now_ms > self._out.deadline:
            frames.append(self._abort(3, self._out.pgn))
            self._out = None
        return frames

    def reset(self) -> None:
        """Forget any transfer in progress (a new session)."""
        self._in = None
        self._out = None
        self._release_at = None

    def _cm(self, data: bytes) -> Frame:
        return Frame(frame_id(CM, self.da, self.sa), bytes(data))

    def _abort(self, reason: int, pgn: int) -> Frame:
        self.aborts_sent.append(reason)
        return self._cm(bytes([CONTROL_ABORT, reason, 0xFF, 0xFF, 0xFF]) + _pgn_bytes(pgn))
