"""Balancing laws, checked as properties of the closed loop: the firmware on the micropython binary
decides, the plant's truth judges.

Each example starts a firmware process (~0.3 s), so hypothesis draws only a few. The runs use a
1000 ms control period (and the stale and measurement-window times that allow it, see
firmware/config.py), so an hour of balancing takes a few seconds; the bleed resistors are the
defaults of plant and firmware (33 ohm). Balancing happens at rest: the contactors stay open.
Shrinking is off: it would rerun the slow examples many times; the failing example is printed.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from firmware import config as fw_config
from hil.bench.loop import Bench
from hil.bench.runner import open_bench
from sim.sensors import Measurement

pytestmark = pytest.mark.unix_only  # thousands of lock-step cycles per example

CYCLE_S = 1.0
FAST = {
    "cycle_ms": 1000,
    "meas_stale_ms": 3000,
    "vcu_stale_ms": 3000,
    "balance_measure_ms": 2000,
}
NMC = fw_config.load({"chemistry": "NMC"})
BALANCED = 1  # BalancingReason
FAULT_TIER_OPEN = 3
# Few, fixed examples: each costs a firmware run, and CI must not meet a new one on every push.
FEW = settings(
    max_examples=3,
    deadline=None,
    derandomize=True,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    # bench_options is the same for every example (the command line's DUT choice)
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)

strategies = st.sampled_from([0, 1])  # balance_strategy: SOC, voltage
seeds = st.integers(0, 10_000)


@contextmanager
def rest_bench(
    options: dict[str, Any], strategy: int, seed: int, *, ideal_sensors: bool = False, **pack: Any
) -> Iterator[Bench]:
    """An 8-cell NMC bench at rest on the DUT `options` select (the `bench_options` fixture);
    `pack` overrides PackConfig fields. Ideal sensors read every cell without noise or offset
    (still quantised to 1 mV, still with the sense-line drop)."""
    fw = dict(FAST, balance_strategy=strategy)
    config = {"leak_max_a": 0.0, **pack}
    with open_bench(cells=8, seed=seed, firmware_config=fw, pack_config=config, **options) as bench:
        if ideal_sensors:
            bench.sensors.cell_noise_v = 0.0
            bench.sensors.cell_offset_sigma_v = 0.0
        yield bench


def spread_pct(bench: Bench) -> float:
    """The plant's SOC spread: max - min of the true cell SOC, %-points."""
    return 100.0 * float(np.ptp(bench.pack.soc))


@FEW
@given(strategy=strategies, seed=seeds, sigma=st.floats(0.02, 0.04))
def test_lowest_cell_never_bleeds(
    bench_options: dict[str, Any], strategy: int, seed: int, sigma: float
) -> None:
    """The cell the plant holds emptiest (lowest true SOC) never bleeds, up to the resolution the
    firmware judges by: no bleeding cell is more than one ADC step (1 mV, 0.125 %-point of SOC on
    NMC's 80..90 % OCV step) below the emptiest cell that is not bleeding. Equal capacities and
    ideal sensors (no noise, no offset) leave quantisation as the only blur."""
    resolution = 1.0 / 8.0 / 100.0  # 1 mV on a 40 mV per 5 %-point OCV step, as a SOC fraction
    with rest_bench(
        bench_options, strategy, seed, ideal_sensors=True, capacity_sigma=0.0, soc_sigma=sigma
    ) as b:
        bled = False
        for _ in range(900):
            soc = b.pack.soc
            rec = b.step(0.0, vcu_close=False)
            on = rec.status.balancing
            if on.any() and not on.all():
                bled = True
                assert soc[on].min() > soc[~on].min() - resolution, (on, soc)
        assert bled
        assert not on.all()


@FEW
@given(strategy=strategies, seed=seeds, soc_mean=st.floats(0.4, 0.6))
def test_no_cell_starts_bleeding_below_the_minimum_voltage(
    bench_options: dict[str, Any], strategy: int, seed: int, soc_mean: float
) -> None:
    """A cell that reads below balance_min_mv in the measurement window is never selected, so
    nothing bleeds while every cell is below it (NMC packs straddling 3.8 V)."""
    with rest_bench(bench_options, strategy, seed, soc_mean=soc_mean, soc_sigma=0.03) as b:
        was = np.zeros(8, dtype=bool)
        for _ in range(400):
            rec = b.step(0.0, vcu_close=False)
            started = rec.status.balancing & ~was
            was = rec.status.balancing
            assert (rec.measurement.cell_mv[started] >= NMC.balance_min_mv).all()


@FEW
@given(
    strategy=strategies,
    seed=seeds,
    cell=st.integers(0, 7),
    first=st.integers(0, 60),
    excess_dc=st.integers(0, 90),
)
def test_no_bleeding_at_or_above_the_temperature_limit(
    bench_options: dict[str, Any], strategy: int, seed: int, cell: int, first: int, excess_dc: int
) -> None:
    """No cell bleeds in a cycle whose hottest reading is at or above balance_max_temp_dc; one
    cell reads hot from cycle `first` to `first` + 40 (a pack that would balance otherwise)."""
    with rest_bench(bench_options, strategy, seed, soc_mean=0.85, soc_sigma=0.02) as b:
        hot = {"on": False}

        def heat(m: Measurement) -> Measurement:
            if hot["on"]:
                m.temp_dc[cell] = NMC.balance_max_temp_dc + excess_dc
            return m

        b.measurement_hook = heat
        bled = False
        for i in range(first + 80):
            hot["on"] = first <= i < first + 40
            rec = b.step(0.0, vcu_close=False)
            if rec.measurement.temp_dc.max() >= NMC.balance_max_temp_dc:
                assert not rec.status.balancing.any()
            else:
                bled |= bool(rec.status.balancing.any())
        assert bled  # the pack did balance outside the hot window


@FEW
@given(strategy=strategies, seed=seeds, cell=st.integers(0, 7), first=st.integers(0, 40))
def test_no_bleeding_with_an_open_tier_fault(
    bench_options: dict[str, Any], strategy: int, seed: int, cell: int, first: int
) -> None:
    """No cell bleeds while an open-tier fault is active: one cell reads over-voltage (and so the
    highest, first in line to bleed) for 5 cycles from cycle `first`; the fault latches. The
    reading is 200 mV over the threshold: the firmware corrects readings for the sense-line drop
    of bleeding neighbours (up to 2 x 0.25 ohm x 0.13 A), and the cell must be over-voltage after
    that correction too."""
    with rest_bench(bench_options, strategy, seed, soc_mean=0.85, soc_sigma=0.02) as b:
        tick = {"i": 0}

        def overvoltage(m: Measurement) -> Measurement:
            if first <= tick["i"] < first + 5:
                m.cell_mv[cell] = NMC.cell_ov_mv + 200
            return m

        b.measurement_hook = overvoltage
        opened = False
        for i in range(first + 60):
            tick["i"] = i
            rec = b.step(0.0, vcu_close=False)
            if rec.status.fault_tier == FAULT_TIER_OPEN:
                opened = True
                assert not rec.status.balancing.any()
        assert opened


@FEW
@given(strategy=strategies, seed=seeds, sigma=st.floats(0.01, 0.03))
def test_bleeding_never_increases_the_soc_spread(
    bench_options: dict[str, Any], strategy: int, seed: int, sigma: float
) -> None:
    """Over a balancing run at rest (realistic capacity spread and sensors, no self-discharge:
    only the bleed resistors move charge) the plant's SOC spread never grows from cycle to cycle,
    and it has shrunk by the end."""
    with rest_bench(bench_options, strategy, seed, soc_mean=0.85, soc_sigma=sigma) as b:
        start = last = spread_pct(b)
        for _ in range(1800):
            b.step(0.0, vcu_close=False)
            now = spread_pct(b)
            assert now <= last + 1e-9, (last, now)
            last = now
        assert last < start


def target_met(strategy: int, bench: Bench, m: Measurement) -> bool:
    """The balancing target: SOC strategy, every cell within balance_start_soc of the lowest (plant
    truth, plus 0.25 %-point for the OCV reading the firmware anchors on); voltage strategy, the
    window voltages `m` within balance_start_delta_mv."""
    if strategy == 0:
        return spread_pct(bench) < NMC.balance_start_soc / 100 + 0.25
    return int(np.ptp(m.cell_mv)) < NMC.balance_start_delta_mv


@FEW
@given(strategy=strategies, seed=seeds, sigma=st.floats(0.002, 0.004))
def test_bleeding_stops_when_the_target_is_met(
    bench_options: dict[str, Any], strategy: int, seed: int, sigma: float
) -> None:
    """A balancing run at rest ends: within 2 h a selection finds nothing to bleed (reason
    BALANCED, every resistor off), and the target is met then (`target_met`)."""
    with rest_bench(bench_options, strategy, seed, soc_mean=0.85, soc_sigma=sigma) as b:
        for _ in range(7200):
            rec = b.step(0.0, vcu_close=False)
            if rec.status.balancing_reason == BALANCED:
                break
        assert rec.status.balancing_reason == BALANCED and not rec.status.balancing.any()
        assert target_met(strategy, b, rec.measurement)
