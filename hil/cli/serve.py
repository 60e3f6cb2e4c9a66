"""`cellguard serve`: the virtual BMS as a standalone CAN node.

Starts the firmware on the MicroPython unix port (sim board, real-time clock) and prints how any
python-can or cantools tool reaches it. With `--plant` a real-time bench also feeds it a simulated
pack (rest, then WLTC), so a monitor shows live values instead of a BMS waiting for measurements.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

from hil import DBC_PATH
from hil.bench.dut import DEFAULT_HEAP, UnixPortDut
from hil.bench.loop import Bench
from hil.bench.runner import bench_firmware_config
from hil.bench.transport import SlcanSocketTransport
from hil.cli.errors import Interrupted
from hil.cli.options import (
    HEAP_HELP,
    check_firmware_config,
    config_file,
    free_tcp_port,
    heap_size,
)
from sim.pack import Pack, PackConfig
from sim.sensors import SensorModel

NAME = "serve"
HELP = "run the virtual BMS as a standalone CAN node"


OWNED_KEYS = {"cell_count": "--cells", "temp_count": "--cells", "chemistry": "--chemistry"}
"""Firmware keys the command line sets: a --config file may not."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `cellguard serve`."""
    parser.add_argument("--port", type=int, default=29536, help="TCP port of the SLCAN server")
    parser.add_argument("--cells", type=int, default=16, help="cells in series (1..192)")
    parser.add_argument("--chemistry", default="NMC", choices=["NMC", "LFP"])
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="firmware configuration overrides: a JSON object of firmware/config.py keys, checked "
        "with the firmware's own rules before it starts (cell_count, temp_count and chemistry "
        "come from --cells and --chemistry)",
    )
    parser.add_argument("--heap", type=heap_size, default=DEFAULT_HEAP, help=HEAP_HELP)
    parser.add_argument("--plant", action="store_true", help="also feed a simulated pack")
    parser.add_argument("--seconds", type=float, default=0, help="stop after this long (0: never)")


def run(args: argparse.Namespace) -> int:
    """Serve until Ctrl-C, SIGTERM or --seconds; 0 when stopped so."""
    overrides = config_file(args.config, OWNED_KEYS)
    sensors = SensorModel() if args.plant else None
    config = bench_firmware_config(args.cells, args.chemistry, sensors, overrides)
    check_firmware_config(
        config,
        source=f"--config {args.config}",
        blame={"cell_count": f"--cells {args.cells}", "temp_count": f"--cells {args.cells}"},
    )
    free_tcp_port(args.port)
    dut = UnixPortDut(config, heap=args.heap, realtime=True, port=args.port)
    dut.start()  # DutError (the firmware's own message) if it stops at start
    bench = None
    try:
        channel = dut.channel
        print(
            f"cellguard BMS: {args.cells} x {args.chemistry}, MicroPython unix port, "
            f"heap {args.heap}, 500 kbit/s classic CAN over SLCAN"
        )
        print(f"  python-can: can.Bus(interface='slcan', channel='{channel}', sleep_after_open=0)")
        print(
            f"  monitor:    cantools monitor -i slcan -c {channel} -b 500000 {DBC_PATH} "
            "--bus-kwargs sleep_after_open=0"
        )
        print(f"  console:    {dut.log_path}")
        print(f"  UDS:        cellguard diag --can slcan:{channel} --key-file {dut.key_file} dtc")
        print(f"  VCU key:    {dut.vcu_key_file} (VCU_Request MAC, docs/security.md)")
        print("Ctrl-C stops it.", flush=True)
        if args.plant:
            assert sensors is not None
            pack = Pack(PackConfig(chemistry=args.chemistry, n_cells=args.cells))
            try:
                transport = SlcanSocketTransport("127.0.0.1", args.port)
            except OSError:
                dut.raise_if_stopped()  # a firmware that stopped says why; else the OSError stands
                raise
            bench = Bench(transport, pack, sensors, lockstep=False)
            bench.attach_dut(dut)
        deadline = time.monotonic() + args.seconds if args.seconds else None
        while deadline is None or time.monotonic() < deadline:
            dut.raise_if_stopped(wait_s=0)
            if bench is None:
                time.sleep(0.2)
                continue
            load = 0.0 if bench.t_s < 60 else 0.5 * bench.pack.chemistry.capacity_ah
            bench.step(load if bench.status.closed else 0.0)
    except Interrupted as e:  # Ctrl-C or SIGTERM: the normal way to stop a server
        print(f"cellguard serve: stopped ({signal.Signals(e.signum).name})", file=sys.stderr)
    except KeyboardInterrupt:
        print("cellguard serve: stopped (SIGINT)", file=sys.stderr)
    finally:
        try:
            if bench is not None:
                bench.close()
        finally:
            dut.stop()
            dut.cleanup()
    return 0
