"""CAN communication: what the BMS receives and when it transmits what.

Owns the receive dispatch (bench measurement injection, lock-step ticks, vehicle requests; the
frames of the two diagnostic request ids go to the diagnostic port, firmware/diag_port.py) and
the transmit schedule of every BMS message in dbc/cellguard.dbc. All packing goes through the
codec generated from the DBC (`can_codec`); buffers are preallocated so a
cycle does not allocate.

VCU_Request integrity (AUTOSAR E2E profile 1 style): byte 7 is a CRC-8 SAE J1850 over the data ID
(0x00 0x03) and bytes 0..6, and the alive counter must advance by exactly 1 mod 16 (E2E
MaxDeltaCounter 1: a lost frame is as suspect as a repeated one). A frame failing either is
rejected (its request is never taken, so it never closes anything) and counted: `vcu_bad` goes up
by one per rejected and down by one per accepted frame, saturating at vcu_bad_count, where the
application raises VcuRequestInvalid. A counter jump resynchronises: the jumping frame is
rejected, the next one in sequence is accepted. The first frame after start sets the counter.
"""

from . import can_codec as c
from .compat import const, ticks_diff, ticks_us
from .data import cell_soc


def crc8_j1850(data, n, crc=0xFF):
    """CRC-8 SAE J1850 (poly 0x1D, init 0xFF, xor-out 0xFF) of data[0:n]; `crc` continues a
    previous result (pass it xor 0xFF). Bitwise, no table: a few bytes per 100 ms."""
    for k in range(n):
        crc ^= data[k]
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1D) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc ^ 0xFF


# crc8_j1850(b"\x00\x03", 2) ^ 0xFF: the CRC register after VCU_Request's E2E data ID (0x300, low
# byte first); tests/firmware/test_vcu_request.py recomputes it.
_DATA_ID_CRC = const(0x66)
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
        self.out = [0] * 5  # decoded signals of the widest received frame
        self.vcu_close = 0
        self.vcu_reset = 0
        self._vcu_alive = -1
        self._vcu_rx_ms = 0
        self._vcu_seen = False
        self.vcu_errors = 0
        self.vcu_bad = 0  # up/down counter of rejected frames (module docstring)
        self.vcu_charge = 0
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

    # ---- receive -----------------------------------------------------------------------------
    def poll(self, now_ms):
        """Handle the waiting frames, at most rx_budget_frames of them and for rx_budget_us: a
        flood cannot hold off the control cycle (what is left waits for the next pass, and a
        measurement stuck behind it goes stale, which opens). Stops early at a SIM_Tick so the
        caller can run the cycle. True when the budget ran out with frames possibly waiting."""
        board = self.board
        out = self.out
        rx = self.rx
        meas = self.meas
        budget = self._rx_budget
        t0 = ticks_us()
        n = 0
        while True:
            # The clock is read every 16 frames: a frame costs far less than the time budget.
            if n >= budget or ((n & 15) == 15 and ticks_diff(ticks_us(), t0) >= self._rx_us):
                self.rx_deferred += 1
                return True
            cid = board.can_recv(rx)
            if cid < 0:
                self.rx_drained = True
                return False
            n += 1
            if cid == c.UDS_PHYSICAL_REQUEST_ID or cid == c.UDS_FUNCTIONAL_REQUEST_ID:
                if self.diag is not None:  # ISO-TP frames may be shorter than 8 bytes
                    self.diag.on_frame(cid, rx, board.rx_dlc, now_ms)
                continue
            if board.rx_dlc != 8:
                meas.rx_errors += 1
                continue
            if not self.rx_enabled and cid != c.SIM_TICK_ID:
                continue
            if cid == c.SIM_CELL_VOLTAGES_ID:
                c.decode_sim_cell_voltages(rx, out)
                meas.set_cells(out[0], out[1], out[2], out[3], out[4], now_ms)
            elif cid == c.SIM_CELL_TEMPS_ID:
                c.decode_sim_cell_temps(rx, out)
                meas.set_temps(out[0], out[1], out[2], out[3], out[4], now_ms)
            elif cid == c.SIM_PACK_MEASUREMENTS_ID:
                c.decode_sim_pack_measurements(rx, out)
                meas.set_pack(out[0], out[1] * 100, out[2] * 100, now_ms)
            elif cid == c.VCU_REQUEST_ID:
                self._vcu(now_ms)
            elif cid == c.SIM_AUX_ID:
                c.decode_sim_aux(rx, out)
                meas.set_aux(out[0] | out[1] << 1 | out[2] << 2, out[3], now_ms)
            elif cid == c.SIM_TICK_ID:
                c.decode_sim_tick(rx, out)
                if board.advance(out[1]):
                    self.tick_seq = out[0]
                    self.tick_pending = True
                    self.rx_drained = True  # lock-step: the frames before the tick are taken
                    return False

    def _vcu(self, now_ms):
        rx = self.rx
        out = c.decode_vcu_request(rx, self.out)
        alive = out[3]
        ok = crc8_j1850(rx, 7, _DATA_ID_CRC) == out[4]
        if ok and self._vcu_alive >= 0:
            d = (alive - self._vcu_alive) & 15
            ok = d == 1
            if d:
                self._vcu_alive = alive  # resynchronise: the next frame in sequence is good
        elif ok:
            self._vcu_alive = alive
        if not ok:
            self.vcu_errors += 1
            if self.vcu_bad < self.cfg.vcu_bad_count:
                self.vcu_bad += 1
            return
        if self.vcu_bad:
            self.vcu_bad -= 1
        self._vcu_seen = True
        self._vcu_rx_ms = now_ms
        self.vcu_close = out[0]
        self.vcu_charge = out[2]
        reset = out[1]
        if reset and not self.vcu_reset:
            self._reset_edge = True
        self.vcu_reset = reset

    def vcu_stale(self, now_ms):
        """True when no valid vehicle request arrived within vcu_stale_ms."""
        return not self._vcu_seen or ticks_diff(now_ms, self._vcu_rx_ms) > self.cfg.vcu_stale_ms

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
                c.encode_bms_cell_voltages,
                c.BMS_CELL_VOLTAGES_ID,
                c.BMS_CELL_VOLTAGES_DLC,
            )
        for _ in range(_due(self._t_groups, self._cells_every, k)):
            self._t_next = self._send_group(
                m.temp_dc,
                self._t_next,
                self._t_groups,
                c.encode_bms_cell_temps,
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
            min(255, bms.cycle_load_pct),
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
        a = prot.active
        c.encode_bms_faults(
            tx,
            a & 1,
            (a >> 1) & 1,
            (a >> 2) & 1,
            (a >> 3) & 1,
            (a >> 4) & 1,
            (a >> 5) & 1,
            (a >> 6) & 1,
            (a >> 7) & 1,
            (a >> 8) & 1,
            (a >> 9) & 1,
            (a >> 10) & 1,
            (a >> 11) & 1,
            (a >> 12) & 1,
            (a >> 13) & 1,
            (a >> 14) & 1,
            (a >> 15) & 1,
            (a >> 16) & 1,
            (a >> 17) & 1,
            (a >> 18) & 1,
            (a >> 19) & 1,
            (a >> 20) & 1,
            (a >> 21) & 1,
            (a >> 22) & 1,
            (a >> 23) & 1,
            (a >> 24) & 1,
            (a >> 25) & 1,
            (a >> 26) & 1,
            (a >> 27) & 1,
            (a >> 28) & 1,
            (a >> 29) & 1,
            prot.count,
        )
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
            c.encode_bms_cell_soc(
                tx,
                g,
                cell_soc(est, i),
                cell_soc(est, i + 1) if i + 1 < n else 0,
                cell_soc(est, i + 2) if i + 2 < n else 0,
                cell_soc(est, i + 3) if i + 3 < n else 0,
            )
            self._send(c.BMS_CELL_SOC_ID, c.BMS_CELL_SOC_DLC)
            self._s_next = (g + 1) % self._v_groups

    def _send_group(self, values, g, groups, encode, can_id, dlc):
        """Send multiplexed group `g` of 4 values (zero-padded); returns the next group."""
        n = len(values)
        i = g * _GROUP_CELLS
        encode(
            self.tx,
            g,
            values[i],
            values[i + 1] if i + 1 < n else 0,
            values[i + 2] if i + 2 < n else 0,
            values[i + 3] if i + 3 < n else 0,
        )
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
