"""What every real board shares: its profile, outputs, watchdog, storage and a CAN transmit queue.

A hardware board module (`boards/stm32f4.py`, `boards/esp32.py`) subclasses `HwBoard` and adds the
CAN controller (`_hw_send`, `_hw_recv`) and, if it has one, the measurement front end (`measure`).
The pins, the watchdog timeout and the CAN bit timing come from the board's profile: `board.json`
on the device's filesystem (copied there by `cellguard flash` from `boards/<name>.json`), so the
pins are written down once, in the profile.

Nothing here touches hardware at import time; the constructor claims the pins (outputs start low:
contactors open, cooling off) and starts the watchdog last.
"""

from firmware.compat import const, ticks_diff, ticks_ms

_TXQ = const(32)  # frames the transmit queue holds while the controller's mailboxes are full
_CONTACTORS = ("contactor_neg", "contactor_pre", "contactor_pos")
PROFILE_FILE = "board.json"
CONFIG_FILE = "config.json"


def load_profile(path=PROFILE_FILE):
    """The board's profile (a dict) from its JSON file on the device."""
    import json

    with open(path) as f:
        return json.load(f)


def _reset_cause(machine):
    # Board interface: 0 power-on, 1 watchdog, 2 soft.
    cause = machine.reset_cause()
    if cause == getattr(machine, "WDT_RESET", -1):
        return 1
    if cause == getattr(machine, "SOFT_RESET", -1):
        return 2
    return 0


class HwBoard:
    """Base of the hardware boards; see the module docstring."""

    name = "hw"
    realtime = True  # real boards run on their own clock; SIM_Tick frames are ignored

    def __init__(self, profile, machine):
        self.machine = machine
        self._wdt_ms = profile.get("wdt_ms", 2000)  # the profile itself is not kept: heap
        self.rx_dlc = 0
        self.tx_dropped = 0
        pins = profile["pins"]
        pin = machine.Pin
        # Outputs are claimed low first: every contactor open, cooling and heating off.
        self._contactor_pins = [pin(pins[k], pin.OUT, value=0) for k in _CONTACTORS]
        self.contactors = bytearray(3)
        self._cooling = pin(pins["cooling"], pin.OUT, value=0) if "cooling" in pins else None
        self._heating = pin(pins["heating"], pin.OUT, value=0) if "heating" in pins else None
        self.balancing = None
        self._cause = _reset_cause(machine)
        # Transmit queue: ids, lengths and payloads in preallocated storage, so sending allocates
        # nothing; frames wait here while the controller's hardware buffers are busy.
        self._q_id = [0] * _TXQ
        self._q_dlc = bytearray(_TXQ)
        self._q_data = bytearray(8 * _TXQ)
        self._q_head = 0
        self._q_len = 0
        self._txbuf = bytearray(8)
        txmv = memoryview(self._txbuf)
        self._txviews = [txmv[:n] for n in range(9)]  # a view per length: no slicing per frame
        # One frame of look-ahead for wait(): a frame seen while idling is kept for can_recv().
        self._peek_buf = bytearray(8)
        self._peek_id = -1
        self._peek_dlc = 0
        self._wdt = None

    def start_watchdog(self):
        """Start the hardware watchdog (the subclass calls this once the board is ready)."""
        self._wdt = self.machine.WDT(timeout=self._wdt_ms)

    # ---- clock -------------------------------------------------------------------------------
    def ticks_ms(self):
        return ticks_ms()

    def advance(self, ms):
        """SIM_Tick on a real board: ignored, the board runs on its own clock."""
        return False

    # ---- watchdog ----------------------------------------------------------------------------
    def wdt_feed(self):
        if self._wdt is not None:
            self._wdt.feed()

    def reset_cause(self):
        return self._cause

    # ---- outputs -----------------------------------------------------------------------------
    def set_contactors(self, neg, pre, pos):
        c = self.contactors
        c[0] = neg
        c[1] = pre
        c[2] = pos
        p = self._contactor_pins
        p[0].value(neg)
        p[1].value(pre)
        p[2].value(pos)

    def set_balancing(self, mask):
        # Balancing "can": the mask is reported on CAN by the firmware (the bench applies it to
        # its plant); boards with a cell monitor override this to drive its bleed switches.
        self.balancing = mask

    def set_cooling(self, on):
        if self._cooling is not None:
            self._cooling.value(1 if on else 0)

    def set_thermal(self, cooling, heating):
        """Thermal outputs; a profile without a `heating` pin has no heater (never preheats)."""
        self.set_cooling(cooling)
        if self._heating is not None:
            self._heating.value(1 if heating else 0)

    def measure(self, meas, now_ms):
        """Measurement source `bench`: measurements arrive as CAN frames from the HIL bench."""

    # ---- configuration and storage -----------------------------------------------------------
    def config_overrides(self):
        try:
            f = open(CONFIG_FILE)
        except OSError:
            return None
        import json

        with f:
            return json.load(f)

    def storage_path(self, name):
        """Filesystem path of storage `name` (firmware update slots)."""
        return "cg_" + name

    def reset(self, hard):
        """ECU reset (UDS 0x11), outputs open first."""
        self.set_contactors(0, 0, 0)
        if hard:
            self.machine.reset()
        self.machine.soft_reset()

    def storage_read(self, name):
        try:
            with open("cg_" + name, "rb") as f:
                return f.read()
        except OSError:
            return None

    def storage_write(self, name, data):
        import os

        path = "cg_" + name
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(data)
        try:
            os.rename(tmp, path)
        except OSError:
            # FAT refuses to rename onto an existing file (littlefs replaces it atomically).
            os.remove(path)
            os.rename(tmp, path)

    def halt(self, message):
        self.set_contactors(0, 0, 0)
        print("cellguard: halted:", message)
        # Keep feeding the watchdog with the contactors open: a reset would retry the same bad
        # configuration forever. The console shows why.
        while True:
            self.wdt_feed()
            self.machine.idle()

    # ---- CAN ---------------------------------------------------------------------------------
    def _hw_send(self, can_id, view):
        """Hand one frame (`view` holds exactly its data) to the controller; False when busy."""
        raise NotImplementedError

    def _hw_recv(self, buf):
        """Take one received standard data frame into `buf`, set rx_dlc; its id or -1."""
        raise NotImplementedError

    def can_send(self, can_id, buf, dlc):
        if self._q_len == 0:
            tx = self._txbuf
            for i in range(dlc):
                tx[i] = buf[i]
            if self._hw_send(can_id, self._txviews[dlc]):
                return
        if self._q_len == _TXQ:
            self.tx_dropped += 1
            return
        i = (self._q_head + self._q_len) % _TXQ
        self._q_id[i] = can_id
        self._q_dlc[i] = dlc
        data = self._q_data
        o = i * 8
        for k in range(dlc):
            data[o + k] = buf[k]
        self._q_len += 1

    def tx_pending(self):
        """Frames waiting in the transmit queue."""
        return self._q_len

    def _tx_pump(self):
        data = self._q_data
        tx = self._txbuf
        while self._q_len:
            i = self._q_head
            dlc = self._q_dlc[i]
            o = i * 8
            for k in range(dlc):
                tx[k] = data[o + k]
            if not self._hw_send(self._q_id[i], self._txviews[dlc]):
                return
            self._q_head = (i + 1) % _TXQ
            self._q_len -= 1

    def can_recv(self, buf):
        self._tx_pump()
        cid = self._peek_id
        if cid >= 0:
            self._peek_id = -1
            dlc = self._peek_dlc
            pb = self._peek_buf
            for i in range(dlc):
                buf[i] = pb[i]
            self.rx_dlc = dlc
            return cid
        return self._hw_recv(buf)

    def wait(self, timeout_ms):
        """Idle until a frame arrives or `timeout_ms` passes, sending queued frames meanwhile."""
        t0 = ticks_ms()
        while True:
            self._tx_pump()
            if self._peek_id < 0:
                self._peek_id = self._hw_recv(self._peek_buf)
                self._peek_dlc = self.rx_dlc
            if self._peek_id >= 0 or ticks_diff(ticks_ms(), t0) >= timeout_ms:
                return
            self.machine.idle()  # sleeps until the next interrupt (1 ms tick at most)
