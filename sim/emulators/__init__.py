"""Register-level emulators of the chips the firmware drivers talk to (in the spirit of Zephyr's
emulators: the real driver runs against a simulated chip on a simulated bus).

- `spi`: `FakeSpi` (machine.SPI's write / readinto / write_readinto) and `FakePin` (a chip select
  with value() / __call__), routing bytes to the device whose chip select is low.
- `mcp2515`: the MCP2515 CAN controller (register file, SPI instructions, modes, TX/RX buffers).
- `ltc681x`: a daisy chain of LTC6811 / LTC6813 monitors with fault injection.

Desktop code, but written in the subset MicroPython also runs (no typing or dataclasses at
runtime), so the driver checks can run the emulators on the unix port too.
"""
