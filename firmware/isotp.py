"""ISO-TP (ISO 15765-2) on classic CAN, the server's end of one diagnostic connection.

Owns the segmentation of diagnostic messages into CAN frames and back: single (SF), first (FF),
consecutive (CF) and flow-control (FC) frames, normal 11-bit addressing with a physical and a
functional request id and one response id (`dbc/cellguard.dbc`), messages of 1..4095 bytes, every
frame it sends padded to 8 bytes with 0xCC.

One message buffer serves both directions: a diagnostic server answers one request at a time
(ISO 14229), so a new request arriving while a response is still going out replaces it. Nothing
is allocated after construction.

Receive (`on_frame`, called from the receive path for the two request ids): an SF or FF starts a
message (abandoning one in progress); a physical FF is answered at once with FC
ContinueToSend(BS=`bs`, STmin=`stmin_ms`), or Overflow when it announces more than the buffer
holds; CFs must follow with sequence numbers 1, 2, ..., 15, 0, ...; every `bs` CFs another FC
goes out. A wrong sequence number or more than N_Cr without the next CF ends the reception
(nothing is delivered). Functional requests are single frames only (a functional FF is ignored).

Transmit (`send`): up to 7 bytes go as an SF; longer messages as an FF, then CFs once the
tester's FC allows: its BS (0 = no more FCs) and STmin (0x00-0x7F ms; 0xF1-0xF9 = 100-900 us,
rounded up to 1 ms here, which only sends slower) are honoured. FC Wait restarts N_Bs, at most
`wft_max` times; Overflow or more than N_Bs without an FC ends the transmission. A frame the
board refuses (`can_send` returning False: its transmit queue is full) is retried for N_As, then
the transmission ends. `send_nrc` sends a 3-byte negative response without touching the buffer
(response pending while the request is still being worked on; `hold` keeps new requests out).

Timing comes from the board clock passed to `on_frame` and `service` (ms): in lock-step it is the
bench's simulated time, so the timeouts are exact and repeatable. `service(now_ms)` runs between
control cycles and sends at most `burst` frames per call, so a 4095-byte response never holds up
a cycle. `tx_frames`, `rx_frames`, `errors` count for diagnostics.
"""

from .compat import const, ticks_diff

_SF = const(0)
_FF = const(1)
_CF = const(2)
_FC = const(3)
_FS_CTS = const(0)
_FS_WAIT = const(1)
_FS_OVFLW = const(2)
_PAD = const(0xCC)
MAX_LEN = const(4095)

# States
IDLE = const(0)
RX = const(1)  # receiving consecutive frames
READY = const(2)  # a complete request waits for the application
TX_FC = const(3)  # first frame sent, waiting for the tester's flow control
TX_CF = const(4)  # sending consecutive frames
TX_SF = const(5)  # a single frame or the first frame waits for the board to take it


class IsoTp:
    """One ISO-TP connection; see the module docstring."""

    def __init__(
        self,
        board,
        phys_id,
        func_id,
        tx_id,
        buf=None,
        bs=8,
        stmin_ms=0,
        n_cr_ms=1000,
        n_bs_ms=1000,
        n_as_ms=1000,
        wft_max=8,
        burst=32,
    ):
        self.board = board
        self.phys_id = phys_id
        self.func_id = func_id
        self.tx_id = tx_id
        self.buf = buf if buf is not None else bytearray(MAX_LEN)  # at most MAX_LEN is used
        self._f = bytearray(8)
        self.bs = bs
        self.stmin_ms = stmin_ms
        self.n_cr_ms = n_cr_ms
        self.n_bs_ms = n_bs_ms
        self.n_as_ms = n_as_ms
        self.wft_max = wft_max
        self.burst = burst
        self.state = IDLE
        self.hold = False  # the application still needs buf: new requests are dropped
        self.length = 0  # of the message in buf (received, or being sent)
        self.functional = False  # the message in buf came on the functional id
        self._pos = 0  # bytes received / sent so far
        self._sn = 0  # next sequence number
        self._block = 0  # CFs since the last FC
        self._t = 0  # start of the running timer, ms
        self._tx_bs = 0
        self._tx_stmin = 0
        self._wait = 0
        self.tx_frames = 0
        self.rx_frames = 0
        self.errors = 0

    # ---- receive -----------------------------------------------------------------------------
    def on_frame(self, can_id, data, dlc, now_ms):
        """Take one received frame of a request id (`data[0:dlc]`, copied at once)."""
        if dlc < 1:
            return
        self.rx_frames += 1
        pci = data[0] >> 4
        if pci == _FC:
            self._flow_control(data, dlc, now_ms)
            return
        func = can_id == self.func_id
        if self.hold:
            return
        if pci == _SF:
            n = data[0] & 15
            if n == 0 or n > dlc - 1 or n > 7:
                return  # SF_DL 0 is the CAN FD escape; longer than the frame is malformed
            buf = self.buf
            for i in range(n):
                buf[i] = data[1 + i]
            self.length = n
            self.functional = func
            self.state = READY
        elif pci == _FF:
            if func or dlc < 8:
                return
            n = (data[0] & 15) << 8 | data[1]
            if n < 8:
                return  # would have fitted an SF: malformed
            if n > len(self.buf) or n > MAX_LEN:
                self._send_fc(_FS_OVFLW)
                self.state = IDLE
                self.errors += 1
                return
            buf = self.buf
            for i in range(6):
                buf[i] = data[2 + i]
            self.length = n
            self.functional = False
            self._pos = 6
            self._sn = 1
            self._block = 0
            self.state = RX
            self._t = now_ms
            self._send_fc(_FS_CTS)
        elif pci == _CF:
            if self.state != RX or func:
                return
            if ticks_diff(now_ms, self._t) > self.n_cr_ms:
                self.state = IDLE  # N_Cr ran out before service() saw it: too late all the same
                self.errors += 1
                return
            if data[0] & 15 != self._sn:
                self.state = IDLE  # wrong sequence number: the reception is abandoned
                self.errors += 1
                return
            n = self.length - self._pos
            if n > 7:
                n = 7
            if n > dlc - 1:
                self.state = IDLE  # a short CF cannot carry what is still missing
                self.errors += 1
                return
            buf = self.buf
            p = self._pos
            for i in range(n):
                buf[p + i] = data[1 + i]
            self._pos = p + n
            self._sn = (self._sn + 1) & 15
            self._t = now_ms
            if self._pos >= self.length:
                self.state = READY
                return
            self._block += 1
            if self.bs and self._block >= self.bs:
                self._block = 0
                self._send_fc(_FS_CTS)

    def _flow_control(self, data, dlc, now_ms):
        if self.state != TX_FC or dlc < 3:
            return
        if ticks_diff(now_ms, self._t) > self.n_bs_ms:
            self.state = IDLE  # N_Bs ran out before service() saw it
            self.errors += 1
            return
        fs = data[0] & 15
        if fs == _FS_CTS:
            self._tx_bs = data[1]
            st = data[2]
            # 0x80-0xF0 and 0xFA-0xFF are reserved: the standard says use the longest, 127 ms.
            self._tx_stmin = st if st < 0x80 else 1 if 0xF1 <= st <= 0xF9 else 127
            self._block = 0
            self._t = now_ms - self._tx_stmin  # the first CF may go at once
            self.state = TX_CF
        elif fs == _FS_WAIT:
            self._wait += 1
            if self._wait > self.wft_max:
                self.state = IDLE
                self.errors += 1
            else:
                self._t = now_ms
        else:  # overflow or invalid: the tester cannot take the message
            self.state = IDLE
            self.errors += 1

    def _send_fc(self, fs):
        f = self._f
        f[0] = 0x30 | fs
        f[1] = self.bs
        f[2] = self.stmin_ms
        for i in range(3, 8):
            f[i] = _PAD
        self._tx()  # a flow control lost to a full queue shows as the tester's N_Bs timeout

    # ---- application side --------------------------------------------------------------------
    def take(self):
        """Length of a complete request waiting in `buf` (and mark it taken), or 0."""
        if self.state != READY:
            return 0
        self.state = IDLE
        return self.length

    def send(self, n, now_ms):
        """Start sending buf[0:n] on the response id."""
        self.length = n
        self._t = now_ms
        self._wait = 0
        self.state = TX_SF
        self._start(now_ms)

    def _start(self, now_ms):
        n = self.length
        f = self._f
        buf = self.buf
        if n <= 7:
            f[0] = n
            for i in range(7):
                f[1 + i] = buf[i] if i < n else _PAD
            if self._tx() is not False:
                self.state = IDLE
            return
        f[0] = 0x10 | n >> 8
        f[1] = n & 0xFF
        for i in range(6):
            f[2 + i] = buf[i]
        if self._tx() is not False:
            self._pos = 6
            self._sn = 1
            self._t = now_ms
            self.state = TX_FC

    def send_nrc(self, sid, nrc):
        """A 3-byte negative response (7F sid nrc) as a single frame, leaving `buf` alone: the
        server's "response pending" while it still works on the request in `buf`."""
        f = self._f
        f[0] = 3
        f[1] = 0x7F
        f[2] = sid
        f[3] = nrc
        for i in range(4, 8):
            f[i] = _PAD
        self._tx()

    @property
    def busy(self):
        """True while a message is being received or sent."""
        return self.state == RX or self.state >= TX_FC

    # ---- between cycles ----------------------------------------------------------------------
    def service(self, now_ms):
        """Timeouts and the consecutive frames that are due (at most `burst`)."""
        st = self.state
        if st == RX:
            if ticks_diff(now_ms, self._t) > self.n_cr_ms:
                self.state = IDLE
                self.errors += 1
        elif st == TX_FC:
            if ticks_diff(now_ms, self._t) > self.n_bs_ms:
                self.state = IDLE
                self.errors += 1
        elif st == TX_SF:
            if ticks_diff(now_ms, self._t) > self.n_as_ms:
                self.state = IDLE
                self.errors += 1
            else:
                self._start(now_ms)
        elif st == TX_CF:
            self._send_cfs(now_ms)

    def _send_cfs(self, now_ms):
        f = self._f
        buf = self.buf
        n = self.length
        for _ in range(self.burst):
            stmin = self._tx_stmin
            if stmin and ticks_diff(now_ms, self._t) < stmin:
                return
            p = self._pos
            f[0] = 0x20 | self._sn
            for i in range(7):
                f[1 + i] = buf[p + i] if p + i < n else _PAD
            if self._tx() is False:
                if ticks_diff(now_ms, self._t) > self.n_as_ms:
                    self.state = IDLE
                    self.errors += 1
                return
            self._t = now_ms
            self._pos = p + 7
            self._sn = (self._sn + 1) & 15
            if self._pos >= n:
                self.state = IDLE
                return
            self._block += 1
            if self._tx_bs and self._block >= self._tx_bs:
                self._wait = 0
                self.state = TX_FC
                return

    def _tx(self):
        r = self.board.can_send(self.tx_id, self._f, 8)
        if r is not False:
            self.tx_frames += 1
        return r
