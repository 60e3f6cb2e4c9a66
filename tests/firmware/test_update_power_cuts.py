"""CPython only: a power loss at any byte of a firmware update leaves a board that boots the old
image. The programming server (firmware/uds_prog.py) runs in-process on the sim board's own
storage code (boards/lockstep.py: files, records written to a temporary file and renamed), driven
by can-isotp's transport layer step by step; every byte written to the storage from the request
download on (slot files, manifest, boot record) counts, and at byte N the power goes: that write
stops after its first bytes, nothing more reaches the storage. Then the board starts again as
main.py would (bootrec.choose), and a complete update afterwards still goes through.
"""

from __future__ import annotations

import builtins
import random
import struct
from collections import deque
from pathlib import Path

import isotp
import pytest

from boards import lockstep
from firmware import bootrec, slots, uds_prog
from firmware import can_codec as c
from hil.bench.provision import build_image, new_record, parse_record, seed_key


class PowerCut(BaseException):
    """The supply is gone: nothing the firmware does after it counts (not an Exception, so no
    handler of the firmware's catches it)."""


class Supply:
    """The bytes the storage may still take before the cut (None: no cut), and those taken."""

    def __init__(self, budget: int | None) -> None:
        self.budget = budget
        self.written = 0
        self.files: list = []  # type: ignore[type-arg]

    def take(self, n: int) -> int:
        if self.budget is None:
            self.written += n
            return n
        k = max(0, min(n, self.budget - self.written))
        self.written += k
        return k


class _CutFile:
    def __init__(self, f, supply: Supply) -> None:  # type: ignore[no-untyped-def]
        self._f = f
        self._supply = supply

    def write(self, data) -> int:  # type: ignore[no-untyped-def]
        data = bytes(data)
        k = self._supply.take(len(data))
        self._f.write(data[:k])  # unbuffered: what is taken is on the storage
        if k < len(data):
            raise PowerCut()
        return k

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return getattr(self._f, name)

    def __enter__(self) -> _CutFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self._f.close()


def cutting_open(supply: Supply):  # type: ignore[no-untyped-def]
    def _open(path, mode="r", *args, **kwargs):  # type: ignore[no-untyped-def]
        if "w" in mode or "a" in mode:
            f = builtins.open(path, mode, buffering=0)
            supply.files.append(f)
            return _CutFile(f, supply)
        return builtins.open(path, mode, *args, **kwargs)

    return _open


class SimStorageBoard:
    """What the programming server needs of a board, with the sim board's storage."""

    name = "sim"
    storage_read = lockstep.LockstepBoard.storage_read
    storage_write = lockstep.LockstepBoard.storage_write
    storage_path = lockstep.LockstepBoard.storage_path

    def __init__(self, folder: Path) -> None:
        self._storage = str(folder)
        self.now = 0
        self.out: deque[isotp.CanMessage] = deque()
        self.rx_dlc = 0

    def ticks_ms(self) -> int:
        return self.now

    def set_contactors(self, neg: int, pre: int, pos: int) -> None:
        assert neg == pre == pos == 0

    def set_balancing(self, mask: bytearray) -> None:
        pass

    def can_send(self, can_id: int, buf: bytearray, dlc: int) -> None:
        self.out.append(isotp.CanMessage(arbitration_id=can_id, dlc=dlc, data=bytes(buf[:dlc])))

    def can_recv(self, buf: bytearray) -> int:
        return -1

    def reset(self, hard: bool) -> None:
        pass


class Client:
    """can-isotp's transport layer and the programming server, stepped in turn (no threads)."""

    def __init__(self, board: SimStorageBoard) -> None:
        self.board = board
        self.srv = uds_prog.start(board)
        address = isotp.Address(
            isotp.AddressingMode.Normal_11bits,
            txid=c.UDS_PHYSICAL_REQUEST_ID,
            rxid=c.UDS_RESPONSE_ID,
        )
        self.tp = isotp.TransportLayerLogic(
            rxfn=self._rx,
            txfn=self._tx,
            address=address,
            params={"stmin": 0, "blocksize": 0, "tx_padding": 0xCC},
        )

    def _rx(self, timeout: float) -> isotp.CanMessage | None:
        return self.board.out.popleft() if self.board.out else None

    def _tx(self, msg: isotp.CanMessage) -> None:
        data = bytearray(msg.data)
        self.srv.tp.on_frame(msg.arbitration_id, data, len(data), self.board.now)

    def request(self, payload: bytes) -> bytes:
        """The final response to `payload` (past any 0x78 response pending)."""
        self.tp.send(payload)
        for _ in range(100_000):
            self.tp.process()
            self.srv.service(self.board.now)
            self.tp.process()
            while self.tp.available():
                resp = self.tp.recv()
                if resp[0] == 0x7F and resp[2] == 0x78:
                    continue
                return resp
            self.board.now += 1
        raise AssertionError("no response")

    def unlock(self, secret: bytes) -> None:
        seed = self.request(b"\x27\x01")[2:]
        assert self.request(b"\x27\x02" + seed_key(secret, seed)) == b"\x67\x02"

    def update(self, image: bytes) -> bool:
        """0x34, 0x36 blocks, 0x37, check routine: True when the image switched."""
        r = self.request(b"\x34\x00\x44" + struct.pack(">II", 0, len(image)))
        assert r[0] == 0x74, r.hex()
        block = struct.unpack(">H", r[2:4])[0] - 2
        for seq, pos in enumerate(range(0, len(image), block), 1):
            r = self.request(bytes((0x36, seq & 0xFF)) + image[pos : pos + block])
            assert r[0] == 0x76, r.hex()
        assert self.request(b"\x37") == b"\x77"
        return self.request(b"\x31\x01\x02\x02") == b"\x71\x01\x02\x02\x00"


OLD_APP = b"\x4d\x06old" + bytes(5000)
NEW_APP = b"\x4d\x06new" + bytes(9000)


def _image(secret: bytes, app: bytes) -> bytes:
    return build_image(
        {"firmware/__init__.mpy": b"M\x06" + bytes(300), "firmware/app.mpy": app}, secret
    )


def _storage(folder: Path, old_in_slot: bool) -> bytes:
    """A provisioned board: the factory image, or slot_a good and active (an earlier update)."""
    folder.mkdir(parents=True)
    rec = new_record("CUT-0001")
    (folder / "provision").write_bytes(rec)
    secret = parse_record(rec)[1]
    if old_in_slot:
        board = SimStorageBoard(folder)
        t = Client(board)
        t.unlock(secret)
        assert t.update(_image(secret, OLD_APP))
        bootrec.confirm(board)
        assert bootrec.read(board) == [1, 1, 0, 0]
    return secret


def _boots(folder: Path) -> str | None:
    """What main.py's start picks: the slot folder, None for the factory image."""
    return bootrec.choose(SimStorageBoard(folder))


def _cut_update(folder: Path, secret: bytes, image: bytes, supply: Supply, monkeypatch) -> str:
    """ "switched", "refused" or "cut"."""
    board = SimStorageBoard(folder)
    t = Client(board)
    t.unlock(secret)  # before the cut: the attempt counter is no part of the update
    with monkeypatch.context() as m:
        m.setattr(slots, "open", cutting_open(supply), raising=False)
        m.setattr(lockstep, "open", cutting_open(supply), raising=False)
        try:
            return "switched" if t.update(image) else "refused"
        except PowerCut:
            for f in supply.files:  # the dead board's open files: unbuffered, nothing more to write
                f.close()
            return "cut"


@pytest.mark.parametrize("old_in_slot", [False, True], ids=["factory", "slot_a"])
def test_a_cut_at_any_byte_of_an_update_boots_the_old_image(tmp_path, monkeypatch, old_in_slot):
    # How many bytes a whole update writes, on a board like the ones cut below.
    ref = tmp_path / "ref"
    secret = _storage(ref, old_in_slot)
    image = _image(secret, NEW_APP)
    full = Supply(None)
    assert _cut_update(ref, secret, image, full, monkeypatch) == "switched"
    total = full.written
    assert total > len(NEW_APP)
    # Every block boundary of the transfer and of the boot record, and 40 offsets between.
    rng = random.Random(14)
    offsets = {0, 1, total - 12, total - 6, total - 1}
    offsets |= {b + d for b in range(0, total, 512) for d in (-1, 0, 1) if 0 <= b + d < total}
    offsets |= {rng.randrange(total) for _ in range(40)}
    for n in sorted(offsets):
        folder = tmp_path / f"cut{n}"
        secret = _storage(folder, old_in_slot)
        old_files = _files(folder / "slot_a") if old_in_slot else {}
        before = bootrec.read(SimStorageBoard(folder))
        image = _image(secret, NEW_APP)
        assert _cut_update(folder, secret, image, Supply(n), monkeypatch) == "cut", n
        # The restart: the old image, its files as they were.
        boots = _boots(folder)
        if old_in_slot:
            assert boots == str(folder / "slot_a"), n
            assert _files(folder / "slot_a") == old_files, n
        else:
            assert boots is None, n  # the factory image
        assert bootrec.read(SimStorageBoard(folder)) == before, n
        # And the board takes a complete update afterwards.
        assert _cut_update(folder, secret, image, Supply(None), monkeypatch) == "switched", n
        assert bootrec.read(SimStorageBoard(folder))[2] == 1  # the new image on trial
    assert len(offsets) > 60


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
