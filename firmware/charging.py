"""DC charging over GB/T 27930 (2023 Category A by default, 2015 selectable): the BMS's side.

A between-cycle service (Bms.services) on the board's charger CAN channel (250 kbit/s, 29-bit
ids, BMS 0xF4, charger 0x56; codec generated from dbc/gbt27930.dbc, long messages through the
J1939-21 transport in firmware/j1939tp.py). docs/charging.md has the message set and timing.

    IDLE       --CHM (2015: or CRM 0x00 from a charger without CHM)-->  HANDSHAKE / IDENTIFY
    HANDSHAKE  BHM every 250 ms (the charger checks insulation)   --CRM 0x00-->  IDENTIFY
    IDENTIFY   BRM by transport every 250 ms                      --CRM 0xAA-->  CONFIG
    CONFIG     BCP by transport every 500 ms; on CML: close request (precharge, firmware/
               contactors.py); BRO 0x00 every 250 ms, 0xAA once closed --CRO 0xAA--> CHARGING
    CHARGING   BCL every 50 ms (demand from the published limits), BCS by transport every
               250 ms, BSM every 250 ms once CCS arrives              --a stop-->   STOPPING
    STOPPING   BST every 10 ms; the close request drops once |I| <= 5 A (a fault stop: at once;
               the contactors' OPENING bounds the wait)              --CST-->      STATS
    STATS      BSD every 250 ms                                       --CSD-->      DONE
    ERROR      BEM every 250 ms, contactors released; the charger restarts from CRM within 30 s,
               at most 3 times (then DONE: the operator re-plugs)

Timeouts (ms, from the first moment the message is expected): CRM 0x00 30000 after CHM
(Fig. A.6), CRM 0xAA 5000, CML 5000, CRO 5000 and CRO 0xAA 60000, the first CCS 5000 then 1000
between them, CST 5000 and CSD 10000 after BST. Each ends in ERROR with its BEM bit. A CEM from the
charger also leads to ERROR (it restarts from CRM). Untrusted values (10) keep the previous state.

Stops: SOC target (BST 1.1), cell voltage at the end of CV (1.5: the charge limit fell below
gbt_end_ma), an open-tier fault (2.x/3.x mapped from the catalogue), the measured charging current
above the BCL demand by gbt_oc_margin_ma for gbt_oc_ms (4.1, raises ChargerFault), CST from the
charger (1.7). A CCS lost in the last reconnection attempt raises ChargerFault too: latched, open
tier, so the contactors open at once and the fault memory keeps it (CurrentLimitIgnored stays the
backstop). Nothing is allocated after construction.
"""

from . import gbt_codec as c
from .compat import const, ticks_add, ticks_diff
from .contactors import CLOSED
from .j1939tp import J1939Tp

BMS_ADDR = const(0xF4)
CHARGER_ADDR = const(0x56)

IDLE = const(0)
HANDSHAKE = const(1)
IDENTIFY = const(2)
CONFIG = const(3)
CHARGING = const(4)
STOPPING = const(5)
STATS = const(6)
DONE = const(7)
ERROR = const(8)
STATE_NAMES = (
    "IDLE",
    "HANDSHAKE",
    "IDENTIFY",
    "CONFIG",
    "CHARGING",
    "STOPPING",
    "STATS",
    "DONE",
    "ERROR",
)

# BEM bits (index = BEM argument order of the SPN, docs/charging.md)
BEM_CRM00 = const(1)
BEM_CRMAA = const(2)
BEM_CML = const(3)
BEM_CRO = const(4)
BEM_CCS = const(5)
BEM_CST = const(6)
BEM_CSD = const(7)

# BST reasons: bit k = the 2-bit field k of BST bytes 1-4 (k = 0..13) is set to 01
STOP_SOC = const(0x0001)
STOP_TOTAL_VOLTAGE = const(0x0002)
STOP_CELL_VOLTAGE = const(0x0004)
STOP_CHARGER = const(0x0008)
STOP_INSULATION = const(0x0010)
STOP_PACK_TEMP = const(0x0100)
STOP_HV_RELAY = const(0x0200)
STOP_OTHER = const(0x0800)
STOP_CURRENT = const(0x1000)
STOP_VOLTAGE = const(0x2000)

_PGN_BRM = const(0x0200)
_PGN_BCP = const(0x0600)
_PGN_BCS = const(0x1100)
_BRM_LEN = const(49)
_ACK = const(0xAA)
_T_DEFAULT = const(5000)
_T_CRM = const(30000)
_T_READY = const(60000)
_T_CCS = const(1000)
_T_CSD = const(10000)
_T_RECONNECT = const(30000)
_T_QUIET = const(5000)  # DONE: a charger silent this long has gone (a new session may start)
_STOP_CURRENT_MA = const(5000)  # GB/T 18487.1: <= 5 A before the contactors open
_STOP_WAIT_MS = const(10000)  # ... within 10 s of BST
_MAX_RECONNECTS = const(3)
_T_END_MS = const(10000)

# Fault bits (firmware/protection.py) that end a session and the BST field each maps to.
_F_OV = const(1 << 0)
_F_UV = const(1 << 1)
_F_OT = const(1 << 2 | 1 << 16)  # OverTempCharge, ThermalRunaway
_F_OC = const(1 << 6 | 1 << 24 | 1 << 28)  # OverCurrentCharge(Cold), CurrentLimitIgnored
_F_RELAY = const(1 << 11 | 1 << 22 | 1 << 23)  # precharge, feedback, welded
_F_VOLTAGE = const(1 << 19)  # PackVoltageMismatch


def _cur_raw(charge_ma):
    """A charging current (mA, >= 0) as GB/T raw: 0.1 A, -400 A offset, negative = charging."""
    raw = 4000 - charge_ma // 100
    return raw if raw > 0 else 0


class Charging:
    """The BMS's GB/T 27930 session on `board`'s charger channel; see the module docstring."""

    def __init__(self, bms):
        self.bms = bms
        self.board = board = bms.board
        cfg = self.cfg = bms.cfg
        self.data = bms.data
        self.edition_2015 = cfg.gbt_2015 == 1
        self.tp = J1939Tp(self._send, BMS_ADDR, CHARGER_ADDR, tx_size=_BRM_LEN, rx_size=16)
        self._rx = bytearray(8)
        self._tx = bytearray(8)
        self._o = [0] * 16
        self._bst_sent = 0
        self._recv = board.charger_recv
        self._xmit = board.charger_send
        n = cfg.cell_count
        lfp = cfg.chemistry == "LFP"
        self._type = 3 if lfp else 6  # BRM battery type: LFP / ternary (NMC)
        cell_nom_mv = 3200 if lfp else 3700
        self._rated_v = n * cell_nom_mv // 100  # 0.1 V
        self._energy = cfg.capacity_mah * cell_nom_mv // 10000 * n // 10000  # 0.1 kWh
        self.state = IDLE
        self.close_request = False  # read by the control cycle (app.py) for the contactors
        self.stop_reason = 0  # STOP_* bits of the last BST
        self.charger_stop = 0  # CST bytes 1-4 of the last CST, bit k = field k set
        self.bem = 0  # BEM bits (1 << BEM_*) of the last error
        self.cem = 0  # CEM bytes of the last CEM received (raw, little-endian int)
        self.reconnects = 0
        self.sessions = 0
        self.completed = 0
        self.bcl_mv = 0
        self.bcl_ma = 0  # the current demand (magnitude, mA) last sent in BCL
        self.ccs_ma = 0  # the charger's reported output current (magnitude, mA)
        self.ccs_mv = 0
        self.permitted = 1  # CCS: the charger permits (01) or pauses (00)
        self.cml_max_mv = 0
        self.cml_max_ma = 0
        self.charger_fault = False  # ChargerFault condition (latched by protection)
        self.protocol = 0  # charger protocol version from CHM: major << 16 | minor
        self._t = 0  # when the current wait started
        self._t2 = 0  # second timer: first CRO, BST, error entry
        self._seen_ms = 0  # last frame from the charger
        self._ccs_seen = False
        self._cml = False
        self._cro = False
        self._cst = False
        self._oc_since = -1
        self._end_since = -1
        self._bro_at = -1  # when BRO 0xAA was first sent
        self._next = [0] * 4  # due times: periodic 0, 1 (BCS/BSM), 2 (BSM), 3 (BRO)

    # ---- transmit helpers ------------------------------------------------------------------
    def _send(self, can_id, buf, dlc):
        return self._xmit(can_id, buf, dlc) is not False

    def _due(self, k, now, period):
        nxt = self._next[k]
        if ticks_diff(now, nxt) < 0:
            return False
        nxt = ticks_add(nxt, period)
        # Behind by a whole period (a late call): no burst of catch-up frames.
        self._next[k] = ticks_add(now, period) if ticks_diff(now, nxt) >= 0 else nxt
        return True

    def _enter(self, state, now):
        self.state = state
        self._t = now
        for k in range(4):
            self._next[k] = now

    # ---- service ---------------------------------------------------------------------------
    def service(self, now):
        """Handle the charger's frames, the timers and what is due to send; True when the
        transport has frames waiting."""
        rx = self._rx
        board = self.board
        for _ in range(16):  # bounded per call: a flooding charger cannot hold up the loop
            cid = self._recv(rx)
            if cid < 0:
                break
            self._seen_ms = now
            if not self.tp.on_frame(cid, rx, board.charger_dlc, now):
                self._frame(cid, rx, board.charger_dlc, now)
        self._timers(now)
        self._transmit(now)
        return self.tp.service(now)

    def _frame(self, cid, rx, dlc, now):
        o = self._o
        st = self.state
        if cid == c.CHM_ID and dlc >= c.CHM_DLC:
            c.decode_chm(rx, o)
            self.protocol = o[0] << 16 | o[1]
            if st == IDLE or st == DONE:
                self._new_session(now)
                self._enter(HANDSHAKE, now)
        elif cid == c.CRM_ID and dlc >= c.CRM_DLC:
            self._crm(rx[0], now)
        elif cid == c.CML_ID and dlc >= c.CML_DLC:
            if st == CONFIG:
                c.decode_cml(rx, o)
                self.cml_max_mv = o[0] * 100
                self.cml_max_ma = (4000 - o[2]) * 100 if o[2] < 4000 else 0
                self._cml = True
        elif cid == c.CRO_ID and dlc >= c.CRO_DLC:
            if st == CONFIG and self._cml:
                if not self._cro:
                    self._cro = True
                    self._t2 = now
                if rx[0] == _ACK and self.bms.data.contactors.state == CLOSED:
                    self._enter(CHARGING, now)
                    self._ccs_seen = False
                    self._oc_since = -1
                    self._end_since = -1
        elif cid == c.CCS_ID and dlc >= 7:  # 7 bytes (V1.1 logs); table 5's 8 accepted too
            if st == CHARGING:
                c.decode_ccs(rx, o)
                self.ccs_mv = o[0] * 100
                self.ccs_ma = (4000 - o[1]) * 100 if o[1] < 4000 else 0
                if o[3] < 2:  # 10 untrusted, 11 not available: keep the previous state (C.3)
                    self.permitted = o[3]
                self._ccs_seen = True
                self._t = now
        elif cid == c.CST_ID and dlc >= c.CST_DLC:
            c.decode_cst(rx, o)
            bits = 0
            k = 0
            for i in range(14):  # the 2-bit fields, reserved ones (argument 10, 13) skipped
                if i == 10 or i == 13:
                    continue
                if o[i] == 1:
                    bits |= 1 << k
                k += 1
            if st == CHARGING or st == CONFIG:
                self.charger_stop = bits
                self._cst = True
                self._stop(STOP_CHARGER, now, False)
            elif st == STOPPING:
                self.charger_stop = bits
                self._cst = True
        elif cid == c.CSD_ID and dlc >= c.CSD_DLC:
            if st == STOPPING or st == STATS:
                self.completed += 1
                self.close_request = False
                self._enter(DONE, now)
        elif cid == c.CEM_ID and dlc >= c.CEM_DLC:
            if HANDSHAKE <= st <= CHARGING:
                self.cem = rx[0] | rx[1] << 8 | rx[2] << 16 | (rx[3] & 0x3F) << 24
                self._error(0, now)

    def _crm(self, code, now):
        st = self.state
        if code == 0x00:
            if st == HANDSHAKE or (st == ERROR and self._reconnect_ok()):
                if st == ERROR:
                    self.reconnects += 1
                self._enter(IDENTIFY, now)
            elif (st == IDLE or st == DONE) and self.edition_2015:
                # A 2015-edition charger may start at CRM (no CHM: the 2011 edition's order).
                self._new_session(now)
                self._enter(IDENTIFY, now)
        elif code == _ACK:
            if st == IDENTIFY:
                self._config(now)
            elif st == ERROR and self._reconnect_ok():
                self.reconnects += 1
                self._config(now)

    def _config(self, now):
        self._cml = self._cro = self._cst = False
        self._bro_at = -1
        self._enter(CONFIG, now)

    def _reconnect_ok(self):
        return self.reconnects < _MAX_RECONNECTS and self.stop_reason == 0

    def _new_session(self, now):
        self.sessions += 1
        self.reconnects = 0
        self.stop_reason = 0
        self.charger_stop = 0
        self.bem = 0
        self.cem = 0
        self.charger_fault = False
        self.tp.reset()

    # ---- timers and decisions --------------------------------------------------------------
    def _timers(self, now):
        st = self.state
        el = ticks_diff(now, self._t)
        if st == HANDSHAKE:
            if el > _T_CRM:
                self._error(BEM_CRM00, now)
        elif st == IDENTIFY:
            if el > _T_DEFAULT:
                self._error(BEM_CRMAA, now)
        elif st == CONFIG:
            if not self._cml:
                if el > _T_DEFAULT:
                    self._error(BEM_CML, now)
                return
            if self.data.faults.open_required:
                self._stop(self._fault_reason(), now, True)
                return
            if self.cml_max_mv < self.data.meas.pack_mv:
                # The charger cannot reach the pack's voltage: nothing it could deliver.
                self._stop(STOP_VOLTAGE, now, True)
                return
            self.close_request = True  # through precharge and the fault logic (contactors.py)
            if self._bro_at < 0:
                return  # not ready yet: the charger watches that (its 60 s for BRO 0xAA)
            if not self._cro:
                if ticks_diff(now, self._bro_at) > _T_DEFAULT:  # CRO starts on BRO 0xAA
                    self._error(BEM_CRO, now)
            elif ticks_diff(now, self._t2) > _T_READY:
                self._error(BEM_CRO, now)
        elif st == CHARGING:
            self._charging(now, el)
        elif st == STOPPING or st == STATS:
            el2 = ticks_diff(now, self._t2)  # since BST
            i = self.data.meas.current_ma
            if -_STOP_CURRENT_MA <= i <= _STOP_CURRENT_MA or el2 > _STOP_WAIT_MS:
                self.close_request = False
            if st == STATS:
                if el2 > _T_CSD:
                    self._error(BEM_CSD, now)
            elif self._cst and self._bst_sent >= 3:  # BST three times at least (its 10 ms)
                self._enter(STATS, now)
            elif not self._cst and el2 > _T_DEFAULT:
                self._error(BEM_CST, now)
        elif st == ERROR:
            if el > _T_RECONNECT or not self._reconnect_ok():
                self._enter(DONE, now)
        elif st == DONE:
            if ticks_diff(now, self._seen_ms) > _T_QUIET:
                self.state = IDLE

    def _charging(self, now, since_ccs):
        d = self.data
        cfg = self.cfg
        if since_ccs > (_T_CCS if self._ccs_seen else _T_DEFAULT):
            # The standard's reconnections first; a charger that loses CCS in the last one too
            # is a ChargerFault (latched, open tier: the fault memory keeps it).
            self.charger_fault = self.reconnects >= _MAX_RECONNECTS
            self._error(BEM_CCS, now)
            return
        if d.faults.open_required or d.contactors.state != CLOSED:
            self._stop(self._fault_reason(), now, True)
            return
        # Over-current against what BCL asked for (the measured current: what the pack takes).
        over = -d.meas.current_ma - self.bcl_ma > cfg.gbt_oc_margin_ma
        if over:
            if self._oc_since < 0:
                self._oc_since = now
            elif ticks_diff(now, self._oc_since) >= cfg.gbt_oc_ms:
                self.charger_fault = True
                self._stop(STOP_CURRENT, now, True)
                return
        else:
            self._oc_since = -1
        if d.soc.soc >= cfg.gbt_soc_target:
            self._stop(STOP_SOC, now, False)
        elif d.limits.charge_ma < cfg.gbt_end_ma and d.meas.vmax_mv >= cfg.charge_taper_mv:
            # The end of CV, held for _T_END_MS: not the limits' ramp at the session's start.
            if self._end_since < 0:
                self._end_since = now
            elif ticks_diff(now, self._end_since) >= _T_END_MS:
                self._stop(STOP_CELL_VOLTAGE, now, False)
        else:
            self._end_since = -1

    def _fault_reason(self):
        a = self.data.faults.active
        r = 0
        if a & _F_OT:
            r |= STOP_PACK_TEMP
        if a & _F_RELAY:
            r |= STOP_HV_RELAY
        if a & _F_OC:
            r |= STOP_CURRENT
        if a & _F_VOLTAGE:
            r |= STOP_VOLTAGE
        return r if r else STOP_OTHER

    def _stop(self, reason, now, release):
        self.stop_reason |= reason
        self._bst_sent = 0
        if release:
            self.close_request = False
        self._enter(STOPPING, now)
        self._t2 = now

    def _error(self, bem_bit, now):
        if bem_bit:
            self.bem |= 1 << bem_bit
        self.close_request = False
        self.tp.reset()
        self._enter(ERROR, now)

    # ---- transmit --------------------------------------------------------------------------
    def _transmit(self, now):
        st = self.state
        tx = self._tx
        if st == HANDSHAKE:
            if self._due(0, now, 250):
                c.encode_bhm(tx, self.data.limits.charge_voltage_mv // 100)
                self._send(c.BHM_ID, tx, c.BHM_DLC)
        elif st == IDENTIFY:
            if not self.tp.busy() and self._due(0, now, 250):
                self._brm()
                self.tp.send(_PGN_BRM, _BRM_LEN, now)
        elif st == CONFIG:
            if not self.tp.busy() and self._due(0, now, 500):
                self._bcp()
                self.tp.send(_PGN_BCP, c.BCP_DLC, now)
            if self._cml and self._due(3, now, 250):
                ready = self.data.contactors.state == CLOSED
                if ready and self._bro_at < 0:
                    self._bro_at = now
                c.encode_bro(tx, _ACK if ready else 0)
                self._send(c.BRO_ID, tx, c.BRO_DLC)
        elif st == CHARGING:
            if self._due(0, now, 50):
                self._bcl()
            if not self.tp.busy() and self._due(1, now, 250):
                self._bcs()
                self.tp.send(_PGN_BCS, c.BCS_DLC, now)
            if self._ccs_seen and self._due(2, now, 250):
                self._bsm()
        elif st == STOPPING:
            if self._due(0, now, 10):
                self._bst()
        elif st == STATS:
            if self._due(0, now, 250):
                m = self.data.meas
                c.encode_bsd(
                    tx,
                    self.data.soc.soc // 100,
                    m.vmin_mv // 10,
                    m.vmax_mv // 10,
                    _temp(m.tmin_dc),
                    _temp(m.tmax_dc),
                )
                self._send(c.BSD_ID, tx, c.BSD_DLC)
        elif st == ERROR:
            if self.bem and self._due(0, now, 250):
                b = self.bem
                c.encode_bem(
                    tx,
                    b >> BEM_CRM00 & 1,
                    b >> BEM_CRMAA & 1,
                    15,
                    b >> BEM_CML & 1,
                    b >> BEM_CRO & 1,
                    15,
                    b >> BEM_CCS & 1,
                    b >> BEM_CST & 1,
                    15,
                    b >> BEM_CSD & 1,
                    63,
                )
                self._send(c.BEM_ID, tx, c.BEM_DLC)

    def _brm(self):
        cfg = self.cfg
        c.encode_brm(
            self.tp.tx_buf,
            1,
            1,  # V1.1: 01 01 00
            self._type,
            cfg.capacity_mah // 100,
            self._rated_v,
            0x43,
            0x47,
            0x52,
            0x44,  # manufacturer "CGRD"
            1,
            0,  # pack serial
            2026 - 1985,
            1,
            1,
            self.sessions & 0xFFFF,
            1,  # owned
            0xFF,
            # VIN: not known to the BMS, an optional field: all ones (7.9)
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            1,
            1,
            1,
            2026,
            0xFFFFFF,
        )

    def _bcp(self):
        cfg = self.cfg
        d = self.data
        c.encode_bcp(
            self.tp.tx_buf,
            cfg.cell_charge_max_mv // 10,
            _cur_raw(cfg.max_charge_ma),
            self._energy,
            d.limits.charge_voltage_mv // 100,
            cfg.ot_charge_dc // 10 + 50,
            d.soc.soc // 10,
            d.meas.pack_mv // 100,
        )

    def _bcl(self):
        d = self.data
        lim = d.limits
        demand = lim.charge_ma if self.permitted_by_bms() else 0
        if self.cml_max_ma and demand > self.cml_max_ma:
            demand = self.cml_max_ma
        self.bcl_ma = demand
        self.bcl_mv = lim.charge_voltage_mv
        cv = d.meas.vmax_mv >= self.cfg.charge_taper_mv
        c.encode_bcl(self._tx, lim.charge_voltage_mv // 100, _cur_raw(demand), 1 if cv else 2)
        self._send(c.BCL_ID, self._tx, c.BCL_DLC)

    def permitted_by_bms(self):
        """The BMS allows charging now (BSM 7.5): limits above 0 and no open-tier fault."""
        return self.data.limits.charge_ma > 0 and not self.data.faults.open_required

    def _bcs(self):
        d = self.data
        m = d.meas
        soc = d.soc.soc
        left = self.cfg.gbt_soc_target - soc
        i = -m.current_ma
        minutes = 600
        if left <= 0:
            minutes = 0
        elif i > 0:
            minutes = left * (self.cfg.capacity_mah // 100) * 3 // (5 * i)
            if minutes > 600:
                minutes = 600
        raw = 4000 + m.current_ma // 100
        c.encode_bcs(
            self.tp.tx_buf,
            m.pack_mv // 100,
            raw if raw > 0 else 0,
            m.vmax_mv // 10,
            0,
            soc // 100,
            minutes,
        )

    def _bsm(self):
        d = self.data
        m = d.meas
        a = d.faults.active
        c.encode_bsm(
            self._tx,
            m.vmax_cell - 1 if m.vmax_cell > 0 else 0,
            _temp(m.tmax_dc),
            m.tmax_sensor - 1 if m.tmax_sensor > 0 else 0,
            _temp(m.tmin_dc),
            m.tmin_sensor - 1 if m.tmin_sensor > 0 else 0,
            1 if a & _F_OV else 2 if a & _F_UV else 0,
            0,
            1 if a & _F_OC else 0,
            1 if a & _F_OT else 0,
            0,  # insulation: the charger's monitor watches it; this BMS has none
            0,  # output connector: no connector temperature sensing on this BMS
            1 if self.permitted_by_bms() else 0,
            3,
        )
        self._send(c.BSM_ID, self._tx, c.BSM_DLC)

    def _bst(self):
        r = self.stop_reason
        c.encode_bst(
            self._tx,
            r & 1,
            r >> 1 & 1,
            r >> 2 & 1,
            r >> 3 & 1,
            r >> 4 & 1,
            r >> 5 & 1,
            r >> 6 & 1,
            r >> 7 & 1,
            r >> 8 & 1,
            r >> 9 & 1,
            r >> 10 & 1,
            r >> 11 & 1,
            r >> 12 & 1,
            r >> 13 & 1,
            15,  # reserved: ones (7.9)
        )
        self._send(c.BST_ID, self._tx, c.BST_DLC)
        self._bst_sent += 1


def _temp(dc):
    t = dc // 10 + 50
    return 0 if t < 0 else 250 if t > 250 else t
