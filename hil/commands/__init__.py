"""Subcommands of the `cellguard` CLI: one module each (NAME, HELP, add_arguments, run)."""
