"""The LTC681x driver against the daisy-chain emulator on a fake SPI bus (CPython)."""

from array import array

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware.drivers import ltc681x as drv
from firmware.drivers.ltc681x_openwire import check_open_wire
from firmware.drivers.pec15 import pec15
from sim.emulators.ltc681x import Ltc681xChain
from sim.emulators.spi import FakeSpi


def make(n, cells=12):
    chain = Ltc681xChain(n, cells)
    spi = FakeSpi()
    cs = spi.attach(chain)
    afe = drv.Ltc681x(spi, cs, n, cells)
    out = array("H", [0] * (n * cells))
    return chain, spi, afe, out


@settings(max_examples=30, deadline=None)
@given(
    st.integers(1, 4).flatmap(
        lambda n: st.tuples(
            st.sampled_from([12, 18]),
            st.lists(st.integers(0, 5000), min_size=n * 18, max_size=n * 18),
        )
    )
)
def test_cell_round_trip(args):
    cells, mv = args
    n = len(mv) // 18
    chain, _, afe, out = make(n, cells)
    for m in range(n):
        chain.set_cells_mv(m, mv[m * 18 : m * 18 + cells])
    assert afe.read_cells(out, 1000) == 0
    expect = [v for m in range(n) for v in mv[m * 18 : m * 18 + cells]]
    assert list(out) == expect
    assert all(afe.fresh) and list(afe.status) == [0] * n and afe.missing == 0
    assert afe.last_ok_ms == [1000] * n


def test_codes_round_to_mv_and_conversion_is_pipelined():
    chain, _, afe, out = make(1)
    chain.chips[0].cell_codes = [37004, 37005] + [36000] * 10
    afe.read_cells(out, 0)
    assert list(out[:2]) == [3700, 3701]
    chain.set_cells_mv(0, [3000] * 12)
    afe.read_cells(out, 100)  # reads the conversion started at the end of the previous call
    assert out[0] == 3700
    afe.read_cells(out, 200)
    assert out[0] == 3000
    assert chain.commands.count(0x360) == 4  # ADCV (MD 7 kHz, DCP 0): first call 2, then 1


def test_pec_error_counted_and_bad_data_not_used():
    chain, _, afe, out = make(3)
    chain.set_cells_mv(1, [3300] * 12)
    afe.read_cells(out, 0)
    chain.set_cells_mv(1, [3400] * 12)
    afe.read_cells(out, 100)  # converts 3400 for the next read
    chain.corrupt(1, "CVB")
    assert afe.read_cells(out, 200) == 1
    assert list(out[15:18]) == [3300] * 3  # the corrupted group keeps the old value
    assert list(afe.fresh[15:18]) == [0] * 3 and all(afe.fresh[12:15])
    assert list(out[12:15]) == [3400] * 3
    assert list(afe.status) == [0, 1, 0] and list(afe.pec_errors) == [0, 1, 0]
    assert afe.last_ok_ms == [200, 100, 200]
    assert afe.read_cells(out, 300) == 0 and list(out[12:24]) == [3400] * 12


def test_missing_module_and_everything_beyond():
    chain, _, afe, out = make(4)
    afe.read_cells(out, 0)
    chain.break_chain(2)
    assert afe.read_cells(out, 100) == 0
    assert list(afe.status) == [0, 0, 2, 2] and afe.missing == 2
    assert all(v == 0 for v in out[24:]) and not any(afe.fresh[24:])
    assert all(v == 3600 for v in out[:24])
    chain.repair_chain()
    afe.read_cells(out, 200)
    afe.read_cells(out, 300)
    assert afe.missing == 0 and all(v == 3600 for v in out)


def test_bad_command_pec_is_ignored_by_the_chip():
    chain, spi, afe, out = make(1)
    cs = spi._pins[0]
    cmd = bytearray(b"\x03\x60\x00\x00")  # ADCV with a wrong PEC
    cs(0)
    spi.write(cmd)
    cs(1)
    assert chain.bad_commands == 1 and chain.chips[0].cv[0] == 0xFFFF
    p = pec15(cmd, 0, 2)
    cmd[2], cmd[3] = p >> 8, p & 0xFF
    cs(0)
    spi.write(cmd)
    cs(1)
    assert chain.chips[0].cv[0] == 36000


@pytest.mark.parametrize("cells", [12, 18])
@pytest.mark.parametrize("n", [1, 3])
def test_balancing_switches_land_and_read_back(n, cells):
    chain, _, afe, _ = make(n, cells)
    mask = bytearray((n * cells + 7) // 8)
    on = [0, 5, 11, cells - 1, cells + 3, n * cells - 1]
    for i in on:
        if i < n * cells:
            mask[i >> 3] |= 1 << (i & 7)
    afe.set_dcc(mask)
    for m, chip in enumerate(chain.chips):
        expect = sum(1 << (i - m * cells) for i in set(on) if m * cells <= i < (m + 1) * cells)
        assert chip.dcc() == expect
        assert chip.cfga[0] == 0xFC
    assert afe.verify_config(0) == 0
    chain.corrupt(n - 1, "CFGA")
    assert afe.verify_config(0) == 1 and afe.status[n - 1] == 1
    afe.set_dcc(bytearray(len(mask)))
    assert all(chip.dcc() == 0 for chip in chain.chips)


def test_write_with_bad_block_pec_is_ignored_by_that_module():
    chain, spi, afe, _ = make(2)
    mask = bytearray(b"\x0f\xf0\x00")  # cells 0..3 (module 0) and 12..15 (module 1)
    afe.set_dcc(mask)
    assert [c.dcc() for c in chain.chips] == [0x00F, 0x00F]
    afe.set_dcc(bytearray(3))
    t = afe._tx  # the all-off write, replayed with module 1's block PEC broken
    afe._cfga[4] = 0xFF
    afe._cfga[10] = 0xFF
    afe.write_config()
    for chip in chain.chips:
        chip.cfga[4] = 0
    t[10] ^= 0x02  # the first block is module 1's
    cs = spi._pins[0]
    cs(0)
    spi.write(t)
    cs(1)
    assert [c.dcc() for c in chain.chips] == [0x0FF, 0x000]


@pytest.mark.parametrize(
    "cells,pin", [(12, p) for p in (0, 1, 5, 11, 12)] + [(18, p) for p in (0, 12, 17, 18)]
)
def test_open_wire_finds_exactly_the_open_pin(cells, pin):
    chain, _, afe, out = make(3, cells)
    for m in range(3):
        chain.set_cells_mv(m, [3000 + 50 * k for k in range(cells)])
    chain.open_wire(1, pin)
    res = bytearray(3 * (cells + 1))
    assert check_open_wire(afe, res, 0) == 1
    assert [i for i, v in enumerate(res) if v] == [(cells + 1) + pin]


def test_open_wire_needs_two_conversions_and_reports_no_verdict_on_pec_error():
    chain, _, afe, _ = make(1)
    chain.open_wire(0, 4)
    res = bytearray(13)
    assert check_open_wire(afe, res, 0, repeats=1) == 0  # one conversion is not enough
    assert check_open_wire(afe, res, 0) == 1 and res[4] == 1
    chain.corrupt(0, "CVA")
    assert check_open_wire(afe, res, 0) == -1


def test_no_open_wire_on_a_healthy_chain_and_stuck_cell():
    chain, _, afe, out = make(2)
    res = bytearray(26)
    assert check_open_wire(afe, res, 0) == 0 and not any(res)
    chain.stuck_cell(0, 3, 4999)
    afe.read_cells(out, 0)
    afe.read_cells(out, 100)
    assert out[3] == 4999 and out[4] == 3600


def test_aux_gpio_read():
    chain, _, afe, out = make(2)
    chain.chips[1].gpio_codes = [10000, 12345, 20000, 5, 0, 30000]
    aux = array("H", [0] * 12)
    assert afe.read_aux(aux, 0) == 0
    assert list(aux) == [1500] * 5 + [3000] + [1000, 1235, 2000, 1, 0, 3000]
    chain.corrupt(0, "AUXB")
    assert afe.read_aux(aux, 0) == 1 and afe.pec_errors[0] == 1


def test_conversion_poll_times_out():
    chain, _, afe, out = make(1)
    chain.conv_polls = 10_000
    assert afe.read_cells(out, 0) == 0
    assert afe.timeouts == 1


def test_rejects_other_cell_counts():
    with pytest.raises(ValueError):
        drv.Ltc681x(FakeSpi(), None, 1, 15)
