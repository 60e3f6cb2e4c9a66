"""CPython only: the whole firmware (app.Bms) on a fake board with a charger channel, the
simulated DC charger (sim/charger.py) on that channel and the pack plant (sim/pack.py).

Per step of `step_ms` (50 ms: the BCL period) the charger steps on the frames the BMS sent, the
BMS runs its services (and, every 100 ms, takes the bench frames and runs a control cycle), and
the pack carries the charger's current while both its contactors and the charger's relay are
closed. `lose(frame) -> bool` drops frames on the charger bus (both ways). `check()` holds the
invariants every step; `trace` keeps what the tests look at.
"""

from __future__ import annotations

from collections.abc import Callable

from vcu_signer import key_record, request

from firmware import app, can_codec
from firmware import charging as fwc
from sim.charger import DcCharger
from sim.j1939tp import Frame
from sim.pack import Pack, PackConfig

CELLS = 4
OVERRIDES = {"cell_count": CELLS, "temp_count": CELLS}


def vcu_request(alive: int, close: int = 0, charge: int = 1) -> bytes:
    """VCU_Request: the vehicle asks for nothing but charging, signed by the test VCU
    (tests/firmware/vcu_signer.py; its freshness grows with `alive`, counted up from 0)."""
    return request(close, alive, alive + 1, charge=charge)


class ChargerBoard:
    """A board with the vehicle bus (frames injected by the rig) and a charger channel."""

    realtime = False

    def __init__(self, overrides: dict[str, object]) -> None:
        self.overrides = overrides
        self.rx: list[tuple[int, bytes]] = []
        self.rx_dlc = 8
        self.contactors = (0, 0, 0)
        self.storage: dict[str, bytes] = {"vcu_key": key_record()}
        self.charger_rx: list[Frame] = []
        self.charger_tx: list[Frame] = []
        self.charger_dlc = 8

    def config_overrides(self) -> dict[str, object]:
        return self.overrides

    def reset_cause(self) -> int:
        return 0

    def measure(self, meas: object, now_ms: int) -> None:
        pass

    def set_contactors(self, neg: int, pre: int, pos: int) -> None:
        self.contactors = (neg, pre, pos)

    def set_thermal(self, cooling: int, heating: int) -> None:
        pass

    def set_balancing(self, mask: object) -> None:
        pass

    def can_send(self, can_id: int, buf: bytearray, dlc: int) -> None:
        pass

    def can_recv(self, buf: bytearray) -> int:
        if not self.rx:
            return -1
        can_id, data = self.rx.pop(0)
        buf[:8] = data
        return can_id

    def charger_send(self, can_id: int, buf: bytearray, dlc: int) -> bool:
        self.charger_tx.append(Frame(can_id, bytes(buf[:dlc])))
        return True

    def charger_recv(self, buf: bytearray) -> int:
        if not self.charger_rx:
            return -1
        f = self.charger_rx.pop(0)
        buf[: len(f.data)] = f.data
        self.charger_dlc = len(f.data)
        return f.can_id

    def advance(self, ms: int) -> bool:
        return True

    def storage_read(self, name: str) -> bytes | None:
        return self.storage.get(name)

    def storage_write(self, name: str, data: bytes) -> None:
        self.storage[name] = bytes(data)

    def halt(self, message: str) -> None:
        raise AssertionError(message)


class Rig:
    """BMS + charger + pack; see the module docstring."""

    def __init__(
        self,
        charger: DcCharger | None = None,
        soc: float = 0.5,
        overrides: dict[str, object] | None = None,
        lose: Callable[[Frame], bool] | None = None,
        step_ms: int = 50,
    ) -> None:
        self.board = ChargerBoard({**OVERRIDES, **(overrides or {})})
        self.bms = app.build(self.board)
        self.chg = self.bms.charging
        assert self.chg is not None, "the charging service was not registered"
        self.pack = Pack(PackConfig(n_cells=CELLS, soc_mean=soc, soc_sigma=0.0, seed=1))
        self.charger = charger or DcCharger(insulation_ms=1000)
        self.lose = lose or (lambda f: False)
        self.step_ms = step_ms
        self.now = 0
        self._alive = 0
        self.log: list[tuple[int, Frame]] = []  # every frame on the charger bus
        self.bcl_history: list[tuple[int, int]] = []  # (ms, BCL demand mA) as the BMS sent it
        self.closed_at: list[int] = []
        self.bst_frames: list[bytes] = []
        self._prev = (0, 0, 0)
        self._precharged = False
        self.violations: list[str] = []
        # How long delivered current may outlast the demand that allowed it: a lost BST or BCL
        # is covered by the BMS opening its contactors (bounded: open_wait_ms), not by BCL.
        self.grace_ms = 200

    # -- plant and bench ---------------------------------------------------------------------
    def _inject(self) -> None:
        p = self.pack
        buf = bytearray(8)
        mv = [round(v * 1000) for v in p.cell_voltage_v]
        can_codec.encode_sim_cell_voltages(buf, 0, *mv)
        self.board.rx.append((can_codec.SIM_CELL_VOLTAGES_ID, bytes(buf)))
        dc = [round(t * 10) for t in p.temperature_c]
        can_codec.encode_sim_cell_temps(buf, 0, *dc)
        self.board.rx.append((can_codec.SIM_CELL_TEMPS_ID, bytes(buf)))
        current_ma = round(p.current_a * 1000)
        can_codec.encode_sim_pack_measurements(
            buf,
            current_ma,
            round(p.pack_voltage_v * 10),
            round(p.link_voltage_v * 10),
            self._alive & 15,
        )
        self.board.rx.append((can_codec.SIM_PACK_MEASUREMENTS_ID, bytes(buf)))
        neg, pre, pos = self.board.contactors
        can_codec.encode_sim_aux(buf, neg, pre, pos, current_ma)
        self.board.rx.append((can_codec.SIM_AUX_ID, bytes(buf)))
        self.board.rx.append((can_codec.VCU_REQUEST_ID, vcu_request(self._alive)))
        self._alive += 1

    def inlet_v(self) -> float:
        """The voltage at the vehicle inlet: the pack's behind closed contactors."""
        neg, pre, pos = self.board.contactors
        return self.pack.pack_voltage_v if neg and (pos or pre) else 0.0

    def step(self) -> None:
        """One step of `step_ms`: charger, BMS (services, and a cycle every 100 ms), pack."""
        b = self.board
        sent, b.charger_tx = b.charger_tx, []
        for f in sent:
            self.log.append((self.now, f))
            if f.can_id == fwc.c.BST_ID:
                self.bst_frames.append(f.data)
        arriving = [f for f in sent if not self.lose(f)]
        for f in self.charger.step(self.now, arriving, self.inlet_v()):
            self.log.append((self.now, f))
            if not self.lose(f):
                b.charger_rx.append(f)
        if self.now % 100 == 0:
            self._inject()
            self.bms.comm.poll(self.now)
            self.bms.guarded_cycle(self.now)
        for _ in range(4):  # a service with frames waiting gets its turn again at once
            if not self.bms.run_services(self.now):
                break
        if self.chg.state == fwc.CHARGING:
            self.bcl_history.append((self.now, self.chg.bcl_ma))
        self.pack.set_contactors(*(bool(x) for x in b.contactors))
        into = self.charger.output_a if self.charger.relay_closed else 0.0
        self.pack.step(self.step_ms / 1000, -into)
        self.check()
        self.now += self.step_ms

    def run(self, ms: int, until: Callable[[Rig], bool] | None = None) -> None:
        end = self.now + ms
        while self.now < end:
            self.step()
            if until is not None and until(self):
                return

    # -- invariants ----------------------------------------------------------------------------
    def check(self) -> None:
        """Record every invariant broken at this step in `violations`."""
        neg, pre, pos = self.board.contactors
        if pre and neg and not pos:
            self._precharged = True
        if pos and not self._prev[2]:
            self.closed_at.append(self.now)
            if not self._precharged:
                self.violations.append(f"{self.now}: positive closed without a precharge")
            if self.chg.state < fwc.CONFIG or self.chg.state > fwc.CHARGING or not self.chg._cml:
                self.violations.append(f"{self.now}: closed outside a configured session")
        if not pos:
            self._precharged = self._precharged and bool(pre)
        self._prev = (neg, pre, pos)
        if self.bms.errors:
            self.violations.append(f"{self.now}: the firmware caught an exception")
        into_ma = self.pack.current_a * -1000
        if into_ma > 100 and self.charger.faults.overcurrent_at is None:
            recent = [ma for t, ma in self.bcl_history if self.now - t <= self.grace_ms]
            allowed = max(recent, default=0)
            if into_ma > allowed + 100:
                self.violations.append(
                    f"{self.now}: {into_ma:.0f} mA delivered, BCL asked for {allowed} mA"
                )
            lim = self.bms.data.limits.charge_ma
            if into_ma > max(lim, allowed) + self.bms.cfg.limit_margin_ma:
                self.violations.append(f"{self.now}: {into_ma:.0f} mA beyond the limit {lim}")
        for data in self.bst_frames:
            if int.from_bytes(data[:4], "little") & 0x0FFFFFFF & 0x05555555 == 0:
                self.violations.append(f"{self.now}: a BST without a reason {data.hex()}")
        self.bst_frames.clear()


def soc_pct(rig: Rig) -> float:
    """The plant's mean SOC, %."""
    return 100.0 * float(rig.pack.mean_soc)
