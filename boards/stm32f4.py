"""The `stm32f4` board: an ST NUCLEO-F413ZH (STM32F413ZH) on CAN1 through an external transceiver.

MicroPython board NUCLEO_F413ZH; CAN1 on PG0 RX / PG1 TX to a 3.3 V transceiver (e.g. SN65HVD230).
CAN goes through `machine.CAN` (MicroPython >= 1.28 on stm32) and falls back to `pyb.CAN` on older
firmware; both receive into a preallocated list and buffer, so receiving allocates nothing. Bit
timing is explicit (profile "can": SYSCLK 96 MHz, APB1 = HCLK / 4 = 24 MHz / prescaler 3 = 8 MHz,
1 + tseg1 13 + tseg2 2 = 16 time quanta per bit = 500 kbit/s, sample point 87.5 %). Measurement
sources (profile "sources", boards/hw.py): an LTC681x chain (through an LTC6820 isoSPI bridge) on
SPI1 (PA5 SCK, PA6 MISO, PA7 MOSI; chip select from the profile) gives the cell voltages and the
temperatures, a CAN shunt (`can-sensor`) the pack current and voltages; profile "measurement"
`bench` (`cellguard flash --measurement bench`) makes it a HIL board fed by the bench's SIM_*
frames. Pins, bit timing and the watchdog timeout come from the profile (`board.json`, from
boards/stm32f4.json).

On the device: `board.txt` holds "stm32f4" and main.py calls `from_args([])`.
"""

from boards.hw import HwBoard, load_profile
from firmware.compat import const

_FLAG_EXT_ID = const(1)  # machine.CAN flag bits (the class constants are read when present)
_FLAG_RTR = const(2)


class Board(HwBoard):
    """NUCLEO-F413ZH board; `profile` is the parsed board.json."""

    name = "stm32f4"

    def __init__(self, profile, machine=None, pyb=None):
        if machine is None:
            import machine
        super().__init__(profile, machine)
        can_cfg = profile["can"]
        self._rxbuf = bytearray(8)
        can_cls = getattr(machine, "CAN", None)
        if can_cls is not None:
            self._init_machine_can(can_cls, can_cfg)
        else:
            if pyb is None:
                import pyb
            self._init_pyb_can(pyb.CAN, can_cfg)
        if self.needs_afe():
            a = profile["afe"]
            pin = machine.Pin
            # SPI1's pins are fixed by the peripheral; mode 3 (idle-high clock, rising edge).
            spi = machine.SPI(a["spi"], baudrate=a["spi_baudrate"], polarity=1, phase=1)
            self._fit_afe(spi, pin(profile["pins"]["afe_cs"], pin.OUT, value=1), a)
        self.start_watchdog()

    def _init_machine_can(self, can_cls, c):
        self.can_api = "machine.CAN"
        can = can_cls(c["bus"], c["bitrate"], tseg1=c["tseg1"], tseg2=c["tseg2"], sjw=c["sjw"])
        can.set_filters(None)  # receive everything; the firmware dispatches on the id
        self._can = can
        # Several frames share an id (multiplexed groups); their order on the bus does not matter.
        self._send_flags = getattr(can_cls, "FLAG_UNORDERED", 0)
        self._skip_flags = getattr(can_cls, "FLAG_EXT_ID", _FLAG_EXT_ID) | getattr(
            can_cls, "FLAG_RTR", _FLAG_RTR
        )
        self._rxlist = [0, memoryview(self._rxbuf), 0, 0]
        self._hw_send = self._send_machine
        self._hw_recv = self._recv_machine

    def _init_pyb_can(self, can_cls, c):
        self.can_api = "pyb.CAN"
        can = can_cls(
            c["bus"],
            can_cls.NORMAL,
            prescaler=c["prescaler"],
            sjw=c["sjw"],
            bs1=c["tseg1"],
            bs2=c["tseg2"],
            auto_restart=True,
        )
        can.setfilter(0, can_cls.MASK16, 0, (0, 0, 0, 0))  # accept everything into FIFO 0
        self._can = can
        self._rxlist = [0, 0, 0, memoryview(self._rxbuf)]
        self._hw_send = self._send_pyb
        self._hw_recv = self._recv_pyb

    # machine.CAN: send() returns None when the transmit queue is full.
    def _send_machine(self, can_id, view):
        try:
            return self._can.send(can_id, view, self._send_flags) is not None
        except OSError:  # bus off: the frame is lost, the loop goes on (stale at the receiver)
            self.tx_dropped += 1
            return True

    def _recv_machine(self, buf):
        can = self._can
        lst = self._rxlist
        while True:
            if can.recv(lst) is None:
                return -1
            if lst[2] & self._skip_flags:
                continue  # extended ids and remote frames are not part of the contract
            data = lst[1]
            n = len(data)
            for i in range(n):
                buf[i] = data[i]
            self.rx_dlc = n
            return lst[0]

    # pyb.CAN: send(timeout=0) raises OSError when all three mailboxes are busy.
    def _send_pyb(self, can_id, view):
        try:
            self._can.send(view, can_id, timeout=0)
        except OSError:
            return False
        return True

    def _recv_pyb(self, buf):
        can = self._can
        lst = self._rxlist
        while can.any(0):
            can.recv(0, lst, timeout=0)
            if lst[1]:
                continue  # remote frame
            data = lst[3]
            n = len(data)
            for i in range(n):
                buf[i] = data[i]
            self.rx_dlc = n
            return lst[0]
        return -1


def from_args(args):
    """Build the board from its profile on the device (`board.json`)."""
    if args:
        raise ValueError("stm32f4 board: takes no arguments, settings live in board.json")
    return Board(load_profile())
