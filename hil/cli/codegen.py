"""`cellguard codegen`: generate the firmware CAN codecs from the DBCs (firmware/can_codec.py from
dbc/cellguard.dbc, firmware/gbt_codec.py from dbc/gbt27930.dbc; each with its `_peer` module of
the bench's directions), or check that they are current."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hil.cli.options import load_dbc
from hil.toolchain import codegen

NAME = "codegen"
HELP = "generate the firmware CAN codecs from the DBCs (--check: fail if a committed one is stale)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the codegen options to `parser`."""
    parser.add_argument(
        "--dbc", type=Path, default=None, help="source DBC (default: every DBC of the project)"
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="generated module (default: the DBC's own)"
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 if a generated module differs from what its DBC generates",
    )


def _pairs(args: argparse.Namespace) -> list[tuple[Path, Path]]:
    if args.dbc is None and args.out is None:
        return [(Path(d), Path(o)) for d, o in codegen.CODECS]
    known = {Path(d).resolve(): Path(o) for d, o in codegen.CODECS}
    dbc = Path(args.dbc) if args.dbc is not None else Path(codegen.CODECS[0][0])
    out = args.out if args.out is not None else known.get(dbc.resolve(), codegen.DEFAULT_OUT)
    return [(dbc, Path(out))]


def run(args: argparse.Namespace) -> int:
    """Generate (or with --check verify) the codecs; return the exit status."""
    status = 0
    for dbc, out in _pairs(args):
        load_dbc(dbc)  # a missing or malformed DBC: one line naming it
        if args.check:
            if codegen.is_stale(dbc, out, codegen.FIRMWARE_NODE):
                print(
                    f"{out} is stale: it does not match {dbc}; run `cellguard codegen`",
                    file=sys.stderr,
                )
                status = 1
            else:
                print(f"{out} is up to date with {dbc}")
            continue
        codegen.write(dbc, out, codegen.FIRMWARE_NODE)
        print(f"wrote {out} from {dbc}")
    return status
