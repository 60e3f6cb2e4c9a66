"""`cellguard codegen`: generate firmware/can_codec.py (the BMS's directions) and
firmware/can_codec_peer.py (the bench's) from the DBC, or check that they are current."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hil import DBC_PATH
from hil.cli.options import load_dbc
from hil.toolchain import codegen

NAME = "codegen"
HELP = "generate the firmware CAN codec from the DBC (--check: fail if the committed one is stale)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the codegen options to `parser`."""
    parser.add_argument("--dbc", type=Path, default=DBC_PATH, help="source DBC")
    parser.add_argument("--out", type=Path, default=codegen.DEFAULT_OUT, help="generated module")
    parser.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 if --out differs from what the DBC generates",
    )


def run(args: argparse.Namespace) -> int:
    """Generate (or with --check verify) the codec; return the exit status."""
    load_dbc(args.dbc)  # a missing or malformed DBC: one line naming it
    if args.check:
        if codegen.is_stale(args.dbc, args.out, codegen.FIRMWARE_NODE):
            print(
                f"{args.out} is stale: it does not match {args.dbc}; run `cellguard codegen`",
                file=sys.stderr,
            )
            return 1
        print(f"{args.out} is up to date with {args.dbc}")
        return 0
    codegen.write(args.dbc, args.out, codegen.FIRMWARE_NODE)
    print(f"wrote {args.out} from {args.dbc}")
    return 0
