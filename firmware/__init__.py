"""cellguard BMS firmware: runs on MicroPython boards, the MicroPython unix port and CPython.

Layers, imports pointing down only: boards (hardware) -> measurement -> estimation / protection /
contactors / limits / balancing (pure logic, time passed in) -> comm (generated CAN codec) -> app.
"""
