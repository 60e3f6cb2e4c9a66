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

import select
import socket

from boards.lockstep import _HEX, SlcanPort, _hexdigit
from firmware.compat import const

_MAX_CLIENTS = const(2)
_RX_BUF = const(1024)
_TX_BUF = const(1024)
_CR = const(13)


class _Client(SlcanPort):
    def __init__(self, sock):
        super().__init__(_RX_BUF)
        self.sock = sock


class ChargerBus:
    """SLCAN-over-TCP server for 29-bit frames; see the module docstring."""

    def __init__(self, port):
        self._clients = []
        self._poll = select.poll()
        srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(socket.getaddrinfo("127.0.0.1", port)[0][-1])
        srv.listen(_MAX_CLIENTS)
        srv.setblocking(False)
        self._srv = srv
        self._poll.register(srv, select.POLLIN)
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
        for c in self._clients:
            cid = self._next(c, out)
            if cid >= 0:
                return cid
        self.pump(0)
        for c in self._clients:
            cid = self._next(c, out)
            if cid >= 0:
                return cid
        return -1

    def has_line(self):
        for c in self._clients:
            if c.has_line():
                return True
        return False

    def flush(self):
        """Write the queued frames to every open client."""
        if self._fill:
            self._broadcast(self._txview[: self._fill], None)
            self._fill = 0

    # ---- sockets ---------------------------------------------------------------------------
    def pump(self, timeout_ms):
        for obj, ev in self._poll.ipoll(timeout_ms):
            if obj is self._srv:
                self._accept()
                continue
            c = None
            for k in self._clients:
                if k.sock is obj:
                    c = k
            if c is None:
                continue
            if ev & (select.POLLHUP | select.POLLERR):
                self._drop(c)
                continue
            c.compact()
            try:
                n = c.sock.readinto(c.view[c.fill :])
            except OSError:
                n = None
            if n == 0:
                self._drop(c)
            elif n:
                c.fill += n

    def _accept(self):
        try:
            sock, _ = self._srv.accept()
        except OSError:
            return
        if len(self._clients) >= _MAX_CLIENTS:
            sock.close()
            return
        sock.setsockopt(6, 1, 1)  # IPPROTO_TCP, TCP_NODELAY
        sock.setblocking(False)
        self._clients.append(_Client(sock))
        self._poll.register(sock, select.POLLIN)

    def _drop(self, c):
        try:
            self._poll.unregister(c.sock)
        except (OSError, ValueError):
            pass
        c.sock.close()
        if c in self._clients:
            self._clients.remove(c)

    def _broadcast(self, data, origin):
        for c in self._clients:
            if c is origin or not c.open:
                continue
            sent = 0
            tries = 0
            while sent < len(data) and tries < 1000:
                try:
                    n = c.sock.write(data[sent:] if sent else data)
                except OSError:
                    self._drop(c)
                    break
                if not n:
                    tries += 1
                    continue
                sent += n

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
            if len(self._clients) > 1:
                self._broadcast(c.view[start : end + 1], c)
            return cid & 0x1FFFFFFF

    def _command(self, c, cmd):
        if cmd == 79 or cmd == 76:  # 'O' open, 'L' listen-only
            c.open = True
        elif cmd == 67:  # 'C' close
            c.open = False
        elif cmd == 86:  # 'V' version
            self._reply(c, b"V1013\r")
            return
        elif cmd == 78:  # 'N' serial number
            self._reply(c, b"NCGCH\r")
            return
        elif cmd == 70:  # 'F' status flags
            self._reply(c, b"F00\r")
            return
        self._reply(c, b"\r")  # bit rate (S5 = 250 kbit/s), timestamps, filters: accepted

    def _reply(self, c, data):
        try:
            c.sock.write(data)
        except OSError:
            self._drop(c)
