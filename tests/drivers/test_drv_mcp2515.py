"""The MCP2515 driver against the register-level emulator on a fake SPI bus (CPython)."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware.drivers import mcp2515 as drv
from sim.emulators.mcp2515 import EXT_FLAG, Mcp2515Emulator
from sim.emulators.spi import FakeSpi


def make(osc_hz=16_000_000, mode=drv.MODE_NORMAL):
    chip = Mcp2515Emulator(osc_hz)
    spi = FakeSpi()
    cs = spi.attach(chip)
    can = drv.Mcp2515(spi, cs, osc_hz, mode)
    assert can.ready and chip.mode == mode
    return chip, can


def recv_all(can):
    buf = bytearray(8)
    out = []
    while (cid := can.recv_into(buf)) >= 0:
        out.append((cid, bytes(buf[: can.dlc])))
    return out


frames = st.lists(
    st.tuples(st.integers(0, 0x7FF), st.binary(min_size=0, max_size=8)), min_size=1, max_size=12
)


@pytest.mark.parametrize("osc", [8_000_000, 16_000_000])
def test_bit_timing_is_500k_and_valid(osc):
    chip, _ = make(osc)
    bitrate, sample_permille, valid = chip.bit_timing()
    assert (bitrate, valid) == (500_000, True)
    assert 750 <= sample_permille <= 875
    assert chip.mode == drv.MODE_NORMAL


def test_cnf_registers_published_values():
    assert drv.timing_500k(16_000_000) == (0x00, 0xBC, 0x01)
    assert drv.timing_500k(8_000_000) == (0x00, 0x91, 0x01)
    with pytest.raises(ValueError):
        drv.timing_500k(20_000_000)


def test_no_chip_means_init_fails():
    spi = FakeSpi()
    can = drv.Mcp2515(spi, spi.attach(None), 16_000_000)
    assert not can.ready and not can.init()


def test_cnf_locked_outside_config_mode():
    chip, can = make()
    can.write_register(0x2A, 0x3F)
    assert can.read_register(0x2A) == 0x00  # CNF1 kept: normal mode
    assert can.set_mode(drv.MODE_CONFIG)
    can.write_register(0x2A, 0x3F)
    assert chip.reg[0x2A] == 0x3F


@settings(max_examples=40, deadline=None)
@given(frames)
def test_send_reaches_the_bus(batch):
    chip, can = make()
    for cid, data in batch:
        assert can.send(cid, data, len(data))
    assert chip.bus == [(cid, data) for cid, data in batch]


@settings(max_examples=40, deadline=None)
@given(frames)
def test_receive_round_trip_in_order(batch):
    chip, can = make()
    got = []
    buf = bytearray(8)
    for i, (cid, data) in enumerate(batch):
        assert chip.inject(cid, data)
        if i % 2:  # sometimes two frames wait: RXB0 and RXB1 (rollover)
            got += recv_all(can)
    got += recv_all(can)
    assert got == batch
    assert can.recv_into(buf) == -1
    assert can.overflows == 0


def test_both_rx_buffers_used_and_read_oldest_first():
    chip, can = make()
    chip.inject(0x100, b"\x01")
    chip.inject(0x101, b"\x02")
    assert chip.reg[0x2C] & 3 == 3  # RX0IF and RX1IF
    buf = bytearray(8)
    assert can.recv_into(buf) == 0x100
    chip.inject(0x102, b"\x03")  # lands in the freed RXB0, but RXB1 holds the older frame
    assert recv_all(can) == [(0x101, b"\x02"), (0x102, b"\x03")]
    assert chip.reg[0x2C] & 3 == 0  # READ RX BUFFER cleared the flags


def test_overflow_is_counted_and_cleared():
    chip, can = make()
    for i in range(5):
        chip.inject(0x200 + i, bytes([i]))
    assert chip.reg[0x2D] & 0x80  # RX1OVR
    assert recv_all(can) == [(0x200, b"\x00"), (0x201, b"\x01")]
    assert can.overflows == 1
    assert chip.reg[0x2D] & 0xC0 == 0 and not chip.reg[0x2C] & 0x20
    assert chip.rx_lost == 3


def test_loopback_mode_receives_own_frames_and_stays_off_the_bus():
    chip, can = make(mode=drv.MODE_LOOPBACK)
    assert can.send(0x123, b"\xde\xad", 2)
    assert chip.bus == []
    assert recv_all(can) == [(0x123, b"\xde\xad")]
    assert not chip.inject(0x7FF, b"")  # loopback hears nothing from the bus


def test_config_mode_neither_sends_nor_receives_until_normal():
    chip, can = make(mode=drv.MODE_CONFIG)
    assert can.send(0x10, b"\x01", 1)
    assert chip.bus == [] and not chip.inject(0x11, b"")
    assert can.set_mode(drv.MODE_NORMAL)
    assert chip.bus == [(0x10, b"\x01")]


def test_tx_buffers_full_without_ack():
    chip, can = make()
    chip.ack = False
    assert all(can.send(0x300 + i, b"", 0) for i in range(3))
    assert not can.send(0x303, b"", 0)
    assert can.tx_full == 1
    chip.ack = True
    assert can.set_mode(drv.MODE_NORMAL)  # a mode write makes the emulator retry
    assert sorted(cid for cid, _ in chip.bus) == [0x300, 0x301, 0x302]
    assert can.send(0x303, b"", 0)


def test_extended_and_remote_frames_are_dropped():
    chip, can = make()
    chip.inject(0x1234567, b"\x01", extended=True)
    chip.inject(0x42, b"\x09")
    assert recv_all(can) == [(0x42, b"\x09")]
    assert can.rx_dropped == 1
    assert EXT_FLAG & 0x1234567 == 0


def test_reset_returns_to_config_mode():
    chip, can = make()
    assert can.reset()
    assert chip.mode == drv.MODE_CONFIG and chip.reg[0x0F] == 0x87
