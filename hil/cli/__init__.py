"""The `cellguard` command. Each subcommand lives in its own module under `hil/cli/`.

Usage: cellguard {sim,serve,codegen,busload,flash,replay,characterize,diag} --help
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import NoReturn

from hil.bench.dut import DutError
from hil.cli.errors import CliError, Interrupted, interrupts_raise

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


class OneLineParser(argparse.ArgumentParser):
    """An argparse parser whose errors are one line (`cellguard sim: argument --heap: ...`),
    exit 2, with a pointer to --help instead of the usage block."""

    def error(self, message: str) -> NoReturn:
        """Print the one-line usage error and exit 2."""
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the chosen subcommand; returns the exit code.

    Errors are one line on stderr (hil/cli/errors.py): 2 for usage, 1 for a failed run, 128 +
    the signal number for SIGINT/SIGTERM (children ended and files closed first)."""
    argv = sys.argv[1:] if argv is None else argv
    parser = OneLineParser(prog="cellguard", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    if not argv or argv[0] not in COMMANDS:
        parser.parse_args(argv)  # prints help or the one-line error and exits
        return 2
    prog = f"cellguard {argv[0]}"
    module = importlib.import_module(COMMANDS[argv[0]][0])
    cmd_parser = OneLineParser(prog=prog, description=module.HELP)
    module.add_arguments(cmd_parser)
    args = cmd_parser.parse_args(argv[1:])
    try:
        with interrupts_raise():
            return int(module.run(args) or 0)
    except CliError as e:
        return _fail(prog, str(e), e.code)
    except Interrupted as e:
        return _fail(prog, str(e), e.code)
    except KeyboardInterrupt:
        return _fail(prog, "interrupted (SIGINT)", 130)
    except DutError as e:
        return _fail(prog, e.reason, 1)
    except OSError as e:
        where = f"{e.filename}: " if e.filename else ""
        return _fail(prog, f"{where}{e.strerror or e}", 1)
    except Exception as e:
        # The bench's protocol errors, without importing the bench (python-can, cantools) for
        # commands that never use it.
        loop = sys.modules.get("hil.bench.loop")
        if loop is not None and isinstance(e, loop.BenchError):
            return _fail(prog, str(e).splitlines()[0], 1)
        raise


def _fail(prog: str, message: str, code: int) -> int:
    print(f"{prog}: {message}", file=sys.stderr)
    return code
