"""J1939-21 transport protocol (TP.CM 0xEC00 / TP.DT 0xEB00) between two fixed addresses.

Carries the GB/T 27930 messages longer than 8 bytes (BRM 49 B, BCP 13 B, BCS 9 B; docs/charging.md)
between this node (`sa`, the BMS 0xF4) and one peer (`da`, the charger 0x56), both ways:

- Transmit, connection mode (`send`): RTS `10 size nPkts FF pgn`; the peer's CTS `11 n next`
  allows n packets from `next` (n = 0: hold); TP.DT `seq + 7 bytes` (the last padded with 0xFF)
  go out at most `burst` per `service` call; the peer's EndOfMsgAck `13 ...` ends the transfer.
  A CTS may ask for packets again (retransmission). Timeouts: T3 (1250 ms) for a CTS or the
  EndOfMsgAck after an RTS or the last packet of a window, T4 (1050 ms) after a hold CTS; a CTS
  arriving while a window is still being sent is answered with Abort reason 4. Abort from the peer
  or a timeout ends the transfer (`tx_failed` counts; the timeout also sends Abort reason 3).
- Transmit, broadcast (`send(..., bam=True)`): BAM `20 size nPkts FF pgn` to 0xFF, then one TP.DT
  every `bam_gap_ms` (50 ms: J1939's 50-200 ms window).
- Receive: an RTS from the peer is answered with CTS for up to `window` packets; TP.DT must
  follow in order (T1 750 ms between packets, T2 1250 ms after a CTS); a packet out of order is
  asked for again with a CTS from the expected one, at most `retries` times (then Abort reason 5);
  the complete message is acknowledged (EndOfMsgAck) and left in `rx_buf` (`rx_ready`, `rx_pgn`,
  `rx_len`) for the application. An RTS while a reception is open is refused (Abort reason 1),
  one larger than `rx_buf` too (reason 2). BAM from the peer is received without handshake (T1).

Nothing is allocated after construction; times are the board clock in ms passed in (exact and
repeatable in lock-step). Frames go out through `send_frame(can_id, buf, dlc) -> bool`: a frame the
board refuses is tried again on the next `service` call (the peer's timers bound how long).
"""

from .compat import const, ticks_diff

PF_CM = const(0xEC)
PF_DT = const(0xEB)
_PRIO = const(7)
RTS = const(0x10)
CTS = const(0x11)
EOMA = const(0x13)
BAM = const(0x20)
ABORT = const(0xFF)
ABORT_BUSY = const(1)
ABORT_RESOURCES = const(2)
ABORT_TIMEOUT = const(3)
ABORT_CTS_WHILE_SENDING = const(4)
ABORT_RETRANSMIT = const(5)
T1_MS = const(750)
T2_MS = const(1250)
T3_MS = const(1250)
T4_MS = const(1050)
MAX_SIZE = const(1785)

# Transmit states
TX_IDLE = const(0)
TX_WAIT_CTS = const(1)  # RTS or a window sent: waiting for CTS / EndOfMsgAck (T3)
TX_HOLD = const(2)  # the peer said CTS(0): waiting for the next CTS (T4)
TX_SENDING = const(3)  # sending the packets a CTS allowed
TX_BAM = const(4)  # broadcasting, one packet per gap
# Receive states
RX_IDLE = const(0)
RX_CONN = const(1)
RX_BAM = const(2)


def tp_id(pf, da, sa):
    """The 29-bit id of a transport frame (priority 7, PDU1)."""
    return _PRIO << 26 | pf << 16 | da << 8 | sa


class J1939Tp:
    """Both directions of the transport between `sa` and `da`; see the module docstring."""

    def __init__(self, send_frame, sa, da, tx_size=64, rx_size=64, window=255, burst=16, retries=2):
        self.send_frame = send_frame
        self.sa = sa
        self.da = da
        self.tx_buf = bytearray(tx_size)  # the caller encodes the message here, then send()
        self.rx_buf = bytearray(rx_size)
        self.window = window
        self.burst = burst
        self.retries = retries
        self.bam_gap_ms = 50
        self.cm_id = tp_id(PF_CM, da, sa)
        self.dt_id = tp_id(PF_DT, da, sa)
        self._f = bytearray(8)
        self._cm = bytearray(8)  # a control frame the board refused, sent again by service()
        self._cm_id = 0
        self._cm_pending = False
        self.tx_state = TX_IDLE
        self.tx_pgn = 0
        self.tx_len = 0
        self._tx_n = 0  # packets in the message
        self._tx_seq = 0  # next packet to send
        self._tx_last = 0  # last packet of the window the CTS allowed
        self._tx_t = 0  # deadline reference, ms
        self.tx_done = 0
        self.tx_failed = 0
        self.rx_state = RX_IDLE
        self.rx_ready = False
        self.rx_pgn = 0
        self.rx_len = 0
        self._rx_n = 0
        self._rx_next = 0
        self._rx_end = 0  # last packet of the window asked for
        self._rx_t = 0
        self._rx_timeout = 0
        self._rx_retry = 0
        self.rx_done = 0
        self.rx_failed = 0
        self.last_abort = 0  # reason of the last abort sent or received

    # ---- transmit --------------------------------------------------------------------------
    def busy(self):
        """True while a transfer is in progress (a new send() would be refused)."""
        return self.tx_state != TX_IDLE

    def send(self, pgn, size, now_ms, bam=False):
        """Start sending `tx_buf[:size]` as PGN `pgn`; False if busy, too long or refused."""
        if self.tx_state != TX_IDLE or size < 9 or size > len(self.tx_buf) or size > MAX_SIZE:
            return False
        n = (size + 6) // 7
        f = self._f
        f[0] = BAM if bam else RTS
        f[1] = size & 0xFF
        f[2] = size >> 8
        f[3] = n
        f[4] = 0xFF
        _put_pgn(f, pgn)
        cm_id = tp_id(PF_CM, 0xFF, self.sa) if bam else self.cm_id
        if not self.send_frame(cm_id, f, 8):
            return False
        self.tx_pgn = pgn
        self.tx_len = size
        self._tx_n = n
        self._tx_t = now_ms
        if bam:
            self._tx_seq = 1
            self._tx_last = n
            self.tx_state = TX_BAM
        else:
            self.tx_state = TX_WAIT_CTS
        return True

    def _control(self, data, dlc, now_ms):
        c = data[0]
        pgn = _get_pgn(data)
        if c == CTS:
            if pgn != self.tx_pgn or self.tx_state in (TX_IDLE, TX_BAM):
                return
            if self.tx_state == TX_SENDING:
                self._abort_tx(ABORT_CTS_WHILE_SENDING)
                return
            allowed = data[1]
            self._tx_t = now_ms
            if allowed == 0:
                self.tx_state = TX_HOLD
                return
            first = data[2]
            if first < 1 or first > self._tx_n:
                return  # cannot be served: T3 runs on and ends the transfer
            last = first + allowed - 1
            self._tx_seq = first
            self._tx_last = last if last < self._tx_n else self._tx_n
            self.tx_state = TX_SENDING
        elif c == EOMA:
            if pgn == self.tx_pgn and self.tx_state == TX_WAIT_CTS and self._tx_seq > self._tx_n:
                self.tx_state = TX_IDLE
                self.tx_done += 1
        elif c == ABORT:
            if pgn == self.tx_pgn and self.tx_state != TX_IDLE:
                self.tx_state = TX_IDLE
                self.tx_failed += 1
                self.last_abort = data[1]
            if pgn == self.rx_pgn and self.rx_state == RX_CONN:
                self.rx_state = RX_IDLE
                self.rx_failed += 1
                self.last_abort = data[1]
        elif c == RTS:
            self._rts(data, pgn, now_ms)
        elif c == BAM:
            if self.rx_state != RX_IDLE:
                return  # a broadcast cannot be refused; the open reception goes on
            size = data[1] | data[2] << 8
            if 9 <= size <= len(self.rx_buf) and data[3] == (size + 6) // 7:
                self._rx_start(pgn, size, data[3], now_ms, RX_BAM)

    def _send_dt(self, seq):
        f = self._f
        f[0] = seq
        base = (seq - 1) * 7
        size = self.tx_len
        buf = self.tx_buf
        for i in range(7):
            p = base + i
            f[1 + i] = buf[p] if p < size else 0xFF
        dt_id = tp_id(PF_DT, 0xFF, self.sa) if self.tx_state == TX_BAM else self.dt_id
        return self.send_frame(dt_id, f, 8)

    def _service_tx(self, now_ms):
        st = self.tx_state
        if st == TX_SENDING:
            for _ in range(self.burst):
                if not self._send_dt(self._tx_seq):
                    return True  # the board's queue is full: the same packet next call
                self._tx_seq += 1
                if self._tx_seq > self._tx_last:
                    self.tx_state = TX_WAIT_CTS
                    self._tx_t = now_ms
                    return False
            return True
        if st == TX_BAM:
            if ticks_diff(now_ms, self._tx_t) >= self.bam_gap_ms and self._send_dt(self._tx_seq):
                self._tx_t = now_ms
                self._tx_seq += 1
                if self._tx_seq > self._tx_last:
                    self.tx_state = TX_IDLE
                    self.tx_done += 1
            return False
        if st == TX_WAIT_CTS or st == TX_HOLD:
            limit = T3_MS if st == TX_WAIT_CTS else T4_MS
            if ticks_diff(now_ms, self._tx_t) > limit:
                self._abort_tx(ABORT_TIMEOUT)
        return False

    def _abort_tx(self, reason):
        self.tx_state = TX_IDLE
        self.tx_failed += 1
        self._send_abort(reason, self.tx_pgn)

    # ---- receive ---------------------------------------------------------------------------
    def _rts(self, data, pgn, now_ms):
        size = data[1] | data[2] << 8
        n = data[3]
        if self.rx_state != RX_IDLE:
            self._send_abort(ABORT_BUSY, pgn)
            return
        if size < 9 or n != (size + 6) // 7:
            return  # inconsistent: not a transfer this node can take part in
        if size > len(self.rx_buf):
            self._send_abort(ABORT_RESOURCES, pgn)
            return
        self._rx_start(pgn, size, n, now_ms, RX_CONN)
        self._rx_retry = 0
        self._send_cts(1, data[4], now_ms)

    def _rx_start(self, pgn, size, n, now_ms, state):
        self.rx_state = state
        self.rx_ready = False
        self.rx_pgn = pgn
        self.rx_len = size
        self._rx_n = n
        self._rx_next = 1
        self._rx_end = n
        self._rx_t = now_ms
        self._rx_timeout = T1_MS

    def _send_cts(self, first, max_per_cts, now_ms):
        allowed = self._rx_n - first + 1
        if allowed > self.window:
            allowed = self.window
        if max_per_cts and allowed > max_per_cts:
            allowed = max_per_cts
        self._rx_end = first + allowed - 1
        self._rx_t = now_ms
        self._rx_timeout = T2_MS
        cm = self._cm_frame()
        cm[0] = CTS
        cm[1] = allowed
        cm[2] = first
        cm[3] = 0xFF
        cm[4] = 0xFF
        _put_pgn(cm, self.rx_pgn)
        self._flush_cm()

    def _data(self, data, dlc, now_ms):
        if self.rx_state == RX_IDLE or dlc < 8:
            return
        seq = data[0]
        if seq != self._rx_next:
            if self.rx_state == RX_BAM or seq < self._rx_next:
                return  # a duplicate (or a lost broadcast packet, caught by T1)
            self._rx_retry += 1
            if self._rx_retry > self.retries:
                self.rx_state = RX_IDLE
                self.rx_failed += 1
                self._send_abort(ABORT_RETRANSMIT, self.rx_pgn)
            else:
                self._send_cts(self._rx_next, 0, now_ms)
            return
        base = (seq - 1) * 7
        size = self.rx_len
        buf = self.rx_buf
        for i in range(7):
            p = base + i
            if p < size:
                buf[p] = data[1 + i]
        self._rx_next = seq + 1
        self._rx_t = now_ms
        self._rx_timeout = T1_MS
        if seq >= self._rx_n:
            done = self.rx_state == RX_CONN
            self.rx_state = RX_IDLE
            self.rx_ready = True
            self.rx_done += 1
            if done:
                cm = self._cm_frame()
                cm[0] = EOMA
                cm[1] = size & 0xFF
                cm[2] = size >> 8
                cm[3] = self._rx_n
                cm[4] = 0xFF
                _put_pgn(cm, self.rx_pgn)
                self._flush_cm()
        elif self.rx_state == RX_CONN and seq >= self._rx_end:
            self._send_cts(seq + 1, 0, now_ms)

    def take(self):
        """Hand the received message over (True once per message; then `rx_buf[:rx_len]`)."""
        if self.rx_ready:
            self.rx_ready = False
            return True
        return False

    # ---- both ------------------------------------------------------------------------------
    def on_frame(self, can_id, data, dlc, now_ms):
        """Take one received frame; True if it was a transport frame for this connection."""
        if can_id & 0xFF != self.da:
            return False
        pf = (can_id >> 16) & 0xFF
        dest = (can_id >> 8) & 0xFF
        if (pf != PF_CM and pf != PF_DT) or (dest != self.sa and dest != 0xFF):
            return False
        if pf == PF_DT:
            self._data(data, dlc, now_ms)
        elif dlc >= 8:
            self._control(data, dlc, now_ms)
        return True

    def service(self, now_ms):
        """Send what is due and check the timers; True when more frames are waiting to go."""
        if self._cm_pending:
            self._flush_cm()
        if self.rx_state != RX_IDLE and ticks_diff(now_ms, self._rx_t) > self._rx_timeout:
            conn = self.rx_state == RX_CONN
            self.rx_state = RX_IDLE
            self.rx_failed += 1
            if conn:
                self._send_abort(ABORT_TIMEOUT, self.rx_pgn)
        return self._service_tx(now_ms) or self._cm_pending

    def reset(self):
        """Drop every transfer without a frame (the session ended)."""
        self.tx_state = TX_IDLE
        self.rx_state = RX_IDLE
        self.rx_ready = False
        self._cm_pending = False

    def _cm_frame(self):
        self._cm_id = self.cm_id
        return self._cm

    def _send_abort(self, reason, pgn):
        self.last_abort = reason
        cm = self._cm_frame()
        cm[0] = ABORT
        cm[1] = reason
        cm[2] = 0xFF
        cm[3] = 0xFF
        cm[4] = 0xFF
        _put_pgn(cm, pgn)
        self._flush_cm()

    def _flush_cm(self):
        self._cm_pending = not self.send_frame(self._cm_id, self._cm, 8)


def _put_pgn(f, pgn):
    f[5] = pgn & 0xFF
    f[6] = (pgn >> 8) & 0xFF
    f[7] = (pgn >> 16) & 0xFF


def _get_pgn(data):
    return data[5] | data[6] << 8 | data[7] << 16
