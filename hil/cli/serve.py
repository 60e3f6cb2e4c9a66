"""`cellguard serve`: the virtual BMS as a standalone CAN node.

Starts the firmware on the MicroPython unix port (sim board, real-time clock) and prints how any
python-can or cantools tool reaches it. With `--plant` a real-time bench also feeds it a simulated
pack (rest, then WLTC), so a monitor shows live values instead of a BMS waiting for measurements.
"""

from __future__ import annotations

import argparse
import time

from hil import DBC_PATH
from hil.bench.dut import DEFAULT_HEAP, UnixPortDut
from hil.bench.loop import Bench
from hil.bench.transport import SlcanSocketTransport
from hil.cellmodel.profiles import plant_profile
from sim.pack import Pack, PackConfig
from sim.sensors import SensorModel

NAME = "serve"
HELP = "run the virtual BMS as a standalone CAN node"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `cellguard serve`."""
    parser.add_argument("--port", type=int, default=29536, help="TCP port of the SLCAN server")
    parser.add_argument("--cells", type=int, default=16)
    parser.add_argument("--chemistry", default="NMC", choices=["NMC", "LFP"])
    parser.add_argument("--heap", default=DEFAULT_HEAP)
    parser.add_argument("--plant", action="store_true", help="also feed a simulated pack")
    parser.add_argument("--seconds", type=float, default=0, help="stop after this long (0: never)")


def run(args: argparse.Namespace) -> int:
    """Serve until Ctrl-C (or --seconds)."""
    config = {"cell_count": args.cells, "temp_count": args.cells, "chemistry": args.chemistry}
    sensors = SensorModel()
    if args.plant:
        # The simulated pack's sense lines are shared with the bleed path: tell the firmware.
        config["balance_sense_mohm"] = round(sensors.sense_line_ohm * 1000)
    config["profile"] = plant_profile(args.chemistry)  # the served plant's own cell model
    dut = UnixPortDut(config, heap=args.heap, realtime=True, port=args.port)
    dut.start()
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
    print("Ctrl-C stops it.", flush=True)
    bench = None
    if args.plant:
        pack = Pack(PackConfig(chemistry=args.chemistry, n_cells=args.cells))
        bench = Bench(SlcanSocketTransport("127.0.0.1", args.port), pack, sensors, lockstep=False)
        bench.dut = dut
    deadline = time.monotonic() + args.seconds if args.seconds else None
    try:
        while deadline is None or time.monotonic() < deadline:
            if not dut.alive():
                print(dut.console())
                return 1
            if bench is None:
                time.sleep(0.2)
                continue
            load = 0.0 if bench.t_s < 60 else 0.5 * bench.pack.chemistry.capacity_ah
            bench.step(load if bench.status.closed else 0.0)
    except KeyboardInterrupt:
        pass
    finally:
        if bench is not None:
            bench.close()
        dut.stop()
    return 0
