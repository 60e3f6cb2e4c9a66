"""The `cellguard` command. Each subcommand lives in its own module under `hil/cli/`.

Usage: cellguard {sim,serve,codegen,busload,flash,replay,characterize,diag} --help
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Subcommand modules are imported only when chosen, so a broken optional dependency of one
# command cannot stop the others.
COMMANDS = {
    "sim": ("hil.cli.sim", "run the simulated closed loop (the main job) and write a report"),
    "serve": ("hil.cli.serve", "run the virtual BMS as a standalone CAN node"),
    "codegen": ("hil.cli.codegen", "generate the firmware CAN codec from the DBC"),
    "busload": ("hil.cli.busload", "compute the CAN bus load of the DBC's messages"),
    "flash": ("hil.cli.flash", "compile the firmware for a board and copy it with mpremote"),
    "replay": ("hil.cli.replay", "run the firmware's SOC estimator over a recorded trace"),
    "characterize": ("hil.cli.characterize", "fit a cell profile from C/20 and HPPC traces"),
    "diag": ("hil.cli.diag", "UDS diagnostics over CAN: DTCs, DIDs, routines, reset, flash"),
}


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the chosen subcommand; returns the exit code."""
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="cellguard", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    if not argv or argv[0] not in COMMANDS:
        parser.parse_args(argv)  # prints usage or the error and exits
        return 2
    module = importlib.import_module(COMMANDS[argv[0]][0])
    cmd_parser = argparse.ArgumentParser(prog=f"cellguard {argv[0]}", description=module.HELP)
    module.add_arguments(cmd_parser)
    args = cmd_parser.parse_args(argv[1:])
    return int(module.run(args) or 0)
