"""The `replay` board: runs the firmware over a recorded measurement trace (`cellguard replay`).

Owns the trace-driven I/O: measure() hands the firmware the held trace sample (zero-order hold:
every control cycle sees the latest sample at or before its time), the firmware clock is the trace
time, outputs go nowhere, and after each sample one line of estimates goes to stdout. The desktop
(hil/cellmodel/replay.py) validates and converts the CSV and streams it on stdin, one sample per
line:

    in:  t_ms current_ma cell_mv_1 .. cell_mv_N temp_dc_1 .. temp_dc_M
    out: soc soc_bound cell_soc_1 .. cell_soc_N          (0.01 %)

The trace ends at the end of input or at an empty line (a board's console has no end of file:
on the Cortex-M image the host ends it so).

Run: micropython -X heapsize=168K -c "import boards.replay as r; r.main()" CONFIG [INITIAL_SOC]
with the bundle on sys.path; INITIAL_SOC (0.01 %) starts the estimator as if that SOC had been
restored with a 30 % error bound (or INITIAL_BOUND, 0.01 %, a third argument), instead of from
OCV.
"""

import json
import struct
import sys
from array import array

_INITIAL_BOUND = 3000  # error bound of an --initial-soc start, 0.01 %


class Board:
    """Trace-driven board; `load(fields)` sets the held sample."""

    name = "replay"
    realtime = False

    def __init__(self, config_path):
        self._config_path = config_path
        self.rx_dlc = 0
        self.cells = None
        self.temps = None
        self.current_ma = 0

    def config_overrides(self):
        with open(self._config_path) as f:
            return json.load(f)

    def setup(self, cfg):
        """Sample buffers for the configured pack (padded to whole groups of four)."""
        self._n = cfg.cell_count
        self._m = cfg.temp_count
        self.cells = array("H", [0] * ((self._n + 3) // 4 * 4))
        self.temps = array("h", [0] * ((self._m + 3) // 4 * 4))

    def load(self, fields):
        """Hold the sample in `fields` (strings: t, current, cells, temperatures)."""
        self.current_ma = int(fields[1])
        n = self._n
        for i in range(n):
            self.cells[i] = int(fields[2 + i])
        for i in range(self._m):
            self.temps[i] = int(fields[2 + n + i])

    def measure(self, meas, now_ms):
        """Feed the held sample, time-stamped now."""
        c = self.cells
        t = self.temps
        for g in range(len(c) // 4):
            meas.set_cells(g, c[4 * g], c[4 * g + 1], c[4 * g + 2], c[4 * g + 3], now_ms)
        for g in range(len(t) // 4):
            meas.set_temps(g, t[4 * g], t[4 * g + 1], t[4 * g + 2], t[4 * g + 3], now_ms)
        pack = 0
        for v in c:
            pack += v
        meas.set_pack(self.current_ma, pack, pack, now_ms)

    def ticks_ms(self):
        return 0

    def can_send(self, can_id, buf, dlc):
        pass

    def can_recv(self, buf):
        return -1

    def wait(self, timeout_ms):
        pass

    def set_contactors(self, neg, pre, pos):
        pass

    def set_balancing(self, mask):
        pass

    def set_thermal(self, cooling, heating):
        pass

    def wdt_feed(self):
        pass

    def reset_cause(self):
        return 0

    def storage_read(self, name):
        return None

    def storage_write(self, name, data):
        pass

    def halt(self, message):
        print("cellguard replay:", message)


def main(argv=None):
    """Replay stdin through the firmware; see the module docstring."""
    args = sys.argv[1:] if argv is None else argv
    board = Board(args[0])
    # The configuration (with its profile) before the rest of the firmware, as firmware/main.py.
    from firmware import config

    cfg = config.from_board(board)
    from firmware import app
    from firmware.data import cell_soc
    from firmware.soc_record import HEAD

    bms = app.build(board, cfg)
    board.setup(cfg)
    est = bms.estimator
    soc = bms.data.soc
    if len(args) > 1:
        buf = bytearray(est.state_size)
        est.save_state(buf)
        initial = int(args[1])
        bound = int(args[2]) if len(args) > 2 else _INITIAL_BOUND
        struct.pack_into("<HH", buf, 2, initial, bound)
        for i in range(cfg.cell_count):
            struct.pack_into("<H", buf, HEAD + 2 * i, initial)
        if not est.restore_state(buf):
            raise ValueError("initial SOC out of range")
    period = cfg.cycle_ms
    next_c = None
    out = sys.stdout
    line = sys.stdin.readline()
    while line.strip():
        fields = line.split()
        t = int(fields[0])
        if next_c is None:
            next_c = t
        while next_c < t:  # the held sample until this one's time
            bms.guarded_cycle(next_c & 0x3FFFFFFF)
            next_c += period
        board.load(fields)
        while next_c <= t:
            bms.guarded_cycle(next_c & 0x3FFFFFFF)
            next_c += period
        out.write(str(soc.soc) + " " + str(soc.soc_bound))
        for i in range(cfg.cell_count):
            out.write(" " + str(cell_soc(soc, i)))
        out.write("\n")
        line = sys.stdin.readline()
