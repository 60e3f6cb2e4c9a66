"""`python -m hil.cli` runs the `cellguard` command."""

import sys

from hil.cli import main

sys.exit(main())
