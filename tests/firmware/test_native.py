"""The machine-code loops (firmware/native.py) compute what their bytecode fallbacks compute.

MicroPython only: CPython has no native emitter (measurement falls back to bytecode there, which
test_properties.py checks). Runs on the unix port (the sim bundle, compiled for this machine) and
on the Cortex-M image (frozen) through tests/firmware/test_micropython.py."""

from array import array

from firmware import measurement
from firmware.compat import IS_MICROPYTHON

if not IS_MICROPYTHON:
    import pytest

    pytestmark = pytest.mark.skip(
        reason="native code runs on MicroPython only (test_micropython.py runs this module)"
    )


def _values(seed, n, typecode, lo, hi):
    # A small LCG: the same values on every port, nothing from a random module the image lacks.
    out = array(typecode, [0] * n)
    x = seed
    for i in range(n):
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        out[i] = lo + x % (hi - lo + 1)
    return out


def _reference(values):
    vmin = min(values)
    vmax = max(values)
    return [vmin, list(values).index(vmin), vmax, list(values).index(vmax), sum(values)]


def test_the_firmware_uses_the_native_scan():
    assert measurement._native_scan is not None


def test_native_scan_matches_the_reference():
    from firmware.native import scan16

    r = array("i", [0] * 6)
    cases = 0
    for seed in range(40):
        n = 1 + seed * 5
        for typecode, lo, hi in (
            ("H", 0, 0xFFFF),
            ("H", 3600, 3604),  # many ties: the first index must win
            ("h", -0x8000, 0x7FFF),
            ("h", -3, 3),
        ):
            a = _values(seed, n, typecode, lo, hi)
            scan16(a, n, 1 if typecode == "h" else 0, r)
            assert list(r[:5]) == _reference(a), (typecode, list(a), list(r))
            cases += 1
    assert cases == 160


def test_scan_gives_the_rounded_mean_and_uses_every_value():
    r = array("i", [0] * 6)
    a = array("h", [-5, -6, -7, 40])
    measurement._scan(a, r, 1)
    assert list(r) == [-7, 2, 40, 3, 22, (22 + 2) // 4]
    b = array("H", [65535] * 192)
    measurement._scan(b, r, 0)
    assert list(r) == [65535, 0, 65535, 0, 65535 * 192, 65535]


def test_the_codec_decodes_measurement_groups_natively_as_in_bytecode():
    # decode_sim_cell_voltages_into / _temps_into: the machine-code call and the generated
    # bytecode it stands in for write the same values, every group of a 192-cell pack.
    from firmware import can_codec as c
    from firmware import can_codec_peer as peer

    assert c._unpack_group is not None
    buf = bytearray(8)
    native_v = array("H", [0] * 192)
    native_t = array("h", [0] * 192)
    byte_v = array("H", [0] * 192)
    byte_t = array("h", [0] * 192)
    volts = _values(7, 192, "H", 0, 0x1FFF)
    temps = _values(9, 192, "h", -0x800, 0x7FF)
    for pass_native, dv, dt in ((True, native_v, native_t), (False, byte_v, byte_t)):
        saved = c._unpack_group
        if not pass_native:
            c._unpack_group = None
        try:
            for g in range(48):
                i = 4 * g
                peer.encode_sim_cell_voltages(
                    buf, g, volts[i], volts[i + 1], volts[i + 2], volts[i + 3]
                )
                assert c.decode_sim_cell_voltages_into(buf, dv) == g
                peer.encode_sim_cell_temps(
                    buf, g, temps[i], temps[i + 1], temps[i + 2], temps[i + 3]
                )
                assert c.decode_sim_cell_temps_into(buf, dt) == g
        finally:
            c._unpack_group = saved
    assert list(native_v) == list(volts) == list(byte_v)
    assert list(native_t) == list(temps) == list(byte_t)


def test_the_codec_encodes_measurement_groups_natively_as_in_bytecode():
    # encode_bms_cell_voltages_from / _temps_from: the machine-code call writes the frame the
    # generated encoder writes from the same values (masked, unused bits cleared, zero past
    # the end), whatever the buffer held before.
    from firmware import can_codec as c

    assert c._pack_group is not None
    volts = _values(3, 192, "H", 0, 0xFFFF)  # wider than 13 bits: masked to the field
    temps = _values(5, 192, "h", -0x8000, 0x7FFF)
    native = bytearray(8)
    byte = bytearray(8)
    frames = 0
    for n in (189, 192):
        v = volts[:n]
        t = temps[:n]
        for g in range(49):
            for encode, src in (
                (c.encode_bms_cell_voltages_from, v),
                (c.encode_bms_cell_temps_from, t),
            ):
                native[:] = b"\xff" * 8
                encode(native, src, g)
                saved = c._pack_group
                c._pack_group = None
                try:
                    byte[:] = b"\xa5" * 8
                    encode(byte, src, g)
                finally:
                    c._pack_group = saved
                assert native == byte, (g, n, bytes(native), bytes(byte))
                frames += 1
    assert frames == 2 * 49 * 2
