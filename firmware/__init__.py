"""cellguard BMS firmware: runs on MicroPython boards, the MicroPython unix port and CPython.

Layers, imports pointing down only: boards (hardware) -> measurement -> estimation / protection /
contactors / limits / balancing (pure logic, time passed in) -> comm (generated CAN codec) -> app.
"""

__version__ = "0.1.0"  # reported by `cellguard flash` after flashing; matches pyproject.toml
