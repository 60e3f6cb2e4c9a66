"""What every real board shares: its profile, outputs, watchdog, storage and a CAN transmit queue.

A hardware board module (`boards/stm32f4.py`, `boards/esp32.py`) subclasses `HwBoard` and adds the
CAN controller (`_hw_send`, `_hw_recv`) and, if it has one, the cell monitor (`_afe`, an LTC681x
chain: `measure` here reads it). The pins, the watchdog timeout and the CAN bit timing come from
the board's profile: `board.json` on the device's filesystem (copied there by `cellguard flash`
from `boards/<name>.json`), so the pins are written down once, in the profile.

Measurement sources (`sources`, from the profile, docs/boards.md): where the cell voltages
(`cells`), temperatures (`temps`), pack current, pack and link voltage (`pack`) and the auxiliary
inputs, contactor feedback and second current sensor (`aux`), come from: `bench` (SIM_* frames
from the HIL bench), `ltc681x` (the cell monitor: cells, and temperatures from NTCs on its GPIO
inputs), `can-sensor` (an E2E-protected CAN shunt, CS_* frames) or `none`. Profile "measurement"
`bench` declares a HIL board: every source is then `bench`; otherwise the profile's "sources"
apply, and a kind it does not name is `none` (never the bench). The firmware's receive dispatch is
built from this table (firmware/comm.py): a production board never applies a SIM_* frame.

Nothing here touches hardware at import time; the constructor claims the pins (outputs start low:
contactors open, cooling off) and starts the watchdog last.
"""

from firmware.compat import const, ticks_diff, ticks_ms

_TXQ = const(32)  # frames the transmit queue holds while the controller's mailboxes are full
_CONTACTORS = ("contactor_neg", "contactor_pre", "contactor_pos")
PROFILE_FILE = "board.json"
CONFIG_FILE = "config.json"
_GROUP = const(4)  # values per measurement group (firmware/measurement.py)
_NTC_PER_MODULE = const(5)  # GPIO1..5 of each LTC681x; its 6th aux value is the 2nd reference
# Where each measurement may come from (module docstring); the first name is the HIL one.
_KINDS = (
    ("cells", ("bench", "ltc681x", "none")),
    ("temps", ("bench", "ltc681x", "none")),
    ("pack", ("bench", "can-sensor", "none")),
    ("aux", ("bench", "none")),
)
# 10 kOhm NTC (B25/85 3435 K) from GPIO to ground, 10 kOhm pull-up to the 2nd reference: the
# GPIO voltage as a share of the reference (1e-4) at -40, -30 ... 120 degC.
_NTC = (9613, 9312, 8857, 8223, 7416, 6480, 5490, 4526, 3654, 2908, 2296, 1808, 1425, 1128, 898,
        720, 582)  # fmt: skip


def board_sources(profile):
    """The measurement sources of a profile (module docstring): a dict kind -> source name.
    ValueError names a kind whose source the board cannot have."""
    hil = profile.get("measurement", "bench") == "bench"
    given = profile.get("sources", {})
    out = {}
    for kind, allowed in _KINDS:
        src = allowed[0] if hil else given.get(kind, "none")
        if src not in allowed:
            raise ValueError("board profile: unknown measurement source " + kind + " " + src)
        out[kind] = src
    return out


def ntc_dc(mv, ref_mv):
    """Temperature (0.1 degC) of the NTC divider reading `mv` against the reference `ref_mv`;
    clamped to -40..120 degC (an open or shorted sensor reads as the end it sits at, which the
    plausibility and temperature rules catch). Integer interpolation in the _NTC table."""
    if ref_mv <= 0:
        return -400
    r = mv * 10000 // ref_mv
    t = _NTC
    if r >= t[0]:
        return -400
    for i in range(1, len(t)):
        if r >= t[i]:
            return -400 + 100 * (i - 1) + 100 * (t[i - 1] - r) // (t[i - 1] - t[i])
    return 1200


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
        self.sources = board_sources(profile)
        self._afe = None  # the cell monitor, when the subclass fits one (`_fit_afe`)
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
        # its plant); a cell monitor's bleed switches follow it too.
        self.balancing = mask
        if self._afe is not None:
            self._afe.set_dcc(mask)

    def set_cooling(self, on):
        if self._cooling is not None:
            self._cooling.value(1 if on else 0)

    def set_thermal(self, cooling, heating):
        """Thermal outputs; a profile without a `heating` pin has no heater (never preheats)."""
        self.set_cooling(cooling)
        if self._heating is not None:
            self._heating.value(1 if heating else 0)

    def needs_afe(self):
        """True when a source is the cell monitor (the subclass then calls `_fit_afe`)."""
        return "ltc681x" in (self.sources["cells"], self.sources["temps"])

    def _fit_afe(self, spi, cs, afe):
        # `afe`: the profile's "afe" object (modules, cells_per_module).
        from array import array

        from firmware.drivers.ltc681x import Ltc681x

        per_module = afe.get("cells_per_module", 12)
        self._afe = Ltc681x(spi, cs, afe["modules"], per_module)
        self._cells = array("H", [0] * (afe["modules"] * per_module))
        self._aux = array("H", [0] * (afe["modules"] * 6))

    def measure(self, meas, now_ms):
        """The cell monitor's sources: cells (and temperatures) from the LTC681x chain. Sources
        `bench` and `can-sensor` arrive as CAN frames (firmware/comm.py)."""
        afe = self._afe
        if afe is None:
            return
        if self.sources["cells"] == "ltc681x":
            self._measure_cells(afe, meas, now_ms)
        if self.sources["temps"] == "ltc681x":
            self._measure_temps(afe, meas, now_ms)

    def _measure_cells(self, afe, meas, now_ms):
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

    def _measure_temps(self, afe, meas, now_ms):
        # Sensor s is GPIO (s % 5) + 1 of module s // 5; a group is fresh only when every
        # module it reads from answered without a PEC error and the chain has all its sensors
        # (a configured sensor beyond the chain keeps its group stale: it never reads 0 degC).
        # read_aux ends the pipelined cell conversion, so the next read_cells converts afresh.
        aux = self._aux
        afe.read_aux(aux, now_ms)
        st = afe.status
        n = afe.n * _NTC_PER_MODULE
        t = meas.temp_dc
        m = len(t)
        for g in range((m + _GROUP - 1) // _GROUP):
            i = g * _GROUP
            ok = min(i + _GROUP, m) <= n
            for k in range(i, min(i + _GROUP, n)):
                if st[k // _NTC_PER_MODULE]:
                    ok = False
            if not ok:
                continue
            meas.set_temps(
                g,
                self._temp(i, n),
                self._temp(i + 1, n),
                self._temp(i + 2, n),
                self._temp(i + 3, n),
                now_ms,
            )

    def _temp(self, s, n):
        if s >= n:
            return 0
        m = s // _NTC_PER_MODULE
        a = self._aux
        return ntc_dc(a[6 * m + s % _NTC_PER_MODULE], a[6 * m + 5])

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
