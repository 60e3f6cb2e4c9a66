"""The sim board's second CAN channel: the DC charger bus (GB/T 27930, 250 kbit/s, 29-bit ids)
served as its own SLCAN endpoint over TCP (`socket://127.0.0.1:CHARGER_PORT`).

Frames are SLCAN extended data frames, `T<id:8><dlc><data>\\r`; python-can's slcan interface and
cantools reach it as they reach a USB adapter on a charger's CAN. Like the vehicle endpoint it is
a small bus: what one client sends reaches the firmware and every other open client, what the
firmware sends reaches every open client. The board exposes it as `charger_send(can_id, buf, dlc)`,
`charger_recv(buf) -> id or -1` and `charger_dlc`; queued frames are written by `flush()`, which
the board calls before it flushes the vehicle bus, so the bench finds them once the tick is
acknowledged. Nothing is allocated per frame after start-up (the socket reads fill one buffer).
"""

from boards.lockstep import _HEX, _hexdigit, command_reply
from boards.slcan_tcp import SlcanServer
from firmware.compat import const

_MAX_CLIENTS = const(2)
_RX_BUF = const(1024)
_TX_BUF = const(1024)
_CR = const(13)
_SERIAL = b"NCGCH\r"  # the adapter serial number the endpoint answers 'N' with


class ChargerBus:
    """SLCAN-over-TCP server for 29-bit frames; see the module docstring."""

    def __init__(self, port):
        self._bus = SlcanServer(port, _MAX_CLIENTS, _RX_BUF)
        self._tx = bytearray(_TX_BUF)
        self._txview = memoryview(self._tx)
        self._fill = 0
        self.dlc = 0
        self.rx_frames = 0
        self.tx_frames = 0
        print("cellguard sim board: charger CAN (SLCAN, 29-bit) at socket://127.0.0.1:" + str(port))

    # ---- firmware side ---------------------------------------------------------------------
    def send(self, can_id, buf, dlc):
        """Queue one extended frame; False when the queue is full even after a flush."""
        if self._fill > len(self._tx) - 27:
            self.flush()
            if self._fill > len(self._tx) - 27:
                return False
        tx = self._tx
        p = self._fill
        tx[p] = 84  # 'T'
        for k in range(8):
            tx[p + 1 + k] = _hexdigit(can_id >> (28 - 4 * k))
        tx[p + 9] = 48 + dlc
        p += 10
        for i in range(dlc):
            b = buf[i]
            tx[p] = _hexdigit(b >> 4)
            tx[p + 1] = _hexdigit(b)
            p += 2
        tx[p] = _CR
        self._fill = p + 1
        self.tx_frames += 1
        return True

    def recv(self, out):
        """The next frame from a client into `out`; its id, or -1."""
        clients = self._bus.clients
        for c in clients:
            cid = self._next(c, out)
            if cid >= 0:
                return cid
        self._bus.pump(0)
        for c in clients:
            cid = self._next(c, out)
            if cid >= 0:
                return cid
        return -1

    def has_line(self):
        return self._bus.has_line()

    def pump(self, timeout_ms):
        """Accept and read the clients for up to `timeout_ms`."""
        self._bus.pump(timeout_ms)

    def flush(self):
        """Write the queued frames to every open client."""
        if self._fill:
            self._bus.broadcast(self._txview[: self._fill], None)
            self._fill = 0

    def _next(self, c, out):
        buf = c.buf
        while True:
            end = buf.find(b"\r", c.pos, c.fill)
            if end < 0:
                return -1
            start = c.pos
            c.pos = end + 1
            if end == start:
                continue
            kind = buf[start]
            if kind != 84:  # not 'T': a command, or an 11-bit frame (not this bus)
                if kind != 116:
                    self._command(c, kind)
                continue
            dlc = buf[start + 9] - 48 if end - start >= 10 else -1
            if dlc < 0 or dlc > 8 or end - start != 10 + 2 * dlc or not c.open:
                continue
            h = _HEX
            cid = 0
            for k in range(8):
                cid = cid << 4 | h[buf[start + 1 + k]]
            p = start + 10
            for i in range(dlc):
                out[i] = (h[buf[p]] << 4) | h[buf[p + 1]]
                p += 2
            self.dlc = dlc
            self.rx_frames += 1
            if len(self._bus.clients) > 1:
                self._bus.broadcast(c.view[start : end + 1], c)
            return cid & 0x1FFFFFFF

    def _command(self, c, cmd):
        self._bus.write(c, command_reply(c, cmd, _SERIAL))
