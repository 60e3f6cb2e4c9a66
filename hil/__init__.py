"""The cellguard desktop bench: runs the firmware as a device under test and closes the loop.

Modules: `dut` (start the firmware on the unix port), `transport` (CAN links to a DUT), `bench`
(the closed loop: plant -> CAN -> BMS -> commands -> plant), `plugin` (pytest fixtures and options),
`codegen` (DBC -> firmware codec), `busload`, `cli` and `commands/` (the `cellguard` command);
cell profiles: `profiles` (format), `traces` (lab CSVs), `ecm` (re-simulator), `characterize`.
"""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DBC_PATH = REPO_ROOT / "dbc" / "cellguard.dbc"
