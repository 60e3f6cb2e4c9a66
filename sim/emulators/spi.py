"""A fake SPI bus and chip-select pins: the bus interface the drivers rely on, and no more.

`FakeSpi` implements machine.SPI's `write(buf)`, `readinto(buf, write=0)` and
`write_readinto(wbuf, rbuf)`; `FakePin` implements machine.Pin's `value([v])` and `__call__([v])`.
A device is anything with `select()`, `exchange(mosi) -> miso` (one byte, full duplex: the byte
returned is shifted out while `mosi` is shifted in) and `deselect()`. A falling chip select
selects its device, a rising one ends the transaction. With no device selected MISO reads 0xFF.
"""


class FakePin:
    """Chip-select output: driving it low selects the attached device."""

    def __init__(self, device: object = None) -> None:
        self._v = 1
        self.device = device
        self.transactions = 0

    def value(self, v: int | None = None) -> int | None:
        """Read (no argument) or drive the pin, like machine.Pin.value."""
        if v is None:
            return self._v
        v = 1 if v else 0
        if v != self._v:
            self._v = v
            if self.device is not None:
                if v == 0:
                    self.device.select()
                else:
                    self.transactions += 1
                    self.device.deselect()
        return None

    def __call__(self, v: int | None = None) -> int | None:
        """Same as value(), like calling a machine.Pin."""
        return self.value(v)


class FakeSpi:
    """SPI controller; `attach(device)` returns the chip-select pin wired to that device."""

    def __init__(self) -> None:
        self._pins: list[FakePin] = []
        self.bytes_moved = 0

    def attach(self, device: object) -> FakePin:
        """Wire a device to this bus; returns its chip-select pin (idle high)."""
        pin = FakePin(device)
        self._pins.append(pin)
        return pin

    def _byte(self, mosi: int) -> int:
        self.bytes_moved += 1
        miso = 0xFF
        for pin in self._pins:
            if pin._v == 0 and pin.device is not None:
                miso &= pin.device.exchange(mosi) & 0xFF  # two selected devices: wired-AND
        return miso

    def write(self, buf: bytes) -> None:
        """Shift out `buf`, ignore what comes back."""
        for b in buf:
            self._byte(b)

    def readinto(self, buf: bytearray, write: int = 0) -> None:
        """Fill `buf` while shifting out `write` for every byte."""
        for i in range(len(buf)):
            buf[i] = self._byte(write)

    def write_readinto(self, wbuf: bytes, rbuf: bytearray) -> None:
        """Full duplex: shift out `wbuf` and fill `rbuf` (same length)."""
        if len(wbuf) != len(rbuf):
            raise ValueError("buffers must be the same length")
        for i in range(len(wbuf)):
            rbuf[i] = self._byte(wbuf[i])
