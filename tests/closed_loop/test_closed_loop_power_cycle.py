"""Nothing lost across short power cycles, and a damaged boot file does not stop the board.

The firmware runs on the micropython binary in lock-step; one plant lives through every power
cycle. A power loss is the process ended from outside (SIGTERM: no orderly shutdown, only the
records already on storage survive). The estimator's record is written once the SOC moved
persist_soc_step since the last one, so 90 s at 1C (2.5 %) leaves records behind; the restored
SOC bound grows by what may have moved unrecorded.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from firmware import app
from firmware import config as fw_config
from hil.bench.dut import ProcessDut
from hil.bench.loop import Bench
from hil.bench.transport import SlcanSocketTransport
from sim.pack import Pack, PackConfig
from sim.sensors import SensorModel

CELLS = 8
CONFIG = {"cell_count": CELLS, "temp_count": CELLS}
ONE_C_A = 5.0  # the plant's 5 Ah NMC cell
CYCLES = 6
ON_S = 90


def _bench(dut: ProcessDut, pack: Pack, seed: int) -> Bench:
    bench = Bench(SlcanSocketTransport("127.0.0.1", dut.port), pack, SensorModel(seed=seed))
    bench.attach_dut(dut)
    return bench


def _estimation(bench: Bench) -> tuple[float, float]:
    """(SOC %, bound %) of the first BMS_Estimation after the start, at rest."""
    for _ in range(30):
        bench.step(0.0)
        if bench.status.soc_bound_pct == bench.status.soc_bound_pct:  # not NaN: received
            return bench.status.soc_pct, bench.status.soc_bound_pct
    raise AssertionError(f"no BMS_Estimation: {bench.status}")


@pytest.mark.unix_only
def test_six_power_cycles_of_90_s_at_1c_restore_what_moved_inside_a_widened_bound(
    tmp_path: Path, dut_factory: Callable[..., ProcessDut]
) -> None:
    """After each of six power losses (90 s at 1C each, 2.5 % of SOC), the restored SOC is the
    one at the loss to within what can have moved unrecorded (app.unrecorded_soc: records
    are written while driving, not only every persist_interval_ms), and the restored bound
    grew to cover that jump. Through every on-phase the BMS SOC stays within its own bound of
    the plant's true SOC (the restored start is under load: the polarisation the record does
    not hold must not read as SOC)."""
    cfg = fw_config.load(CONFIG)
    unrecorded = app.unrecorded_soc(cfg) / 100  # %
    pack = Pack(PackConfig(n_cells=CELLS))
    port = None
    at_loss: tuple[float, float] | None = None
    restored: list[float] = []
    outside: list[tuple[int, int, float, float]] = []  # (power cycle, step, error, bound) in %
    for k in range(CYCLES + 1):
        dut = dut_factory(CONFIG, workdir=tmp_path, port=port)
        dut.start()
        port = dut.port
        bench = _bench(dut, pack, seed=k)
        try:
            soc, bound = _estimation(bench)
            if at_loss is not None:
                restored.append(soc)
                lost_soc, lost_bound = at_loss
                assert abs(soc - lost_soc) <= unrecorded, (k, soc, lost_soc)
                assert bound - lost_bound >= abs(soc - lost_soc), (k, bound, lost_bound)
                assert bound > lost_bound, (k, bound, lost_bound)
            if k == CYCLES:
                break
            bench.step_until(lambda s: s.closed, 30)
            assert bench.status.closed
            for n in range(ON_S * 1000 // bench.cycle_ms):
                bench.step(bench.within_limits(ONE_C_A))
                err = abs(bench.status.soc_pct - 100 * pack.mean_soc)
                if err > bench.status.soc_bound_pct + 0.01:  # the wire's 0.01 % step
                    outside.append((k, n, err, bench.status.soc_bound_pct))
            at_loss = (bench.status.soc_pct, bench.status.soc_bound_pct)
        finally:
            bench.close()
            dut.stop()  # the power goes: SIGTERM, no orderly shutdown
    assert all(b < a for a, b in zip(restored, restored[1:], strict=False)), restored
    assert not outside, (len(outside), outside[0], max(outside, key=lambda o: o[2] - o[3]))


@pytest.mark.unix_only
def test_a_garbage_reset_cause_file_reads_as_power_on(
    tmp_path: Path, dut_factory: Callable[..., ProcessDut]
) -> None:
    """A reset_cause file holding anything but one known digit neither stops the board at boot
    nor claims a watchdog reset: the firmware starts, reports ResetCause 0 and closes through a
    normal precharge."""
    dut = dut_factory(CONFIG, workdir=tmp_path)
    dut.storage.mkdir(parents=True, exist_ok=True)
    (dut.storage / "reset_cause").write_bytes(b"\xff\x00garbage\n")
    dut.start()
    bench = _bench(dut, Pack(PackConfig(n_cells=CELLS)), seed=0)
    try:
        states = [bench.step(0.0).status.state_name for _ in range(15)]
        assert bench.status.reset_cause == 0
        assert "PRECHARGE" in states and bench.status.closed
    finally:
        bench.close()
        dut.stop()
