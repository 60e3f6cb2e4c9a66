"""The programming server: UDS in the programming session, as an ECU's bootloader runs it.

Owns the firmware download (0x34 request download, 0x36 transfer data, 0x37 exit) into the
inactive slot and the routine that checks it (0x31 0202: hash and MAC of what is on the
filesystem, then the switch at the next reset; firmware/slots.py). main.py runs it instead of
the BMS application after the application accepted 0x10 02: `run(board)` keeps every contactor
open, answers the bench's lock-step ticks, feeds the watchdog and serves the tester. The other
services are the application server's (firmware/uds.py), limited to what needs no BMS: session
control, tester present, ECU reset, security access, identification DIDs. Leaving the
programming session (0x10 01 or 03, 0x11, or S3 without a request) restarts into the
application.

Transfer: blocks of up to 4093 data bytes (maxNumberOfBlockLength 4095, the ISO-TP buffer), the
block sequence counter from 1, wrapping to 0; a block repeated after a lost response is answered
again without being written twice. Erasing, writing and checking answer 0x78 first and run in
bounded steps (512 bytes written or hashed per step).
"""

import struct

from . import bootrec, slots
from . import can_codec as c
from . import uds_table as T
from .compat import const
from .isotp import MAX_LEN
from .uds import Uds

_BLOCK_LEN = const(4095)  # maxNumberOfBlockLength for 0x36: the ISO-TP buffer
_WRITE_STEP = const(512)  # bytes of a 0x36 block written per service call
_CHECK_STEPS = const(8)
_C_ERASE = const(2)
_C_WRITE = const(3)
_C_CHECK = const(5)
_PROG = const(2)


class ProgServer(Uds):
    """See the module docstring."""

    def __init__(self, board, buf):
        Uds.__init__(self, None, self, buf, board)
        self.tp.bs = 32  # fewer flow-control round trips for 4 KB blocks
        self.session = _PROG
        self.config_pending = 0
        self._dl = None  # slots.Download in progress
        self._image = 0  # slot of the last completed download
        self._chk = None
        self._check_result = -1
        self._bsc = 1

    @property
    def closed(self):
        return 0  # run() holds every contactor open

    def _to_default(self):
        self._reset = 3  # S3 ran out: back to the application

    def _flush(self, now):
        self._store.flush(now)

    def _session(self, n):
        sub = self._sub(n, 1, 3)
        if sub < 0:
            return sub
        if sub != _PROG:
            self._reset = 3  # leaving programming: restart into the application
        self.sec.lock()
        buf = self.tp.buf
        buf[0] = 0x50
        struct.pack_into(">HH", buf, 2, 50, 500)
        return 6

    def _read_did(self, did, buf, p):
        i = T.find(T.DIDS, f"{did:04X}")
        if i < 0 or T.DIDS[i + 5] != "S":
            return -1  # live data needs the application
        return Uds._read_did(self, did, buf, p)

    def _abort_download(self):
        if self._dl is not None:
            self._dl.close()
            self._dl = None

    def _program(self, sid, n):
        if sid == 0x34:
            return self._request_download(n)
        if sid == 0x36:
            return self._transfer(n)
        return self._exit_transfer(n)

    def _run_routine(self, rid, sub, n):
        if sub == 2:
            return -0x12  # the check cannot be stopped
        if n != 4:
            return -0x13
        buf = self.tp.buf
        if sub == 3:
            if self._check_result < 0:
                return -0x24
            buf[4] = self._check_result
            return 5
        if not self._image:
            return -0x24
        self._chk = slots.Check(self.board, self._image)
        return self._pending(_C_CHECK, 0x71, 4)

    # ---- download (0x34 0x36 0x37) -----------------------------------------------------------
    def _request_download(self, n):
        buf = self.tp.buf
        if n < 3:
            return -0x13
        alfid = buf[2]
        al = alfid & 15
        sl = alfid >> 4
        if n != 3 + al + sl:
            return -0x13
        if buf[1] != 0 or not 1 <= al <= 4 or not 1 <= sl <= 4:
            return -0x31
        addr = 0
        for i in range(al):
            addr = addr << 8 | buf[3 + i]
        size = 0
        for i in range(sl):
            size = size << 8 | buf[3 + al + i]
        if addr != 0 or not 80 < size <= slots.MAX_IMAGE:
            return -0x31
        if not self.sec.unlocked:
            return -0x33
        slot = bootrec.target(self.board)
        if not slot or bootrec.slot_path(self.board, slot) is None or self._dl is not None:
            return -0x70
        self._cpos = slot
        self._cend = size
        return self._pending(_C_ERASE, 0x74, 1)

    def _transfer(self, n):
        buf = self.tp.buf
        dl = self._dl
        if dl is None:
            return -0x24
        if n < 2:
            return -0x13
        bsc = buf[1]
        buf[0] = 0x76
        if bsc == (self._bsc - 1) & 0xFF and dl.received:
            return 2  # the last block again (its response was lost): already written
        if bsc != self._bsc:
            return -0x73
        if dl.received + n - 2 > dl.size:
            return -0x71
        self._cpos = 2
        self._cend = n
        return self._pending(_C_WRITE, 0x76, 2)

    def _exit_transfer(self, n):
        dl = self._dl
        if dl is None:
            return -0x24
        if n != 1:
            return -0x13
        if not dl.complete:
            return -0x24
        dl.close()
        self._image = dl.slot
        self._dl = None
        self._check_result = -1
        self.tp.buf[0] = 0x77
        return 1

    def _more(self, kind, now):
        buf = self.tp.buf
        if kind == _C_ERASE:
            self._dl = slots.Download(self.board, self._cpos, self._cend)
            self._bsc = 1
            buf[1] = 0x20
            struct.pack_into(">H", buf, 2, _BLOCK_LEN)
            return 4
        if kind == _C_WRITE:
            end = min(self._cpos + _WRITE_STEP, self._cend)
            if not self._dl.write(buf, self._cpos, end):
                return -0x72
            self._cpos = end
            if end < self._cend:
                return 0
            self._bsc = (self._bsc + 1) & 0xFF
            return 2
        for _ in range(_CHECK_STEPS):
            if self._chk.step(self.sec):
                self._check_result = 0 if self._chk.ok else 1
                buf[4] = self._check_result
                return 5
        return 0


def start(board):
    """Contactors and balancing off, and a programming server on `board`."""
    board.set_contactors(0, 0, 0)
    board.set_balancing(bytearray(24))
    srv = ProgServer(board, bytearray(MAX_LEN))
    srv.last_ms = board.ticks_ms()
    srv.rx = bytearray(8)
    srv.out = [0, 0]
    return srv


def step(board, srv):
    """Take the waiting frames (diagnostic requests; lock-step ticks, answered at once) and give
    the server its turn; True while it has frames to send or work pending."""
    rx = srv.rx
    out = srv.out
    while True:
        cid = board.can_recv(rx)
        if cid < 0:
            break
        now = board.ticks_ms()
        if cid == c.UDS_PHYSICAL_REQUEST_ID or cid == c.UDS_FUNCTIONAL_REQUEST_ID:
            srv.tp.on_frame(cid, rx, board.rx_dlc, now)
        elif cid == c.SIM_TICK_ID and board.rx_dlc == 8:
            c.decode_sim_tick(rx, out)
            if board.advance(out[1]):
                c.encode_bms_cycle_diag(rx, out[0], 0, 0)
                board.can_send(c.BMS_CYCLE_DIAG_ID, rx, c.BMS_CYCLE_DIAG_DLC)
    srv.service(board.ticks_ms())
    return srv.busy


def run(board):
    """Serve the programming session until a reset (never returns on a board)."""
    srv = start(board)
    print("cellguard: programming session")
    while True:
        busy = step(board, srv)
        board.wdt_feed()
        board.wait(0 if busy else 20)
