"""VCU_Request integrity (CRC-8 SAE J1850 over the data ID and bytes 0..6, alive counter +1),
through Comm on a minimal board. Runs under CPython and MicroPython.
"""

from firmware import can_codec, config
from firmware import can_codec_peer as peer  # the tester's and VCU's encoders
from firmware.comm import Comm, crc8_j1850
from firmware.data import Data


class Board:
    """Frames in, frames out; nothing else."""

    def __init__(self):
        self.rx = []
        self.sent = []
        self.rx_dlc = 8

    def can_recv(self, buf):
        if not self.rx:
            return -1
        can_id, data = self.rx.pop(0)
        for i in range(8):
            buf[i] = data[i]
        return can_id

    def can_send(self, can_id, buf, dlc):
        self.sent.append((can_id, bytes(buf)))

    def advance(self, ms):
        return True


def frame(close, alive, reset=0, charge=0, crc_error=0):
    buf = bytearray(8)
    peer.encode_vcu_request(buf, close, reset, charge, alive & 15, 0)
    buf[7] = crc8_j1850(bytes((0x00, 0x03)) + bytes(buf), 9) ^ crc_error
    return bytes(buf)


def _comm():
    cfg = config.load()
    board = Board()
    return board, Comm(board, cfg, Data(cfg))


def _send(board, comm, data, now_ms=0):
    board.rx.append((can_codec.VCU_REQUEST_ID, data))
    comm.poll(now_ms)


def test_crc_is_sae_j1850():
    # The catalogue check value of CRC-8/SAE-J1850 (init 0xFF, xor-out 0xFF, poly 0x1D).
    assert crc8_j1850(b"123456789", 9) == 0x4B
    # Continuing a result (xor 0xFF) equals one pass over both parts.
    head = crc8_j1850(b"1234", 4) ^ 0xFF
    assert crc8_j1850(b"56789", 5, head) == 0x4B


def test_the_first_frame_only_sets_the_counter_the_next_in_sequence_is_taken():
    board, comm = _comm()
    _send(board, comm, frame(1, 3, charge=1), 100)
    assert comm.vcu_close == 0 and comm.vcu_stale(100), "a lone frame of any counter: no close"
    assert comm.vcu_errors == 0
    _send(board, comm, frame(1, 4, charge=1), 200)
    assert comm.vcu_close == 1 and comm.vcu_charge == 1 and not comm.vcu_stale(200)
    assert comm.vcu_errors == 0 and comm.vcu_bad == 0


def test_a_bad_crc_is_rejected_and_counted():
    for bit in (1, 2, 4, 8, 16, 32, 64, 128):
        board, comm = _comm()
        _send(board, comm, frame(1, 3, crc_error=bit))
        assert comm.vcu_close == 0 and comm.vcu_stale(0), "never a close"
        assert comm.vcu_errors == 1 and comm.vcu_bad == 1


def test_a_flipped_payload_bit_is_rejected():
    good = frame(1, 3)
    for byte in range(7):
        board, comm = _comm()
        bad = bytearray(good)
        bad[byte] ^= 0x10
        _send(board, comm, bytes(bad))
        assert comm.vcu_errors == 1 and comm.vcu_close == 0


def test_repeated_counter_is_rejected():
    board, comm = _comm()
    _send(board, comm, frame(0, 4), 0)
    _send(board, comm, frame(0, 5), 0)
    _send(board, comm, frame(1, 5), 100)  # same counter: the sender may be stuck
    assert comm.vcu_close == 0 and comm.vcu_errors == 1
    _send(board, comm, frame(1, 6), 200)
    assert comm.vcu_close == 1


def test_counter_jump_is_rejected_then_resynchronised():
    board, comm = _comm()
    _send(board, comm, frame(0, 4), 0)
    _send(board, comm, frame(0, 5), 0)
    _send(board, comm, frame(1, 7), 100)  # one frame lost: rejected
    assert comm.vcu_close == 0 and comm.vcu_errors == 1
    _send(board, comm, frame(1, 8), 200)  # in sequence with the jump: taken
    assert comm.vcu_close == 1
    _send(board, comm, frame(1, 9), 300)
    _send(board, comm, frame(1, 10), 400)
    assert comm.vcu_errors == 1


def test_counter_wraps_mod_16():
    board, comm = _comm()
    _send(board, comm, frame(1, 14), 0)
    _send(board, comm, frame(1, 15), 0)
    _send(board, comm, frame(1, 0), 100)
    assert comm.vcu_errors == 0


def test_rejected_frames_raise_the_invalid_count_and_good_ones_lower_it():
    board, comm = _comm()
    n = comm.cfg.vcu_bad_count
    for k in range(n + 3):
        _send(board, comm, frame(1, k, crc_error=1), k * 100)
    assert comm.vcu_bad == n  # saturates at the qualification count
    _send(board, comm, frame(1, 0), 1900)  # the reference
    for k in range(1, 5):  # each good frame takes back half of what a bad one added
        _send(board, comm, frame(1, k), 1900 + 100 * k)
    assert comm.vcu_e2e.bad == 2 * n - 4 and comm.vcu_close == 1


def test_forged_frames_interleaved_one_to_one_still_raise_the_count():
    # The old up/down count let each rejected forgery be cancelled by an accepted real frame.
    board, comm = _comm()
    n = comm.cfg.vcu_bad_count
    _send(board, comm, frame(0, 0), 0)
    for k in range(1, 2 * n + 2):
        _send(board, comm, frame(0, k), k * 100)  # the real VCU, in sequence
        _send(board, comm, frame(1, k + 1, crc_error=k & 0xFF or 1), k * 100 + 50)  # a guess
    assert comm.vcu_bad >= n and comm.vcu_close == 0


def test_rejected_frames_do_not_refresh_the_request():
    board, comm = _comm()
    _send(board, comm, frame(1, 1), 0)
    for k in range(2, 12):
        _send(board, comm, frame(1, k, crc_error=0x80), k * 100)
    assert comm.vcu_stale(comm.cfg.vcu_stale_ms + 1)
