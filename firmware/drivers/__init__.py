"""Chip drivers for real boards: each takes its bus objects (machine.SPI-like, machine.Pin-like)
in its constructor, touches no hardware at import and allocates nothing in its per-cycle methods.

- `mcp2515`: Microchip MCP2515 stand-alone CAN controller (the ESP32 board's CAN).
- `ltc681x`: Analog Devices LTC6811 / LTC6813 multicell monitors in an isoSPI daisy chain.
- `pec15`: the LTC681x packet error code (CRC-15).

The bus interface and the board mapping are described in docs/drivers.md.
"""
