"""Board layers: one module per board providing `Board` and `from_args` (docs/ARCHITECTURE.md)."""
