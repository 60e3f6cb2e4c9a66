"""CPython only: the firmware's BMS on a board whose CAN is a python-can virtual bus, pumped by a
thread (receive path and between-cycle services every millisecond), for tests that drive the
diagnostic server with udsoncan and can-isotp as a workshop tester would.

A reset (UDS 0x11, or the programming session) starts again as main.py would: the programming
server (firmware/uds_prog.py) after 0x10 02, else a new BMS on the same storage.

The board clock is the wall clock plus an offset the test moves (`advance`), so timers such as
S3 and the security delay can be crossed without waiting; control cycles run only when the test
asks (`cycles`), on measurements it chooses. In lock-step (`lockstep=True`) the board clock is
the offset alone, as on the bench's simulated time: it stands still unless the test moves it, so
timeouts are judged to the millisecond. Every frame the BMS sends on the response id is kept
with the board time it went out at (`uds_frames`, `uds_times`).
"""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path

import can
from fw_support import feed

from firmware import app, uds_prog
from firmware.can_codec import UDS_RESPONSE_ID, VCU_REQUEST_ID
from hil.bench.diag import DiagClient
from hil.bench.provision import (
    VCU_KEY_FILE,
    new_record,
    new_vcu_key_record,
    parse_record,
    parse_vcu_key,
)
from sim.vehicle import VcuRequests

_CHANNELS = itertools.count()


class CanBoard:
    """A board on a virtual CAN bus with file storage in a folder."""

    name = "rig"
    realtime = True

    def __init__(
        self,
        bus: can.BusABC,
        storage: Path,
        overrides: dict | None = None,
        lockstep: bool = False,
    ) -> None:
        self.bus = bus
        self.storage = storage
        self.overrides = overrides if overrides is not None else {"cell_count": 16}
        self.rx_dlc = 0
        self.contactors = (0, 0, 0)
        self.sent: list[int] = []
        self.uds_frames: list[bytes] = []  # what the BMS sent on the UDS response id
        self.uds_times: list[int] = []  # and when (board time, ms)
        self.lockstep = lockstep
        self.refuse_tx = False  # the transmit queue is full: can_send returns False
        self.resets: list[bool] = []
        self.t0 = time.monotonic()
        self.offset_ms = 0

    def now(self) -> int:
        if self.lockstep:
            return self.offset_ms
        return int((time.monotonic() - self.t0) * 1000) + self.offset_ms

    def ticks_ms(self) -> int:
        return self.now()

    def config_overrides(self):
        return self.overrides

    def reset_cause(self):
        return 0

    def measure(self, meas, now_ms):
        pass

    def set_contactors(self, neg, pre, pos):
        self.contactors = (neg, pre, pos)

    def set_thermal(self, cooling, heating):
        pass

    def set_balancing(self, mask):
        pass

    def can_send(self, can_id, buf, dlc):
        if self.refuse_tx:
            return False
        self.sent.append(can_id)
        if can_id == UDS_RESPONSE_ID:
            self.uds_frames.append(bytes(buf[:dlc]))
            self.uds_times.append(self.now())
        self.bus.send(
            can.Message(arbitration_id=can_id, data=bytes(buf[:dlc]), is_extended_id=False)
        )

    def can_recv(self, buf):
        msg = self.bus.recv(0)
        if msg is None:
            return -1
        self.rx_dlc = msg.dlc
        buf[: msg.dlc] = msg.data
        return msg.arbitration_id

    def advance(self, ms):
        return False

    def wdt_feed(self):
        pass

    def storage_read(self, name):
        p = self.storage / name
        return p.read_bytes() if p.exists() else None

    def storage_write(self, name, data):
        tmp = self.storage / (name + ".tmp")
        tmp.write_bytes(bytes(data))
        tmp.replace(self.storage / name)

    def storage_path(self, name):
        return str(self.storage / name)

    def reset(self, hard):
        self.resets.append(hard)


class Rig:
    """A BMS, its pump thread and a tester on one virtual bus."""

    def __init__(
        self,
        storage: Path,
        overrides: dict | None = None,
        provision: bool = True,
        lockstep: bool = False,
    ):
        channel = f"uds-rig-{next(_CHANNELS)}"
        self.bms_bus = can.Bus(interface="virtual", channel=channel, receive_own_messages=False)
        self.tester_bus = can.Bus(interface="virtual", channel=channel, receive_own_messages=False)
        self.storage = storage
        storage.mkdir(parents=True, exist_ok=True)
        self.secret = None
        if provision:
            rec = new_record("RIG-0001")
            (storage / "provision").write_bytes(rec)
            self.secret = parse_record(rec)[1]
        key_file = storage / VCU_KEY_FILE
        if not key_file.exists():
            key_file.write_bytes(new_vcu_key_record())
        # The vehicle's requests, signed; the freshness file lets a restarted rig go on.
        self.vcu = VcuRequests(parse_vcu_key(key_file.read_bytes()), storage / "vcu_freshness")
        self.board = CanBoard(self.bms_bus, storage, overrides, lockstep)
        self.lock = threading.Lock()
        self.bms = app.build(self.board)
        self.prog = None  # the programming server while one runs (uds_prog)
        self._resets = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()
        self.clients: list[DiagClient] = []

    def _pump(self) -> None:
        while not self._stop.is_set():
            with self.lock:
                if self.prog is not None:
                    uds_prog.step(self.board, self.prog)
                else:
                    now = self.board.now()
                    self.bms.comm.poll(now)
                    self.bms.run_services(self.board.now())
                if len(self.board.resets) > self._resets:
                    self._resets = len(self.board.resets)
                    self._restart()
            time.sleep(0.0005)

    def _restart(self) -> None:
        # What main.py does at a start: the programming server once after 0x10 02, else the BMS.
        if self.board.storage_read("progmode") == b"1":
            self.board.storage_write("progmode", b"0")
            self.prog = uds_prog.start(self.board)
        else:
            self.prog = None
            self.bms = app.build(self.board)

    def tester(self, **kwargs) -> DiagClient:
        """A new tester (closing the previous ones: one notifier per bus)."""
        for c in self.clients:
            c.close()
        self.clients.clear()
        kwargs.setdefault("secret", self.secret)
        kwargs.setdefault("cell_count", self.bms.cfg.cell_count)
        c = DiagClient(self.tester_bus, **kwargs).open()
        self.clients.append(c)
        return c

    def cycles(
        self,
        n: int = 1,
        fresh: bool = True,
        vcu: int | None = None,
        link_mv: int | None = None,
        **feed_kwargs,
    ) -> None:
        """Run `n` control cycles 100 ms apart on uniform fresh readings (fw_support.feed;
        `fresh=False`: no new readings, they go stale), the contactor feedback following the
        last command, the link voltage the pack's unless `link_mv`. `vcu` 0 or 1: a valid
        VCU_Request with that close request before each."""
        for _ in range(n):
            with self.lock:
                self.board.offset_ms += 100
                now = self.board.now()
                if vcu is not None:
                    buf = self.vcu.frame(vcu)
                    self.tester_bus.send(
                        can.Message(arbitration_id=VCU_REQUEST_ID, data=buf, is_extended_id=False)
                    )
                    self.bms.comm.poll(now)
                if fresh:
                    neg, pre, pos = self.board.contactors
                    kw = {"feedback": neg | pre << 1 | pos << 2, **feed_kwargs}
                    feed(self.bms.meas, self.bms.cfg, now_ms=now, **kw)
                    meas = self.bms.meas
                    if link_mv is not None:
                        meas.set_pack(meas.current_ma, meas.pack_mv, link_mv, now)
                        meas.evaluate(now)
                self.bms.guarded_cycle(now)

    def advance(self, ms: int) -> None:
        with self.lock:
            self.board.offset_ms += ms

    def rebuild(self) -> None:
        """A reset: a new BMS on the same storage."""
        with self.lock:
            self.bms = app.build(self.board)

    def close(self) -> None:
        for c in self.clients:
            c.close()
        self._stop.set()
        self._thread.join(2)
        self.tester_bus.shutdown()
        self.bms_bus.shutdown()
