"""CAN communication: what the BMS receives and when it transmits what.

Owns the receive dispatch and the transmit schedule of every BMS message in dbc/cellguard.dbc. All
packing goes through the codec generated from the DBC (`can_codec`); buffers are preallocated so
a cycle does not allocate.

The receive dispatch is built once, at start-up, from the board's measurement sources
(`board.sources`, boards/hw.py; a board without the table is a bench board): a SIM_* frame is
applied only for a measurement whose source is `bench`, the current sensor's CS_* frames only
when the pack source is `can-sensor`; the frames of the two diagnostic request ids go to the
diagnostic port (firmware/diag_port.py), VCU_Request to its checks. A bench frame for a
measurement the board takes from elsewhere is counted (`rejected`, BMS_State RejectedFrames) and
sets the InputRejected warning flag of BMS_State until a FaultReset; any other id nothing
registered is dropped unread.

VCU_Request and the current sensor's frames are protected end to end (firmware/e2e.py: CRC-8 SAE
J1850 over the data ID and bytes 0..6, counter + 1 mod 16, a timeout); VCU_Request also carries a
MAC over its request and a freshness value (firmware/secoc.py). A VCU_Request failing any check is
rejected (its request is never taken, so it never closes anything) and counted: at the E2E
check's limit the application raises VcuRequestInvalid. A current-sensor frame failing
them is never applied and counted as rejected; a sensor that keeps failing takes nothing until a
FaultReset, and its values go stale (MeasurementStale). The sensor's current and voltages are
two signal groups (CS_Current, CS_Voltage): the pack measurement is as fresh as the older of them.
"""

from . import can_codec as c
from .compat import ticks_diff, ticks_us
from .data import cell_soc
from .e2e import E2eCheck, crc8_j1850  # noqa: F401 - crc8_j1850 re-exported for the tests
from .secoc import SecOc

_BENCH = "bench"
_GROUP_CELLS = 4  # cells (or sensors) per multiplexed voltage/temperature frame
_BAL_GROUP_CELLS = 24  # cells per BMS_Balancing group


class Comm:
    """Decodes received frames into the measurement store and sends the BMS's frames."""

    def __init__(self, board, cfg, data):
        self.board = board
        self.cfg = cfg
        self.data = data
        self.meas = data.meas
        self.rx = bytearray(8)
        self.tx = bytearray(8)
        self.out = [0] * 8  # decoded signals of the widest received frame (VCU_Request)
        self.vcu_close = 0
        self.vcu_reset = 0
        self.vcu_e2e = E2eCheck(c.VCU_REQUEST_ID, cfg.vcu_bad_count)
        self.secoc = SecOc(board)  # VCU_Request's MAC and freshness (firmware/secoc.py)
        self.vcu_charge = 0
        self._start_ms = None  # the first poll (vcu_stale)
        # The current sensor's two signal groups and their values (mA, mV) until both are fresh.
        self.cs_current = E2eCheck(c.CS_CURRENT_ID, cfg.vcu_bad_count)
        self.cs_voltage = E2eCheck(c.CS_VOLTAGE_ID, cfg.vcu_bad_count)
        self._cs_ma = 0
        self._cs_pack_mv = 0
        self._cs_link_mv = 0
        self.rejected = 0  # frames refused on the receive path (bench frames, sensor E2E)
        self.input_rejected = False  # one since start or the last FaultReset (BMS_State)
        self.diag = None  # the ISO-TP layer of the diagnostic server (firmware/isotp.py)
        # UDS 0x28 communication control: normal messages received / sent
        self.rx_enabled = True
        self.tx_enabled = True
        self.tick_pending = False
        self.tick_seq = 0
        self._reset_edge = False
        self._rx_budget = cfg.rx_budget_frames
        self._rx_us = cfg.rx_budget_us
        self.rx_deferred = 0  # passes that ended on the budget with frames left (a flood)
        # The receive queue ran empty since the application last looked: False through a whole
        # period is a backlog the budget holds back (a flood), reported as LoopOverrun.
        self.rx_drained = True
        self._cycle = 0
        self._v_groups = (cfg.cell_count + _GROUP_CELLS - 1) // _GROUP_CELLS
        self._t_groups = (cfg.temp_count + _GROUP_CELLS - 1) // _GROUP_CELLS
        self._b_groups = (cfg.cell_count + _BAL_GROUP_CELLS - 1) // _BAL_GROUP_CELLS
        self._v_next = 0
        self._t_next = 0
        self._b_next = 0
        # Each full multiplexed set goes out once per its period (GenMsgCycleTime in the DBC),
        # its groups spread evenly over the cycles of that period (_due).
        self._cells_every = max(1, cfg.tx_cells_ms // cfg.cycle_ms)
        self._bal_every = max(1, cfg.tx_balancing_ms // cfg.cycle_ms)
        self._status_every = max(1, cfg.tx_status_ms // cfg.cycle_ms)
        self._s_next = 0  # BMS_CellSoc group
        self._b_sent = -1  # reason and strategy of the last BMS_Balancing sent
        # The cycle counter wraps where every schedule above starts over, so it stays a small
        # int however long the BMS runs (no big-int allocation after 2**30 cycles).
        self._wrap = self._status_every * self._cells_every * self._bal_every
        self._dispatch = self._build_dispatch(getattr(board, "sources", None))
        # The decoders of most received frames, looked up once instead of per frame.
        self._cells_into = c.decode_sim_cell_voltages_into
        self._temps_into = c.decode_sim_cell_temps_into

    def _build_dispatch(self, sources):
        """id -> handler(now_ms) from the board's measurement sources (module docstring)."""
        src = sources or {}
        d = {c.VCU_REQUEST_ID: self._vcu}
        # Cell voltages and temperatures (no handler here) are most of the frames: poll() takes
        # them itself when they come from the bench (_fast_cells/_fast_temps, else -1).
        bench_frames = (
            ("cells", c.SIM_CELL_VOLTAGES_ID, None),
            ("temps", c.SIM_CELL_TEMPS_ID, None),
            ("pack", c.SIM_PACK_MEASUREMENTS_ID, self._sim_pack),
            ("aux", c.SIM_AUX_ID, self._sim_aux),
        )
        any_bench = False
        self._fast_cells = self._fast_temps = -1
        for kind, cid, handler in bench_frames:
            bench = src.get(kind, _BENCH) == _BENCH
            any_bench = any_bench or bench
            if not bench:
                d[cid] = self._refuse
            elif handler is not None:
                d[cid] = handler
            elif kind == "cells":
                self._fast_cells = cid
            else:
                self._fast_temps = cid
        # The lock-step clock belongs to bench boards (a hardware board ignores it anyway).
        d[c.SIM_TICK_ID] = self._tick if any_bench else self._refuse
        if src.get("pack") == "can-sensor":
            d[c.CS_CURRENT_ID] = self._cs_current
            d[c.CS_VOLTAGE_ID] = self._cs_voltage
        return d

    # ---- receive -----------------------------------------------------------------------------
    def poll(self, now_ms):
        """Handle the waiting frames, at most rx_budget_frames of them and for rx_budget_us: a
        flood cannot hold off the control cycle (what is left waits for the next pass, and a
        measurement stuck behind it goes stale, which opens). Stops early at a SIM_Tick so the
        caller can run the cycle. True when the budget ran out with frames possibly waiting."""
        if self._start_ms is None:
            self._start_ms = now_ms
        board = self.board
        recv = board.can_recv
        rx = self.rx
        get = self._dispatch.get
        meas = self.meas
        cells = self._fast_cells
        temps = self._fast_temps
        cells_into = self._cells_into
        temps_into = self._temps_into
        budget = self._rx_budget
        t0 = ticks_us()
        n = 0
        while True:
            # The clock is read every 16 frames: a frame costs far less than the time budget.
            if n >= budget or ((n & 15) == 15 and ticks_diff(ticks_us(), t0) >= self._rx_us):
                self.rx_deferred += 1
                return True
            cid = recv(rx)
            if cid < 0:
                self.rx_drained = True
                return False
            n += 1
            if cid == cells or cid == temps:
                # A measurement group decodes straight into the measurement arrays (the
                # group's values, no tuple); the measurement checks the group and marks it fresh.
                if board.rx_dlc != 8:
                    meas.rx_errors += 1
                elif self.rx_enabled:
                    if cid == cells:
                        meas.cells_in(cells_into(rx, meas.cell_raw_mv), now_ms)
                    else:
                        meas.temps_in(temps_into(rx, meas.temp_dc), now_ms)
                continue
            # Then the other registered ids: the request ids are not among them.
            handler = get(cid)
            if handler is None:
                if cid == c.UDS_PHYSICAL_REQUEST_ID or cid == c.UDS_FUNCTIONAL_REQUEST_ID:
                    if self.diag is not None:  # ISO-TP frames may be shorter than 8 bytes
                        self.diag.on_frame(cid, rx, board.rx_dlc, now_ms)
                elif board.rx_dlc != 8:
                    meas.rx_errors += 1
                continue
            if board.rx_dlc != 8:
                meas.rx_errors += 1
            elif (self.rx_enabled or cid == c.SIM_TICK_ID) and handler(now_ms):
                return False  # a SIM_Tick: the caller runs the cycle first

    # Handlers: True stops poll() (a SIM_Tick: the caller runs the cycle first).

    def _sim_pack(self, now_ms):
        out = c.decode_sim_pack_measurements(self.rx, self.out)
        self.meas.set_pack(out[0], out[1] * 100, out[2] * 100, now_ms)

    def _sim_aux(self, now_ms):
        out = c.decode_sim_aux(self.rx, self.out)
        self.meas.set_aux(out[0] | out[1] << 1 | out[2] << 2, out[3], now_ms)

    def _tick(self, now_ms):
        out = c.decode_sim_tick(self.rx, self.out)
        if self.board.advance(out[1]):
            self.tick_seq = out[0]
            self.tick_pending = True
            self.rx_drained = True  # lock-step: the frames before the tick are taken
            return True
        return False

    def _refuse(self, now_ms):
        # A bench frame for a measurement this board takes from elsewhere: never applied.
        self._count_rejected()

    def _count_rejected(self):
        if self.rejected < 0xFFFF:
            self.rejected += 1
        self.input_rejected = True

    def _cs_current(self, now_ms):
        out = c.decode_cs_current(self.rx, self.out)
        if self._cs_take(self.cs_current, out[1], out[2], now_ms):
            self._cs_ma = out[0]
            self._cs_publish(now_ms)

    def _cs_voltage(self, now_ms):
        out = c.decode_cs_voltage(self.rx, self.out)
        if self._cs_take(self.cs_voltage, out[2], out[3], now_ms):
            self._cs_pack_mv = out[0]
            self._cs_link_mv = out[1]
            self._cs_publish(now_ms)

    def _cs_take(self, e2e, counter, crc, now_ms):
        errors = e2e.errors
        if e2e.failed:  # interfered with: nothing more until a FaultReset
            e2e.errors += 1
            ok = False
        else:
            ok = e2e.check(e2e.crc_ok(self.rx, 7, crc), counter, now_ms)
        if e2e.errors != errors:  # not the first frame, which only sets the counter
            self._count_rejected()
        return ok

    def _cs_publish(self, now_ms):
        # The pack value is as old as its older group: a current that keeps coming never makes
        # a voltage the sensor stopped sending look fresh (the measurement's stale time runs
        # from the older group's arrival).
        a = self.cs_current
        b = self.cs_voltage
        if a.seen and b.seen:
            older = a.rx_ms if ticks_diff(a.rx_ms, b.rx_ms) < 0 else b.rx_ms
            self.meas.set_pack(self._cs_ma, self._cs_pack_mv, self._cs_link_mv, older)

    def reset_inputs(self):
        """FaultReset: the InputRejected flag clears and the current sensor's E2E checks start
        over (a failed sensor may be taken again once its frames are good)."""
        self.input_rejected = False
        self.cs_current.reset()
        self.cs_voltage.reset()

    @property
    def vcu_bad(self):
        """Rejected VCU_Request frames on the scale of vcu_bad_count (firmware/e2e.py)."""
        e2e = self.vcu_e2e
        return min(e2e.bad, e2e.limit) // 2

    @property
    def vcu_errors(self):
        return self.vcu_e2e.errors

    def _vcu(self, now_ms):
        # CRC first (cheap), then MAC and freshness: only an authentic, fresh frame reaches the
        # counter check, so forged or replayed frames can neither be taken nor move its state.
        rx = self.rx
        out = c.decode_vcu_request(rx, self.out)
        e2e = self.vcu_e2e
        if not e2e.crc_ok(rx, 7, out[7]):
            e2e.reject()
            return
        fv = self.secoc.verify(rx)
        if fv < 0:
            e2e.reject()
            return
        # Authentic and fresh: never taken again, whatever the counter says of it.
        self.secoc.take(fv, out[0] and not self.vcu_close)
        if not e2e.check(True, out[3], now_ms):
            return
        self.vcu_close = out[0]
        self.vcu_charge = out[2]
        reset = out[1]
        if reset and not self.vcu_reset:
            self._reset_edge = True
        self.vcu_reset = reset

    def vcu_stale(self, now_ms):
        """True when no valid vehicle request arrived within vcu_stale_ms (the first poll counts
        as the start: the first frame only sets the counter, so a VCU that is there from the
        start is not stale in the first cycle; nothing closes before a request was taken)."""
        e2e = self.vcu_e2e
        t = e2e.rx_ms if e2e.seen else self._start_ms
        return t is None or ticks_diff(now_ms, t) > self.cfg.vcu_stale_ms

    def take_reset_request(self):
        """Consume a FaultReset rising edge."""
        edge = self._reset_edge
        self._reset_edge = False
        return edge

    # ---- transmit ----------------------------------------------------------------------------
    def transmit(self, bms):
        """Send the frames due in this control cycle."""
        cycle = self._cycle
        self._cycle = (cycle + 1) % self._wrap
        if not self.tx_enabled:
            return
        if cycle % self._status_every == 0:
            self._send_status(bms)
        m = self.meas
        k = cycle % self._cells_every
        due = _due(self._v_groups, self._cells_every, k)
        for _ in range(due):
            self._v_next = self._send_group(
                m.cell_mv,
                self._v_next,
                self._v_groups,
                c.encode_bms_cell_voltages_from,
                c.BMS_CELL_VOLTAGES_ID,
                c.BMS_CELL_VOLTAGES_DLC,
            )
        for _ in range(_due(self._t_groups, self._cells_every, k)):
            self._t_next = self._send_group(
                m.temp_dc,
                self._t_next,
                self._t_groups,
                c.encode_bms_cell_temps_from,
                c.BMS_CELL_TEMPS_ID,
                c.BMS_CELL_TEMPS_DLC,
            )
        self._send_estimation(bms, cycle, k, due)
        bal = self.data.balancing
        # Cyclic and on change: a changed mask, reason or strategy goes out at once (every
        # group), so the status never lags the resistors.
        sent = bal.reason << 2 | bal.strategy
        if bal.changed or sent != self._b_sent:
            self._b_sent = sent
            n = self._b_groups
        else:
            n = _due(self._b_groups, self._bal_every, cycle % self._bal_every)
        for _ in range(n):
            self._send_balancing(bal)

    def send_cycle_diag(self, seq, cycle_us, heap_used):
        """BMS_CycleDiag: acknowledges a SIM_Tick (lock-step) or a cycle (real time)."""
        c.encode_bms_cycle_diag(self.tx, seq & 0xFFFF, cycle_us, heap_used)
        self.board.can_send(c.BMS_CYCLE_DIAG_ID, self.tx, c.BMS_CYCLE_DIAG_DLC)

    def _send(self, can_id, dlc):
        self.board.can_send(can_id, self.tx, dlc)

    def _send_status(self, bms):
        tx = self.tx
        d = self.data
        m = d.meas
        cont = d.contactors
        prot = d.faults
        lim = d.limits
        est = d.soc
        c.encode_bms_state(
            tx,
            cont.state,
            cont.neg,
            cont.pre,
            cont.pos,
            1 if d.balancing.count else 0,
            prot.tier,
            bms.reset_cause,
            1 if self.input_rejected else 0,
            min(255, bms.cycle_load_pct),
            self.rejected,
            bms.alive & 15,
        )
        self._send(c.BMS_STATE_ID, c.BMS_STATE_DLC)
        c.encode_bms_pack(
            tx,
            _div_round(m.pack_mv, 100),
            _div_round(m.current_ma, 100),
            est.soc,
            est.soh_halfpct,
        )
        self._send(c.BMS_PACK_ID, c.BMS_PACK_DLC)
        c.encode_bms_cell_voltage_stats(
            tx, m.vmin_mv, m.vmax_mv, m.vavg_mv, m.vmin_cell, m.vmax_cell
        )
        self._send(c.BMS_CELL_VOLTAGE_STATS_ID, c.BMS_CELL_VOLTAGE_STATS_DLC)
        c.encode_bms_temp_stats(tx, m.tmin_dc, m.tmax_dc, m.tavg_dc, m.tmin_sensor, m.tmax_sensor)
        self._send(c.BMS_TEMP_STATS_ID, c.BMS_TEMP_STATS_DLC)
        c.encode_bms_limits(
            tx,
            lim.charge_ma // 100,
            lim.discharge_ma // 100,
            lim.charge_voltage_mv // 100,
            lim.discharge_voltage_mv // 100,
        )
        self._send(c.BMS_LIMITS_ID, c.BMS_LIMITS_DLC)
        c.encode_bms_faults_mask(tx, prot.active, prot.count)
        self._send(c.BMS_FAULTS_ID, c.BMS_FAULTS_DLC)
        th = d.thermal
        c.encode_bms_thermal(tx, th.cooling, th.heating, th.reason)
        self._send(c.BMS_THERMAL_ID, c.BMS_THERMAL_DLC)

    def _send_estimation(self, bms, cycle, k, due):
        # BMS_PowerLimits with the status frames; BMS_Estimation and BMS_CellSoc (every cell's
        # SOC) at the cell-frame period: `k` is the cycle within it, `due` the BMS_CellVoltages
        # groups sent in this cycle (the same for SOC).
        est = self.data.soc
        tx = self.tx
        if cycle % self._status_every == 0:
            s = self.data.power
            c.encode_bms_power_limits(
                tx,
                s.charge_ma_10s // 100,
                s.discharge_ma_10s // 100,
                s.charge_ma_30s // 100,
                s.discharge_ma_30s // 100,
            )
            self._send(c.BMS_POWER_LIMITS_ID, c.BMS_POWER_LIMITS_DLC)
        if k == 0:
            c.encode_bms_estimation(
                tx,
                est.soc_bound,
                est.soh_cap // 10,
                est.soh_cap_conf,
                est.soh_res // 10,
                est.soh_res_conf,
                max(-1024, min(1023, _div_round(est.offset_ma, 10))),
            )
            self._send(c.BMS_ESTIMATION_ID, c.BMS_ESTIMATION_DLC)
        n = len(est.soc0)
        for _ in range(due):
            g = self._s_next
            i = g * _GROUP_CELLS
            if i + _GROUP_CELLS <= n:
                c.encode_bms_cell_soc(
                    tx,
                    g,
                    cell_soc(est, i),
                    cell_soc(est, i + 1),
                    cell_soc(est, i + 2),
                    cell_soc(est, i + 3),
                )
            else:
                c.encode_bms_cell_soc(
                    tx,
                    g,
                    cell_soc(est, i),
                    cell_soc(est, i + 1) if i + 1 < n else 0,
                    cell_soc(est, i + 2) if i + 2 < n else 0,
                    0,
                )
            self._send(c.BMS_CELL_SOC_ID, c.BMS_CELL_SOC_DLC)
            self._s_next = (g + 1) % self._v_groups

    def _send_group(self, values, g, groups, encode_from, can_id, dlc):
        """Send multiplexed group `g` of 4 values (zero-padded); returns the next group."""
        encode_from(self.tx, values, g)
        self._send(can_id, dlc)
        return (g + 1) % groups

    def _send_balancing(self, bal):
        g = self._b_next
        self._b_next = (g + 1) % self._b_groups
        m = bal.mask
        k = 3 * g
        n = len(m)
        bits = m[k]
        if k + 1 < n:
            bits |= m[k + 1] << 8
        if k + 2 < n:
            bits |= m[k + 2] << 16
        c.encode_bms_balancing(self.tx, g, bits, bal.count, bal.reason, bal.strategy)
        self._send(c.BMS_BALANCING_ID, c.BMS_BALANCING_DLC)


def _due(groups, cycles, k):
    # Frames of a set of `groups` spread evenly over `cycles` cycles that fall in cycle k
    # (0..cycles-1): ceil((k+1)g/c) - ceil(kg/c), so the set starts in cycle 0 and sums to g.
    return ((k + 1) * groups + cycles - 1) // cycles - (k * groups + cycles - 1) // cycles


def _div_round(a, b):
    # Round half away from zero so small charge and discharge currents display symmetrically.
    return (a + b // 2) // b if a >= 0 else -((-a + b // 2) // b)
