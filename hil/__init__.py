"""The cellguard desktop side, one package per concern.

- `hil.bench`: the bench runtime: DUTs (`dut`), CAN links (`transport`), the closed loop (`loop`),
  fault injection (`inject`), the pytest plugin (`plugin`), the serial bridge (`pty_bridge`) and
  run reports (`report`).
- `hil.toolchain`: what turns the sources into a board's firmware: the DBC codec generator
  (`codegen`), the bytecode bundles (`build`) and the bus-load calculator (`busload`).
- `hil.cellmodel`: cell-model tools: lab traces (`traces`), cell profiles (`profiles`), the
  equivalent-circuit re-simulator (`ecm`), `characterize` and `replay`.
- `hil.cli`: the `cellguard` command, one module per subcommand.
"""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DBC_PATH = REPO_ROOT / "dbc" / "cellguard.dbc"
GBT_DBC_PATH = REPO_ROOT / "dbc" / "gbt27930.dbc"
"""The DC-charging contract (GB/T 27930, docs/charging.md): the charger CAN channel."""
