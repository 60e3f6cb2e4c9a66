"""The `esp32` board: an ESP32-DevKitC with an MCP2515 CAN controller and an LTC681x cell monitor.

CAN goes through the MCP2515 on SPI (firmware/drivers/mcp2515.py; 8 MHz crystal, 500 kbit/s; the
driver derives the bit timing from `osc_hz`). Measurement sources (profile "sources", boards/hw.py):
- `ltc681x`: cell voltages and temperatures (NTCs on its GPIO inputs) come from an LTC681x daisy
  chain on a second SPI bus (firmware/drivers/ltc681x.py) and passive balancing drives its
  discharge (DCC) switches; the pack current and voltages come from a CAN shunt (`can-sensor`);
- profile "measurement" `bench`: everything arrives as CAN frames from the HIL bench (flash with
  `cellguard flash --measurement bench` for a HIL run) and balancing is only reported on CAN.
Pins, SPI buses and the watchdog timeout come from the profile (`board.json`, from
boards/esp32.json).

On the device: `board.txt` holds "esp32" and main.py calls `from_args([])`.
"""

from boards.hw import HwBoard, load_profile


class Board(HwBoard):
    """ESP32 + MCP2515 (+ LTC681x) board; `profile` is the parsed board.json."""

    name = "esp32"

    def __init__(self, profile, machine=None):
        if machine is None:
            import machine
        super().__init__(profile, machine)
        from firmware.drivers.mcp2515 import Mcp2515

        pins = profile["pins"]
        pin = machine.Pin
        c = profile["can"]
        spi = machine.SPI(
            c["spi"],
            baudrate=c["spi_baudrate"],
            polarity=0,
            phase=0,
            sck=pin(pins["can_sck"]),
            mosi=pin(pins["can_mosi"]),
            miso=pin(pins["can_miso"]),
        )
        self._can = Mcp2515(spi, pin(pins["can_cs"], pin.OUT, value=1), c["osc_hz"])
        if not self._can.ready:
            print("esp32 board: the MCP2515 does not answer; no CAN, contactors stay open")
        self.measurement = profile.get("measurement", "bench")
        if self.measurement not in ("bench", "ltc681x"):
            raise ValueError("esp32 board: unknown measurement source " + self.measurement)
        if self.needs_afe():
            a = profile["afe"]
            afe_spi = machine.SPI(
                a["spi"],
                baudrate=a["spi_baudrate"],
                polarity=1,  # the LTC681x samples on the rising edge with an idle-high clock
                phase=1,
                sck=pin(pins["afe_sck"]),
                mosi=pin(pins["afe_mosi"]),
                miso=pin(pins["afe_miso"]),
            )
            self._fit_afe(afe_spi, pin(pins["afe_cs"], pin.OUT, value=1), a)
        self.start_watchdog()

    # ---- CAN through the MCP2515 -------------------------------------------------------------
    def _hw_send(self, can_id, view):
        return self._can.send(can_id, view, len(view))

    def _hw_recv(self, buf):
        can = self._can
        cid = can.recv_into(buf)
        if cid >= 0:
            self.rx_dlc = can.dlc
        return cid


def from_args(args):
    """Build the board from its profile on the device (`board.json`)."""
    if args:
        raise ValueError("esp32 board: takes no arguments, settings live in board.json")
    return Board(load_profile())
