"""VCU_Request integrity and authenticity (firmware/e2e.py, firmware/secoc.py) through Comm on a
minimal board: CRC-8 SAE J1850 over the data ID and bytes 0..6, alive counter + 1, a MAC over
the request and a freshness value, replays and forgeries interleaved with the genuine VCU. Runs
under CPython and MicroPython.
"""

from vcu_signer import KEY, Vcu, key_record, request

from firmware import can_codec, config
from firmware.comm import Comm, crc8_j1850
from firmware.data import Data
from firmware.mac import hmac_sha256
from firmware.secoc import WINDOW


class Board:
    """Frames in, frames out, a storage dict; nothing else."""

    def __init__(self, key=KEY):
        self.rx = []
        self.sent = []
        self.rx_dlc = 8
        self.storage = {"vcu_key": key_record(key)} if key else {}

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

    def storage_read(self, name):
        return self.storage.get(name)


def _comm(key=KEY):
    cfg = config.load()
    board = Board(key)
    return board, Comm(board, cfg, Data(cfg))


def _send(board, comm, data, now_ms=0):
    board.rx.append((can_codec.VCU_REQUEST_ID, data))
    comm.poll(now_ms)


def _with_crc(frame):
    b = bytearray(frame)
    b[7] = crc8_j1850(b"\x00\x03" + bytes(b), 9)
    return bytes(b)


def test_crc_is_sae_j1850():
    # The catalogue check value of CRC-8/SAE-J1850 (init 0xFF, xor-out 0xFF, poly 0x1D).
    assert crc8_j1850(b"123456789", 9) == 0x4B
    # Continuing a result (xor 0xFF) equals one pass over both parts.
    head = crc8_j1850(b"1234", 4) ^ 0xFF
    assert crc8_j1850(b"56789", 5, head) == 0x4B


def test_hmac_is_rfc_4231():
    # RFC 4231 test case 2 (the prefix byte is the first byte of the message).
    mac = hmac_sha256(b"Jefe", ord("w"), b"hat do ya want for nothing?")
    assert mac[:8] == bytes((0x5B, 0xDC, 0xC1, 0x46, 0xBF, 0x60, 0x75, 0x4E))


def test_the_first_frame_only_sets_the_counter_the_next_in_sequence_is_taken():
    board, comm = _comm()
    vcu = Vcu()
    _send(board, comm, vcu.frame(1, charge=1), 100)
    assert comm.vcu_close == 0 and not comm.vcu_e2e.seen, "a lone frame of any counter: no close"
    assert not comm.vcu_stale(100), "not stale yet: the start counts as the last request"
    assert comm.vcu_stale(100 + comm.cfg.vcu_stale_ms + 1)
    assert comm.vcu_errors == 0
    _send(board, comm, vcu.frame(1, charge=1), 200)
    assert comm.vcu_close == 1 and comm.vcu_charge == 1 and not comm.vcu_stale(200)
    assert comm.vcu_errors == 0 and comm.vcu_bad == 0


def _running(n=2):
    board, comm = _comm()
    vcu = Vcu()
    for k in range(n):
        _send(board, comm, vcu.frame(0), k * 100)
    return board, comm, vcu


def test_a_bad_crc_is_rejected_and_counted():
    for bit in (1, 2, 4, 8, 16, 32, 64, 128):
        board, comm, vcu = _running()
        bad = bytearray(vcu.frame(1))
        bad[7] ^= bit
        _send(board, comm, bytes(bad), 300)
        assert comm.vcu_close == 0, "never a close"
        assert comm.vcu_errors == 1 and comm.vcu_bad == 1


def test_a_flipped_payload_bit_is_rejected_even_with_its_crc_fixed():
    good = Vcu().frame(1)
    for byte in range(7):
        for fixed in (False, True):
            board, comm, vcu = _running()
            bad = bytearray(vcu.frame(1))
            bad[byte] ^= 0x10
            _send(board, comm, _with_crc(bad) if fixed else bytes(bad), 300)
            assert comm.vcu_errors == 1 and comm.vcu_close == 0, (byte, fixed, good)


def test_no_key_no_request_is_ever_taken():
    board, comm = _comm(key=None)
    vcu = Vcu()
    for k in range(10):
        _send(board, comm, vcu.frame(1), k * 100)
    assert comm.vcu_close == 0 and comm.vcu_stale(900) and comm.vcu_errors == 10


def test_a_frame_signed_with_another_key_is_rejected():
    board, comm = _comm()
    other = Vcu(key=bytes(16))
    for k in range(5):
        _send(board, comm, other.frame(1), k * 100)
    assert comm.vcu_close == 0 and comm.vcu_errors == 5


def test_repeated_counter_is_rejected():
    board, comm, vcu = _running()
    again = request(1, vcu.alive, vcu.freshness + 1)  # fresh and authentic, counter stuck
    _send(board, comm, again, 300)
    assert comm.vcu_close == 0 and comm.vcu_errors == 1
    vcu.freshness += 1
    _send(board, comm, vcu.frame(1), 400)
    assert comm.vcu_close == 1


def test_counter_jump_is_rejected_then_resynchronised():
    board, comm, vcu = _running()
    vcu.alive += 1  # one frame lost
    vcu.freshness += 1
    _send(board, comm, vcu.frame(1), 300)
    assert comm.vcu_close == 0 and comm.vcu_errors == 1
    _send(board, comm, vcu.frame(1), 400)  # in sequence with the jump: taken
    assert comm.vcu_close == 1
    _send(board, comm, vcu.frame(1), 500)
    assert comm.vcu_errors == 1


def test_counter_wraps_mod_16():
    board, comm = _comm()
    vcu = Vcu()
    for k in range(40):
        _send(board, comm, vcu.frame(1), k * 100)
    assert comm.vcu_errors == 0 and comm.vcu_close == 1


def test_rejected_frames_raise_the_invalid_count_and_good_ones_lower_it():
    board, comm, vcu = _running()
    n = comm.cfg.vcu_bad_count
    for k in range(n + 3):
        bad = bytearray(vcu.frame(1))
        bad[7] ^= 1
        _send(board, comm, bytes(bad), 300 + k * 100)
    assert comm.vcu_bad == n  # saturates at the qualification count
    _send(board, comm, vcu.frame(1), 1900)  # the counter jumped: rejected, the reference
    for k in range(4):  # each good frame takes back half of what a bad one added
        _send(board, comm, vcu.frame(1), 2000 + 100 * k)
    # +2 for each of the n + 4 rejected frames, up to twice the limit of 2n; -1 for each good.
    assert comm.vcu_e2e.bad == min(4 * n, 2 * (n + 4)) - 4 and comm.vcu_close == 1


def test_rejected_frames_do_not_refresh_the_request():
    board, comm, vcu = _running()
    _send(board, comm, vcu.frame(1), 200)
    for k in range(3, 13):
        bad = bytearray(vcu.frame(1))
        bad[7] ^= 0x80
        _send(board, comm, bytes(bad), k * 100)
    assert comm.vcu_stale(200 + comm.cfg.vcu_stale_ms + 1)


def test_recorded_frames_replayed_in_counter_order_never_close():
    # 16 frames recorded while the VCU asked to close, replayed one ahead of each genuine frame
    # while the VCU asks to open: the old up/down count let them close in 594 of 600 steps.
    board, comm = _comm()
    vcu = Vcu()
    recorded = [vcu.frame(1) for _ in range(16)]
    t = 0
    for k in range(600):
        _send(board, comm, recorded[k % 16], t)
        _send(board, comm, vcu.frame(0), t + 50)
        assert comm.vcu_close == 0, k
        t += 100
    assert comm.vcu_errors >= 599


def test_guessing_the_mac_with_the_right_crc_and_counter_is_flagged_and_closes_nothing():
    # The forger knows the protocol, not the key: right counter, next freshness, CRC computed,
    # a MAC guessed, interleaved one to one ahead of the genuine VCU that asks to open.
    board, comm, vcu = _running()
    n = comm.cfg.vcu_bad_count
    flagged_at = None
    t = 300
    for k in range(256):
        forged = bytearray(request(1, vcu.alive + 1, vcu.freshness + 1))
        forged[3] ^= 1 + k % 255
        forged[4] ^= k
        _send(board, comm, _with_crc(forged), t)
        _send(board, comm, vcu.frame(0), t + 50)
        assert comm.vcu_close == 0, k
        if flagged_at is None and comm.vcu_bad >= n:
            flagged_at = k
        t += 100
    assert flagged_at is not None and flagged_at < 2 * n, flagged_at


def test_freshness_resynchronises_within_the_window_and_not_beyond():
    board, comm, vcu = _running()
    vcu.freshness += WINDOW - 10  # a VCU that restarted and skipped its reserved block
    _send(board, comm, vcu.frame(1), 300)
    _send(board, comm, vcu.frame(1), 400)
    assert comm.vcu_close == 1
    board, comm, vcu = _running()
    vcu.freshness += WINDOW + 10  # a guess far ahead (or a VCU that lost its freshness)
    for k in range(3):
        _send(board, comm, vcu.frame(1), 300 + 100 * k)
    assert comm.vcu_close == 0 and comm.vcu_errors == 3


def test_the_last_freshness_survives_a_reset_so_old_frames_stay_replays():
    board, comm = _comm()
    vcu = Vcu()
    old = [vcu.frame(1) for _ in range(20)]
    for k, f in enumerate(old):
        _send(board, comm, f, k * 100)
    assert comm.vcu_close == 1 and comm.secoc.dirty  # a close request: written soon
    rec = bytearray(comm.secoc.state_size)
    comm.secoc.save_state(rec)
    board, comm = _comm()  # the BMS restarts with its record
    assert comm.secoc.restore_state(rec)
    for k, f in enumerate(old):
        _send(board, comm, f, k * 100)
    assert comm.vcu_close == 0 and comm.vcu_errors == 20
    for k in range(2):
        _send(board, comm, vcu.frame(1), 3000 + 100 * k)
    assert comm.vcu_close == 1


def test_a_damaged_record_is_refused():
    _, comm = _comm()
    rec = bytearray(comm.secoc.state_size)
    assert not comm.secoc.restore_state(rec)
    comm.secoc.save_state(rec)
    rec[4] = 0xFF  # beyond the small-int range a 32-bit port keeps
    assert not comm.secoc.restore_state(rec)
