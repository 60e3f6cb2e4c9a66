"""SLCAN over TCP on 127.0.0.1, the sim board's CAN channels (`boards/sim.py` for the vehicle
bus, `boards/charger_slcan.py` for the charger's): a small virtual bus that python-can's slcan
interface reaches through `socket://127.0.0.1:PORT` as it reaches a USB-CAN adapter.

Owns the listening socket and its clients: accepting up to a number of them, reading what they
send into their `SlcanPort` buffers (the channel parses the lines), writing to them, and dropping
a client that hung up or takes nothing for a second (rather than stalling the control loop).
Nothing is allocated per frame after start-up: the reads fill each client's one buffer.
"""

import select
import socket
import time

from boards.lockstep import SlcanPort
from firmware.compat import const

_IPPROTO_TCP = const(6)
_TCP_NODELAY = const(1)
_STALL_LIMIT = const(1000)  # 1 ms waits for a client whose socket takes no byte


class Client(SlcanPort):
    """One connected client: its socket and its SLCAN receive buffer."""

    def __init__(self, sock, rx_size):
        super().__init__(rx_size)
        self.sock = sock


class SlcanServer:
    """The listening socket at 127.0.0.1:`port` and up to `max_clients` clients."""

    def __init__(self, port, max_clients, rx_size):
        self.clients = []
        self._max = max_clients
        self._rx_size = rx_size
        self._poll = select.poll()
        srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(socket.getaddrinfo("127.0.0.1", port)[0][-1])
        srv.listen(max_clients)
        srv.setblocking(False)
        self._srv = srv
        self._poll.register(srv, select.POLLIN)

    def has_line(self):
        """A whole line waits in a client's buffer."""
        for c in self.clients:
            if c.has_line():
                return True
        return False

    def pump(self, timeout_ms):
        """Accept, read and drop for up to `timeout_ms` (0: what is ready now)."""
        for obj, ev in self._poll.ipoll(timeout_ms):
            if obj is self._srv:
                self._accept()
                continue
            c = None
            for k in self.clients:
                if k.sock is obj:
                    c = k
            if c is None:
                continue
            if ev & (select.POLLHUP | select.POLLERR):
                self.drop(c)
                continue
            c.compact()
            try:
                n = c.sock.readinto(c.view[c.fill :])
            except OSError:
                n = None
            if n == 0:
                self.drop(c)
            elif n:
                c.fill += n

    def broadcast(self, data, origin):
        """Write `data` to every open client but `origin` (the one it came from, or None)."""
        for c in self.clients:
            if c is not origin and c.open:
                self.write(c, data)

    def write(self, c, data):
        """All of `data` to client `c`; a non-blocking socket may take part of a write."""
        sent = 0
        stalled = 0
        while sent < len(data):
            try:
                n = c.sock.write(data[sent:] if sent else data)
            except OSError:
                n = -1
            if n is None or n == 0:
                stalled += 1
                if stalled > _STALL_LIMIT:
                    n = -1
                else:
                    time.sleep_ms(1)
                    continue
            if n < 0:
                self.drop(c)
                return
            sent += n

    def drop(self, c):
        """Close client `c` and forget it."""
        try:
            self._poll.unregister(c.sock)
        except (OSError, ValueError):
            pass
        c.sock.close()
        if c in self.clients:
            self.clients.remove(c)

    def _accept(self):
        try:
            sock, _ = self._srv.accept()
        except OSError:
            return
        if len(self.clients) >= self._max:
            sock.close()
            return
        sock.setsockopt(_IPPROTO_TCP, _TCP_NODELAY, 1)
        sock.setblocking(False)
        self.clients.append(Client(sock, self._rx_size))
        self._poll.register(sock, select.POLLIN)
