"""Start a device under test and a bench around it, as one context manager.

Shared by the pytest plugin and the `cellguard` commands so both build the loop the same way.

Usage:
    with open_bench(cells=16, chemistry="NMC", seed=1) as bench:
        bench.step(0.0)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hil.bench.canlog import CanLogMode
from hil.bench.dut import DEFAULT_HEAP, ProcessDut, UnixPortDut, heap_bytes
from hil.bench.loop import Bench
from hil.bench.provision import parse_vcu_key
from hil.bench.transport import SlcanSocketTransport, Transport, open_transport
from hil.cellmodel.profiles import plant_profile
from sim.pack import Pack, PackConfig
from sim.sensors import SensorModel
from sim.vehicle import VcuRequests


def bench_firmware_config(
    cells: int,
    chemistry: str,
    sensors: SensorModel | None,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The firmware configuration a bench gives the BMS: the pack size and chemistry, the
    sense-line resistance of `sensors` (None: a bench without a plant, nothing to compensate),
    the caller's `overrides`, and the plant's own cell profile unless the overrides bring one."""
    fw: dict[str, Any] = {"cell_count": cells, "temp_count": cells, "chemistry": chemistry}
    if sensors is not None:
        # The plant's sense-line resistance is the one source: the firmware is told the same
        # value unless the overrides set it themselves (e.g. 0, to run it uncompensated).
        fw["balance_sense_mohm"] = round(sensors.sense_line_ohm * 1000)
    fw.update(overrides or {})
    # The estimator runs on the model of the simulated cell unless the caller brings a profile.
    fw.setdefault("profile", plant_profile(chemistry))
    return fw


@contextmanager
def open_bench(
    *,
    cells: int = 16,
    chemistry: str = "NMC",
    seed: int = 0,
    firmware_config: dict[str, Any] | None = None,
    pack_config: dict[str, Any] | None = None,
    can: str | None = None,
    heap: str | None = None,
    log_path: Path | None = None,
    log_mode: CanLogMode = "full",
    workdir: Path | None = None,
    bundle_board: str = "sim",
    target: str = "unix",
    dut_options: dict[str, Any] | None = None,
    vcu_key: Path | None = None,
) -> Iterator[Bench]:
    """A bench around the unix-port firmware, or around whatever `can` reaches (a real board).

    `firmware_config` overrides the firmware's configuration keys (its "profile" defaults to the
    plant's own, `hil.cellmodel.profiles.plant_profile`); `pack_config` the plant's
    PackConfig fields; the firmware's balance_sense_mohm follows the plant's sense-line
    resistance unless `firmware_config` sets it. With `can` (a python-can description such as
    `slcan:/dev/ttyACM0@500000`) no firmware is started and the bench runs in real time against
    the bus. `bundle_board` runs that board's flashed bundle on the unix port (see
    `hil.bench.dut.UnixPortDut`). `target` "qemu" or "qemu:IMAGE" runs the firmware frozen into
    the Cortex-M image instead (`hil.bench.qemu.QemuDut`; `heap` is then its MICROPY_HEAP_SIZE,
    default the smallest full-firmware budget); `dut_options` are further keywords of the DUT
    (e.g. a QemuDut's `preamble`). `log_path` is the CAN log, every frame or, with `log_mode`
    "events", the windows around events (`hil.bench.canlog`). The bench's VCU signs its requests
    with the started DUT's key, or with `can` with the key record `vcu_key` (a copy of the
    board's storage record "vcu_key"; its freshness is kept beside it as `<file>.freshness`).
    """
    sensors = SensorModel(seed=seed)
    fw = bench_firmware_config(cells, chemistry, sensors, firmware_config)
    pack = Pack(PackConfig(chemistry=chemistry, n_cells=cells, seed=seed, **(pack_config or {})))
    dut: ProcessDut | None = None
    transport: Transport
    if can is None:
        dut = make_dut(
            target, fw, heap=heap, workdir=workdir, bundle_board=bundle_board, **(dut_options or {})
        )
        dut.start()  # cleans up after itself when it fails
        try:
            transport = SlcanSocketTransport("127.0.0.1", dut.port)
        except OSError:
            _stop(dut, check=True)  # a firmware that stopped says why; else the OSError stands
            raise
    else:
        transport = open_transport(can)
    try:
        bench = Bench(
            transport,
            pack,
            sensors,
            cycle_ms=int(fw.get("cycle_ms", 100)),
            lockstep=can is None,
            log_path=str(log_path) if log_path else None,
            log_mode=log_mode,
            reply_timeout_s=dut.reply_timeout_s if dut is not None else 5.0,
        )
    except BaseException:
        transport.close()
        if dut is not None:
            _stop(dut)
        raise
    if dut is not None:
        bench.attach_dut(dut)
    elif vcu_key is not None:
        key = parse_vcu_key(Path(vcu_key).read_bytes())
        bench.vcu = VcuRequests(key, Path(f"{vcu_key}.freshness"))
    try:
        yield bench
    finally:
        try:
            bench.close()
        finally:
            if dut is not None:
                _stop(dut)


def _stop(dut: ProcessDut, check: bool = False) -> None:
    try:
        if check:
            dut.raise_if_stopped()
    finally:
        dut.stop()
        dut.cleanup()


def make_dut(
    target: str,
    config: dict[str, Any],
    *,
    heap: str | None = None,
    workdir: Path | None = None,
    bundle_board: str = "sim",
    **kwargs: Any,
) -> ProcessDut:
    """The DUT `target` names: "unix" (the unix port, `bundle_board`'s bundle) or "qemu[:IMAGE]"
    (the Cortex-M image); `heap` is a size such as "144K" (None: the target's default). Other
    keywords (port, wdt_ms) go to the DUT."""
    if target.startswith("qemu"):
        from hil.bench.qemu import QemuDut, parse_target

        size = heap_bytes(heap) if heap else None
        return QemuDut(config, variant=parse_target(target), heap=size, workdir=workdir, **kwargs)
    if target != "unix":
        raise ValueError(f"unknown DUT {target!r}: unix or qemu[:IMAGE]")
    return UnixPortDut(
        config, heap=heap or DEFAULT_HEAP, workdir=workdir, bundle_board=bundle_board, **kwargs
    )
