"""The `esp32` board: an ESP32-DevKitC with an MCP2515 CAN controller and an LTC681x cell monitor.

CAN goes through the MCP2515 on SPI (firmware/drivers/mcp2515.py; 8 MHz crystal, 500 kbit/s; the
driver derives the bit timing from `osc_hz`). Measurement source (profile "measurement"):
- `ltc681x`: cell voltages come from an LTC681x daisy chain on a second SPI bus
  (firmware/drivers/ltc681x.py) and passive balancing drives its discharge (DCC) switches;
  temperatures and the pack current/voltage still arrive as CAN frames;
- `bench`: everything arrives as CAN frames from the HIL bench (flash with
  `cellguard flash --measurement bench` for a HIL run) and balancing is only reported on CAN.
Pins, SPI buses and the watchdog timeout come from the profile (`board.json`, from
boards/esp32.json).

On the device: `board.txt` holds "esp32" and main.py calls `from_args([])`.
"""

from array import array

from boards.hw import HwBoard, load_profile
from firmware.compat import const

_GROUP = const(4)  # cells per measurement group (firmware/measurement.py)


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
        self._afe = None
        if self.measurement == "ltc681x":
            from firmware.drivers.ltc681x import Ltc681x

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
            afe_cs = pin(pins["afe_cs"], pin.OUT, value=1)
            per_module = a.get("cells_per_module", 12)
            self._afe = Ltc681x(afe_spi, afe_cs, a["modules"], per_module)
            self._cells = array("H", [0] * (a["modules"] * per_module))
        elif self.measurement != "bench":
            raise ValueError("esp32 board: unknown measurement source " + self.measurement)
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

    # ---- cell monitor ------------------------------------------------------------------------
    def measure(self, meas, now_ms):
        afe = self._afe
        if afe is None:
            return
        cells = self._cells
        afe.read_cells(cells, now_ms)
        # A group is marked fresh only when all its cells are: a cell whose read failed its PEC
        # keeps its old value with fresh = 0, so its group goes stale (and opens) if that lasts.
        fresh = afe.fresh
        n = len(cells)
        for g in range((len(meas.cell_mv) + _GROUP - 1) // _GROUP):
            i = g * _GROUP
            ok = True
            for k in range(i, min(i + _GROUP, n)):
                if not fresh[k]:
                    ok = False
            if not ok:
                continue
            meas.set_cells(
                g,
                cells[i] if i < n else 0,
                cells[i + 1] if i + 1 < n else 0,
                cells[i + 2] if i + 2 < n else 0,
                cells[i + 3] if i + 3 < n else 0,
                now_ms,
            )

    def set_balancing(self, mask):
        self.balancing = mask
        if self._afe is not None:
            self._afe.set_dcc(mask)


def from_args(args):
    """Build the board from its profile on the device (`board.json`)."""
    if args:
        raise ValueError("esp32 board: takes no arguments, settings live in board.json")
    return Board(load_profile())
