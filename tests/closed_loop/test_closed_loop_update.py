"""Firmware update over CAN on the sim board (the whole firmware on the MicroPython unix port, in
real time), driven by udsoncan over can-isotp over python-can's slcan backend:

- a power loss (the process killed, SIGKILL) while the BMS writes a block of a transfer (the
  tester's threads stopped first: nothing of the tester's outlives the link) leaves a board that
  starts the old image, and a complete update afterwards switches to the new one at the reset,
  which confirms itself after its first control cycles;
- an image that does not start (its app module raises at import) is rolled back to the good
  image after bootrec.MAX_TRIES starts.

About 20 s per complete transfer of the 70 KB image (python-can's slcan backend over TCP).
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from pathlib import Path

import can
import pytest
import udsoncan

import firmware
from firmware import bootrec
from hil.bench.diag import DiagClient
from hil.bench.dut import DutError, UnixPortDut
from hil.bench.image import bundle_image
from hil.bench.provision import read_key_file

pytestmark = pytest.mark.unix_only
NEW = firmware.__version__ + "+update"


class Board:
    """The DUT and a tester on it, reconnected after every start."""

    def __init__(self, heap: str, bundle_board: str, workdir: Path) -> None:
        self.bundle_board = bundle_board
        # A work folder of the test's: the storage (slots, boot record) must outlive a start
        # that fails, as a board's flash outlives a crash.
        self.dut = UnixPortDut(
            {"cell_count": 16},
            realtime=True,
            heap=heap,
            bundle_board=bundle_board,
            workdir=workdir,
        )
        self.bus: can.BusABC | None = None
        self.diag: DiagClient | None = None

    def start(self) -> DiagClient:
        self.dut.start()
        return self.connect()

    def connect(self) -> DiagClient:
        self.bus = can.Bus(interface="slcan", channel=self.dut.channel, sleep_after_open=0)
        self.diag = DiagClient(self.bus, secret=read_key_file(self.dut.key_file), cell_count=16)
        self.diag.open()
        try:
            self.diag.wait_ready(5.0)
        except TimeoutError:
            if "too little heap" in self.dut.console():
                pytest.skip("this board's heap budget leaves no room for diagnostics")
            raise
        return self.diag

    def disconnect(self) -> None:
        # After a power cut the bus is gone: closing it may fail, which is no test result.
        try:
            if self.diag is not None:
                self.diag.close()
            if self.bus is not None:
                self.bus.shutdown()
        except (can.CanError, OSError):
            pass
        self.diag = None
        self.bus = None

    def restart(self) -> DiagClient:
        self.disconnect()
        self.dut.stop()
        return self.start()

    def record(self) -> list[int]:
        path = self.dut.storage / "boot"
        return bootrec.read(_Storage(path.read_bytes() if path.exists() else None))


class _Storage:
    def __init__(self, data: bytes | None) -> None:
        self.data = data

    def storage_read(self, name: str) -> bytes | None:
        return self.data


@pytest.fixture
def board(bench_options: dict, tmp_path: Path) -> Iterator[Board]:
    """The DUT the options select (the sim bundle, or a board's bundle under its heap)."""
    b = Board(bench_options["heap"], bench_options["bundle_board"], tmp_path)
    try:
        yield b
    finally:
        b.disconnect()
        b.dut.stop()
        b.dut.cleanup()


def _wait_confirmed(board: Board, timeout_s: float = 10.0) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while board.record()[2] and time.monotonic() < deadline:
        time.sleep(0.2)
    return board.record()


def _cut_during_block(board: Board, image: bytes, cut_block: int, delay_s: float) -> None:
    """Transfer `image` up to block `cut_block`, send that one, stop the tester's threads (the
    BMS is writing the block now) and cut the power `delay_s` later."""
    diag = board.diag
    assert diag is not None
    diag.unlock("programming")
    loc = udsoncan.MemoryLocation(0, len(image), address_format=32, memorysize_format=32)
    block = diag.client.request_download(loc).service_data.max_length - 2
    for seq, pos in enumerate(range(0, len(image), block), 1):
        data = image[pos : pos + block]
        if seq == cut_block:
            diag.conn.send(bytes((0x36, seq & 0xFF)) + data)  # returns once every frame is out
            diag.close()  # no tester thread is left to write to the link the cut breaks
            time.sleep(delay_s)
            assert board.dut.proc is not None
            board.dut.proc.kill()
            return
        diag.client.transfer_data(seq & 0xFF, data)
    raise AssertionError(f"the image has no block {cut_block}")


def test_power_cuts_during_a_transfer_leave_the_old_image(board: Board) -> None:
    diag = board.start()
    image = bundle_image(board.bundle_board, read_key_file(board.dut.key_file), version=NEW)
    blocks = -(-len(image) // 4093)
    rng = random.Random(14)
    for _ in range(3):
        # Somewhere in the writing of a block (8 steps of 512 bytes) or just after it.
        _cut_during_block(board, image, rng.randrange(1, blocks + 1), rng.uniform(0.0, 0.05))
        diag = board.restart()
        assert diag.read("version") == firmware.__version__
        assert board.record() == [0, 0, 0, 0]
    progress_seen: list[int] = []
    assert diag.flash(image, lambda done, total: progress_seen.append(done))
    assert progress_seen[-1] == len(image)
    diag.wait_ready()
    assert diag.read("version") == NEW
    assert _wait_confirmed(board) == [1, 1, 0, 0]  # slot a started, confirmed, now the good one
    diag = board.restart()  # and it stays after a power cycle
    assert diag.read("version") == NEW


BROKEN_APP = 'raise RuntimeError("this image does not start")\n'


def test_an_image_that_does_not_start_is_rolled_back(board: Board) -> None:
    diag = board.start()
    image = bundle_image(
        board.bundle_board, read_key_file(board.dut.key_file), replace={"app": BROKEN_APP}
    )
    assert diag.flash(image)
    starts = 0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        time.sleep(0.5)
        if board.dut.alive():
            break
        # The broken image ended the process (a board's watchdog would reset it): start again.
        board.disconnect()
        board.dut.stop()
        starts += 1
        try:
            board.dut.start()
        except DutError:
            pass  # it died again before it listened: the next pass restarts it
    assert board.dut.alive() and starts == bootrec.MAX_TRIES
    diag = board.connect()
    assert diag.read("version") == firmware.__version__
    assert board.record() == [0, 0, 0, 0]
    assert "failed 2 starts" in board.dut.console()
