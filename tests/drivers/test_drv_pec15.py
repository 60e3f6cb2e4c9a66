"""PEC15: the driver's table-driven version against the emulator's bit-by-bit reference and
the command PECs published in the LTC6811 datasheet."""

from hypothesis import given
from hypothesis import strategies as st

from firmware.drivers.pec15 import pec15
from sim.emulators.ltc681x import pec15_bitwise


def test_published_command_pecs():
    assert pec15(b"\x00\x01", 0, 2) == 0x3D6E  # WRCFGA
    assert pec15(b"\x00\x02", 0, 2) == 0x2B0A  # RDCFGA
    assert pec15_bitwise(b"\x00\x01") == 0x3D6E


@given(st.binary(max_size=40), st.integers(0, 8))
def test_table_matches_bitwise(data, pad):
    buf = bytes(pad) + data
    assert pec15(buf, pad, len(data)) == pec15_bitwise(data)
    assert pec15(buf, pad, len(data)) & 1 == 0
