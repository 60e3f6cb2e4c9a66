"""`cellguard busload`: worst-case CAN bus load of the DBC's messages for a pack size."""

from __future__ import annotations

import argparse
from pathlib import Path

from hil import DBC_PATH
from hil.cli.errors import UsageError
from hil.cli.options import load_dbc
from hil.toolchain.busload import bus_load, format_table, log_rates

NAME = "busload"
HELP = (
    "compute the CAN bus load per message, per sender and in total, at the schedule of the DBC "
    "(GenMsgCycleTime, GenMsgSendType); --log shows a log's measured rates beside it"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the busload options to `parser`."""
    parser.add_argument("--dbc", type=Path, default=DBC_PATH, help="DBC to analyse")
    parser.add_argument("--cells", type=int, default=192, help="cells in series")
    parser.add_argument(
        "--temps", type=int, default=None, help="temperature sensors (default: as many as cells)"
    )
    parser.add_argument("--bitrate", type=int, default=500_000, help="bit/s")
    parser.add_argument(
        "--log",
        type=Path,
        metavar="FILE",
        help="a CAN log (.blf, .asc) whose measured frame rates to show beside the computed ones",
    )
    parser.add_argument(
        "--control-period",
        type=int,
        default=100,
        help="ms; messages without a cycle time (SIM_Tick) go once per control period",
    )


def run(args: argparse.Namespace) -> int:
    """Print the bus load table; return the exit status."""
    temps = args.cells if args.temps is None else args.temps
    for option, value in (("--cells", args.cells), ("--temps", temps)):
        if value < 1:
            raise UsageError(f"{option} {value}: must be at least 1")
    db = load_dbc(args.dbc)
    try:
        rows = bus_load(db, args.cells, temps, args.bitrate, args.control_period)
    except ValueError as e:
        raise UsageError(f"--cells {args.cells}: {e}") from None
    measured = None
    if args.log is not None:
        if not args.log.is_file():
            raise UsageError(f"--log {args.log}: no such file")
        try:
            measured = log_rates(args.log)
        except (ValueError, OSError) as e:
            raise UsageError(f"--log {args.log}: {e}") from None
    print(
        f"{args.dbc.name}: {args.cells} cells, {temps} temperature sensors, "
        f"{args.bitrate / 1000:g} kbit/s, control period {args.control_period} ms, "
        "worst-case bit stuffing"
    )
    print(format_table(rows, measured))
    return 0
