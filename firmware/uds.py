"""UDS (ISO 14229-1) diagnostic server on ISO-TP, backed by what the BMS already keeps.

Owns the diagnostic session and its S3 timer, the request dispatch, the positive and negative
responses, and the rules of who may do what (docs/diagnostics.md). Data identifiers and routines
come from firmware/uds_table.py, DTCs from the fault catalogue and the fault memory
(firmware/fault_memory.py), security access from firmware/security.py. A between-cycle service
(firmware/diag_port.py): `service(now_ms)` runs ISO-TP, takes at most one request per call and
bounds its own work.

Sessions: 0x01 default, 0x03 extended, 0x02 programming (P2 50 ms, P2* 5000 ms, S3 5000 ms: with
no request for S3 a non-default session falls back to default: security locked, DTC setting and
communication back on). The programming session is the programming server's
(firmware/uds_prog.py), as an ECU's bootloader's: entering it answers, then restarts the
firmware into that server, which never closes a contactor and keeps the download code and its
4 KB buffer off the application's heap.

Services and where they are allowed (D default, E extended, P programming):
0x10 DEP, 0x3E DEP (suppress bit honoured), 0x11 DEP (01 hard, 03 soft), 0x19 DE (01 02 04 06
0A), 0x22 DEP, 0x14 E, 0x85 E, 0x2E E, 0x27 EP (01/02), 0x28 E, 0x31 EP, 0x34 0x36 0x37 P.
What can move a contactor, clear or stop the fault memory, write configuration, stop
communication or load software needs security access (NRC 0x33), and 0x11, 0x14, 0x28, 0x2E,
a switch to the programming session and the contactor test are refused with NRC 0x22 while any
contactor is closed (an ECU reset, a silent BMS or a restart into programming under load would
drop the pack without the vehicle's consent).

Slow work (a flash write, an erase, the hash of an image) answers 0x78 response pending first and
finishes over later calls, renewing 0x78 every 2 s (within P2*). Requests arriving meanwhile are
dropped. A functional request gets no 0x11, 0x12, 0x31, 0x7E or 0x7F (ISO 14229-1 7.5).
"""

import struct

from . import __version__
from . import can_codec as c
from . import config as config_mod
from . import uds_table as T
from .balancing import DISABLED, FAULT, NO_DATA, OVER_TEMPERATURE
from .compat import const, ticks_diff
from .contactors import STANDBY as CONTACTOR_STANDBY
from .data import TEST_NONE, TEST_RUNNING
from .diag_config import store
from .fault_memory import DTC_HIGH, FREEZE_SIZE, STATUS_MASK
from .isotp import TX_CF, IsoTp
from .persistence import Persistence
from .protection import FAULT_BITS, TIER_DERATE
from .security import KEY_LEN, SEED_LEN, Security

_DEFAULT = const(1)
_PROG = const(2)
_EXT = const(3)
_P2_MS = const(50)
_P2X_MS = const(5000)
S3_MS = const(5000)
_PENDING_MS = const(2000)
_MAX_DIDS = const(8)

# Allowed sessions per service, bit = session number (1 default, 2 programming, 3 extended).
_SESSIONS = (
    b"\x10\x0e\x3e\x0e\x11\x0e\x19\x0a\x22\x0e\x14\x08\x85\x08\x2e\x08\x27\x0c\x28\x08"
    b"\x31\x0c\x34\x04\x36\x04\x37\x04"
)
_BAL_BLOCKED = (DISABLED, NO_DATA, FAULT, OVER_TEMPERATURE)  # what stops a balancing test
# Continuations of slow requests
_C_FLUSH = const(1)
_INTO_PROG = const(4)  # _reset: into the programming server


class _Record:
    """What the server keeps across resets, one persistence client ("uds"): the security
    attempt counter (firmware/security.py) and the vehicle identification number (DID F190)."""

    def __init__(self, sec):
        self.sec = sec
        self.state_size = 2 + 17
        self.vin = bytearray(17)
        self._dirty = False

    @property
    def dirty(self):
        return self._dirty or self.sec.dirty

    @dirty.setter
    def dirty(self, v):
        self._dirty = v

    def save_state(self, buf):
        self.sec.save_state(buf)
        buf[2:19] = self.vin
        self._dirty = False

    def restore_state(self, buf):
        self.vin[:] = buf[2:19]
        return self.sec.restore_state(buf)


class Uds:
    """The diagnostic server of one BMS; see the module docstring."""

    def __init__(self, bms, port, buf, board=None):
        self.bms = bms  # None in the programming server
        self.port = port  # firmware/diag_port.py: what outlives this server
        board = bms.board if bms is not None else board
        self.board = board
        self.tp = IsoTp(
            board, c.UDS_PHYSICAL_REQUEST_ID, c.UDS_FUNCTIONAL_REQUEST_ID, c.UDS_RESPONSE_ID, buf
        )
        self.sec = Security(board)
        self._vin = _Record(self.sec)
        self._store = Persistence(board)
        self._store.register("uds", self._vin, 0)
        self._store.restore()
        self.session = _DEFAULT
        self.last_ms = 0  # board time of the last request (S3, unloading)
        self._dc = None  # (DiagConfig, its Persistence), loaded at the first write
        self._cont = 0
        self._sid = 0
        self._pend_ms = 0
        self._cpos = 0
        self._cend = 0
        self._reset = 0
        self._dids = bytearray(2 * _MAX_DIDS)

    # ---- between cycles ----------------------------------------------------------------------
    def service(self, now_ms):
        tp = self.tp
        tp.service(now_ms)
        if self._cont:
            self._continue(now_ms)
            return
        if self._reset and not tp.busy:
            self._do_reset(now_ms)
            return
        if self.session != _DEFAULT and ticks_diff(now_ms, self.last_ms) > S3_MS:
            self._to_default()
        n = tp.take()
        if n:
            self._request(n, now_ms)

    @property
    def busy(self):
        """True while consecutive frames are due or slow work continues (no idling)."""
        return self._cont != 0 or self.tp.state >= TX_CF or self._reset != 0

    @property
    def idle(self):
        """True when nothing would be lost by dropping the server (default session, no work
        pending, nothing in transit)."""
        return self.session == _DEFAULT and not self._cont and not self._reset and not self.tp.busy

    def _to_default(self):
        self.session = _DEFAULT
        self.sec.lock()
        self.bms.fault_memory.frozen = False
        comm = self.bms.comm
        comm.tx_enabled = comm.rx_enabled = True
        req = self.bms.data.routines
        req.contactor_run = req.balance_run = 0  # a test ends with its session

    def _abort_download(self):
        pass  # the programming server's (firmware/uds_prog.py)

    @property
    def closed(self):
        k = self.bms.data.contactors
        return k.neg | k.pre | k.pos

    # ---- requests ----------------------------------------------------------------------------
    def _request(self, n, now):
        buf = self.tp.buf
        sid = buf[0]
        self.last_ms = now
        self._sid = sid
        r = self._dispatch(sid, n, now)
        if r < 0:
            nrc = -r
            if self.tp.functional and nrc in (0x11, 0x12, 0x31, 0x7E, 0x7F):
                return
            if nrc == 0x78:
                self.tp.send_nrc(sid, 0x78)
                self.tp.hold = True
                self._pend_ms = now
                return
            buf[0] = 0x7F
            buf[1] = sid
            buf[2] = nrc
            self.tp.send(3, now)
        elif r > 0:
            if n > 1 and sid in (0x10, 0x11, 0x3E, 0x85, 0x28, 0x31, 0x27) and buf[1] & 0x80:
                return  # suppressPosRspMsgIndicationBit
            self.tp.send(r, now)

    def _dispatch(self, sid, n, now):
        allowed = 0
        s = _SESSIONS
        for i in range(0, len(s), 2):
            if s[i] == sid:
                allowed = s[i + 1]
                break
        if not allowed:
            return -0x11
        if not allowed >> self.session & 1:
            return -0x7F
        if sid == 0x3E:
            return self._tester_present(n)
        if sid == 0x22:
            return self._read_dids(n)
        if sid == 0x19:
            return self._read_dtc(n)
        if sid == 0x10:
            return self._session(n)
        if sid == 0x27:
            return self._security(n, now)
        if sid == 0x11:
            return self._ecu_reset(n)
        if sid == 0x14:
            return self._clear(n)
        if sid == 0x85:
            return self._dtc_setting(n)
        if sid == 0x2E:
            return self._write_did(n)
        if sid == 0x28:
            return self._comm_control(n)
        if sid == 0x31:
            return self._routine(n, now)
        return self._program(sid, n)

    def _program(self, sid, n):
        """0x34, 0x36, 0x37: the programming server's (firmware/uds_prog.py)."""
        return -0x7F

    def _sub(self, n, first, last):
        """Length and sub-function checks shared by the services with one sub-function byte."""
        if n != 2:
            return -0x13
        sub = self.tp.buf[1] & 0x7F
        return sub if first <= sub <= last else -0x12

    def _tester_present(self, n):
        sub = self._sub(n, 0, 0)
        if sub < 0:
            return sub
        self.tp.buf[0] = 0x7E
        return 2

    def _session(self, n):
        sub = self._sub(n, 1, 3)
        if sub < 0:
            return sub
        if sub == _PROG and self.closed:
            return -0x22
        if sub == _DEFAULT:
            self._to_default()
        else:
            self.sec.lock()
        if sub == _PROG and self.session != _PROG:
            self._reset = _INTO_PROG  # after the response: restart as the programming server
        self.session = sub
        buf = self.tp.buf
        buf[0] = 0x50
        struct.pack_into(">HH", buf, 2, _P2_MS, _P2X_MS // 10)
        return 6

    def _ecu_reset(self, n):
        sub = self._sub(n, 1, 3)
        if sub < 0 or sub == 2:
            return -0x12 if sub == 2 else sub
        if self.closed:
            return -0x22
        self._reset = sub
        self.tp.buf[0] = 0x51
        return 2

    def _do_reset(self, now):
        hard = self._reset == 1
        if self._reset == _INTO_PROG:
            self.board.storage_write("progmode", b"1")  # main.py reads and clears it
        self._reset = 0
        self._flush(now)
        reset = getattr(self.board, "reset", None)
        if reset is None:
            import machine

            if hard:
                machine.reset()
            machine.soft_reset()
        reset(hard)

    def _security(self, n, now):
        buf = self.tp.buf
        sub = buf[1] & 0x7F if n > 1 else 0
        if sub not in (1, 2):
            return -0x12 if n > 1 else -0x13
        sec = self.sec
        if sub == 1:
            if n != 2:
                return -0x13
            r = sec.request_seed(now)
            if r:
                return -r
            buf[0] = 0x67
            buf[2 : 2 + SEED_LEN] = sec.seed
            return 2 + SEED_LEN
        if n != 2 + KEY_LEN:
            return -0x13
        r = sec.send_key(bytes(buf[2 : 2 + KEY_LEN]), now)
        if sec.dirty:
            self._store.flush(now)  # the attempt counter survives a reset at once
        if r:
            return -r
        buf[0] = 0x67
        return 2

    # ---- DTCs --------------------------------------------------------------------------------
    def _dtc_bit(self, p):
        """Fault bit of the DTC in buf[p:p+3], or -1."""
        buf = self.tp.buf
        if buf[p] == DTC_HIGH and buf[p + 1] < FAULT_BITS and buf[p + 2] == 0:
            return buf[p + 1]
        return -1

    def _read_dtc(self, n):
        buf = self.tp.buf
        if n < 2:
            return -0x13
        sub = buf[1]
        fm = self.bms.fault_memory
        st = fm.status
        if sub in (0x01, 0x02, 0x0A):
            if n != (2 if sub == 0x0A else 3):
                return -0x13
            mask = 0xFF if sub == 0x0A else buf[2]
            buf[0] = 0x59
            buf[2] = STATUS_MASK
            if sub == 0x01:
                count = 0
                for b in range(FAULT_BITS):
                    if st[b] & mask:
                        count += 1
                buf[3] = 0x01  # DTCFormatIdentifier: ISO 14229-1
                buf[4] = count >> 8
                buf[5] = count & 0xFF
                return 6
            p = 3
            for b in range(FAULT_BITS):
                if st[b] & mask or sub == 0x0A:
                    buf[p] = DTC_HIGH
                    buf[p + 1] = b
                    buf[p + 2] = 0
                    buf[p + 3] = st[b]
                    p += 4
            return p
        if sub not in (0x04, 0x06):
            return -0x12
        if n != 6:
            return -0x13
        b = self._dtc_bit(2)
        rec = buf[5]
        want = T.SNAPSHOT_RECORD if sub == 0x04 else T.EXT_RECORD
        if b < 0 or rec not in (want, 0xFF):
            return -0x31
        buf[0] = 0x59
        buf[5] = st[b]
        if not fm.stored >> b & 1:
            return 6
        buf[6] = want
        if sub == 0x04:
            buf[7] = 1  # DIDs in the record: the freeze frame
            buf[8] = T.FREEZE_DID >> 8
            buf[9] = T.FREEZE_DID & 0xFF
            fm.freeze_frame(b, buf, 10)
            return 10 + FREEZE_SIZE
        count, first, last = fm.occurrences(b)
        struct.pack_into(T.EXT_FMT, buf, 7, count, first, last)
        return 17

    def _clear(self, n):
        if n != 4:
            return -0x13
        buf = self.tp.buf
        if buf[1] == buf[2] == buf[3] == 0xFF:
            mask = (1 << FAULT_BITS) - 1
        else:
            b = self._dtc_bit(1)
            if b < 0:
                return -0x31
            mask = 1 << b
        if not self.sec.unlocked:
            return -0x33
        if self.closed:
            return -0x22
        self.bms.fault_memory.clear(mask)
        return self._pending(_C_FLUSH, 0x54, 1)

    def _dtc_setting(self, n):
        sub = self._sub(n, 1, 2)
        if sub < 0:
            return sub
        if not self.sec.unlocked:
            return -0x33
        self.bms.fault_memory.frozen = sub == 2
        self.tp.buf[0] = 0xC5
        return 2

    def _comm_control(self, n):
        buf = self.tp.buf
        if n != 3:
            return -0x13
        sub = buf[1] & 0x7F
        if sub > 3:
            return -0x12
        if not buf[2] & 3:
            return -0x31
        if not self.sec.unlocked:
            return -0x33
        if self.closed:
            return -0x22
        if buf[2] & 1:  # normal communication messages (no network management here)
            comm = self.bms.comm
            comm.rx_enabled = sub < 2
            comm.tx_enabled = sub == 0 or sub == 2
        buf[0] = 0x68
        return 2

    # ---- data identifiers --------------------------------------------------------------------
    def _read_dids(self, n):
        buf = self.tp.buf
        if n < 3 or not n & 1 or n > 1 + 2 * _MAX_DIDS:
            return -0x13
        k = n - 1
        ids = self._dids
        ids[0:k] = buf[1:n]
        p = 1
        any_ok = False
        for i in range(0, k, 2):
            did = ids[i] << 8 | ids[i + 1]
            if p + 2 > len(buf):
                return -0x14
            buf[p] = ids[i]
            buf[p + 1] = ids[i + 1]
            try:
                q = self._read_did(did, buf, p + 2)
            except Exception:  # noqa: BLE001 - struct's overflow error differs by port
                return -0x14  # the data of every DID asked for does not fit one response
            if q >= 0:
                p = q
                any_ok = True
        if not any_ok:
            return -0x31
        buf[0] = 0x62
        return p

    def _read_did(self, did, buf, p):
        """Put DID `did`'s data at buf[p:]; the end, or -1 when it is not readable."""
        if T.CONFIG_BASE <= did < T.CONFIG_BASE + 0x400:
            name = config_mod.key_at(did - T.CONFIG_BASE)
            if name is None:
                return -1
            struct.pack_into("<i", buf, p, getattr(self.bms.cfg, name))
            return p + 4
        f = self._row(did)
        if f is None:
            return -1
        kind = f[1]
        if kind == "F":
            return -1
        if kind[0] == "S":
            size = int(kind[1:])
            src = self._string(f[2])
            for i in range(size):
                buf[p + i] = src[i] if i < len(src) else 0
            return p + size
        fmt = f[3]
        if kind == "A":
            arr = self._array(f[4])
            cfg = self.bms.cfg
            count = cfg.cell_count if f[5] == "cells" else cfg.temp_count
            first = (did - int(f[0], 16)) * T.BLOCK
            if first >= count:
                return -1
            size = struct.calcsize(fmt)
            for i in range(first, min(first + T.BLOCK, count)):
                struct.pack_into(fmt, buf, p, arr[i])
                p += size
            return p
        for i in range(4, len(f)):
            one = "<" + fmt[i - 3]
            struct.pack_into(one, buf, p, self._attr(f[i]))
            p += struct.calcsize(one)
        return p

    def _row(self, did):
        """The table row of `did` (array DIDs: of their first block), or None."""
        key = f"{did:04X}"
        i = T.find(T.DIDS, key)
        if i < 0:
            for base in (0x0200, 0x0280):
                n = self.bms.cfg.cell_count if base == 0x0200 else self.bms.cfg.temp_count
                if base <= did < base + (n + T.BLOCK - 1) // T.BLOCK:
                    i = T.find(T.DIDS, f"{base:04X}")
        return None if i < 0 else T.row(T.DIDS, i)

    def _array(self, path):
        names = path.split(".")
        o = self.port if names[0] == "diag" else getattr(self.bms, names[0])
        for n in names[1:]:
            o = getattr(o, n)
        return o

    def _attr(self, path):
        return int(self._array(path))

    def _string(self, source):
        if source == "vin":
            return self._vin.vin
        if source == "serial":
            return self.sec.serial
        if source == "version":
            return __version__.encode()
        return ("cellguard-" + self.board.name).encode()

    def _write_did(self, n):
        buf = self.tp.buf
        if n < 4:
            return -0x13
        did = buf[1] << 8 | buf[2]
        row = did - T.CONFIG_BASE
        name = config_mod.key_at(row) if 0 <= row < 0x400 else None
        f = None if name else self._row(did)
        if name is None and (f is None or f[-1] != "W"):
            return -0x31
        if n != 3 + (4 if name else int(f[1][1:])):
            return -0x13
        if not self.sec.unlocked:
            return -0x33
        if self.closed:
            return -0x22
        if name is None:
            self._vin.vin[:] = buf[3:n]
            self._vin.dirty = True
            return self._pending(_C_FLUSH, 0x6E, 3)
        value = struct.unpack_from("<i", buf, 3)[0]
        try:
            config_mod.check(self.bms.cfg, name, value)
        except ValueError:
            return -0x31
        if self._dc is None:
            self._dc = store(self.board)
        if not self._dc[0].set(row, value):
            return -0x22
        self.port.config_pending += 1
        return self._pending(_C_FLUSH, 0x6E, 3)

    # ---- routines ----------------------------------------------------------------------------
    def _routine(self, n, now):
        buf = self.tp.buf
        if n < 4:
            return -0x13
        sub = buf[1] & 0x7F
        rid = buf[2] << 8 | buf[3]
        i = T.find(T.ROUTINES, f"{rid:04X}")
        if i < 0:
            return -0x31
        f = T.row(T.ROUTINES, i)
        if (f[2] == "P") != (self.session == _PROG):
            return -0x7F
        if sub not in (1, 2, 3):
            return -0x12
        if len(f) > 3 and not self.sec.unlocked:
            return -0x33
        buf[0] = 0x71
        return self._run_routine(rid, sub, n)

    def _run_routine(self, rid, sub, n):
        """The application's routines. The request goes to the module that owns what the routine
        moves (data.RoutineData), which answers in its own block; this checks what it can at
        once (NRC 0x22) and reads the answer back (0x31 03: status, then per routine: contactor
        test BmsState; balancing test BalancingReason and the cell; re-anchor SOC and bound)."""
        d = self.bms.data
        req = d.routines
        if rid == T.RID_CONTACTOR_TEST:
            run, ans, st = req.contactor_run, d.contactors.test_run, d.contactors.test
        elif rid == T.RID_BALANCE_TEST:
            run, ans, st = req.balance_run, d.balancing.test_run, d.balancing.test
        else:
            run, ans, st = req.reanchor_run, d.soc.reanchor_run, d.soc.reanchor
        if run and run != ans:
            st = TEST_RUNNING  # asked for, not yet taken up by its module
        buf = self.tp.buf
        if sub == 3:
            if n != 4:
                return -0x13
            if st == TEST_NONE:
                return -0x24
            buf[4] = st
            if rid == T.RID_CONTACTOR_TEST:
                buf[5] = d.contactors.state
                return 6
            if rid == T.RID_BALANCE_TEST:
                buf[5] = d.balancing.reason
                buf[6] = req.balance_cell + 1
                return 7
            struct.pack_into("<HH", buf, 5, d.soc.soc, d.soc.soc_bound)
            return 9
        if sub == 2:
            if n != 4:
                return -0x13
            if st != TEST_RUNNING or rid == T.RID_SOC_REANCHOR:
                return -0x24
            if rid == T.RID_CONTACTOR_TEST:
                req.contactor_run = 0
            else:
                req.balance_run = 0
            return 4
        if st == TEST_RUNNING:
            return -0x24
        r = self._start_routine(rid, n, d)
        if r:
            return r
        run = ans % 255 + 1  # differs from the run its module answered last
        if rid == T.RID_CONTACTOR_TEST:
            req.contactor_run = run
        elif rid == T.RID_BALANCE_TEST:
            req.balance_run = run
        else:
            req.reanchor_run = run
        buf[4] = TEST_RUNNING
        return 5

    def _start_routine(self, rid, n, d):
        """Check a start request and put its options into RoutineData; 0 or -NRC."""
        buf = self.tp.buf
        cfg = self.bms.cfg
        meas = d.meas
        amps = meas.current_ma if meas.current_ma >= 0 else -meas.current_ma
        if rid == T.RID_CONTACTOR_TEST:  # option: hold time, 0.1 s (1..100; default 1 s)
            if n not in (4, 5):
                return -0x13
            hold = buf[4] if n == 5 else 10
            if not 1 <= hold <= 100:
                return -0x31
            k = d.contactors
            if self.closed or k.state != CONTACTOR_STANDBY or self.bms.comm.vcu_close:
                return -0x22
            if amps > cfg.rest_current_ma or d.faults.tier >= TIER_DERATE:
                return -0x22
            d.routines.contactor_hold_ms = hold * 100
            return 0
        if rid == T.RID_BALANCE_TEST:  # options: cell (1-based), seconds (1..60; default 10)
            if n not in (5, 6):
                return -0x13
            cell = buf[4]
            secs = buf[5] if n == 6 else 10
            if not 1 <= cell <= cfg.cell_count or not 1 <= secs <= 60:
                return -0x31
            if d.balancing.reason in _BAL_BLOCKED or meas.current_ma > cfg.rest_current_ma:
                return -0x22
            if meas.cell_mv[cell - 1] < cfg.balance_min_mv:
                return -0x22
            d.routines.balance_cell = cell - 1
            d.routines.balance_ms = secs * 1000
            return 0
        if n != 4:
            return -0x13
        if (
            not d.faults.meas_valid
            or d.soc.rest_ms < cfg.balance_rest_ms
            or amps > cfg.rest_current_ma
        ):
            return -0x22  # SOC from OCV only at rest
        return 0

    # ---- response pending --------------------------------------------------------------------
    def _pending(self, kind, rsid, length):
        """Continue `kind` in later calls; the final response starts rsid, `length` bytes."""
        self._cont = kind
        self._rsid = rsid
        self._rlen = length
        return -0x78

    def _flush(self, now):
        self.bms.persist.flush(now)
        self._store.flush(now)
        if self._dc is not None:
            self._dc[1].flush(now)

    def _more(self, kind, now):
        """Slow work of the programming server; 0 while it goes on, else the response length
        or -NRC."""
        return -0x10

    def _continue(self, now):
        kind = self._cont
        buf = self.tp.buf
        r = 0
        try:
            if kind == _C_FLUSH:
                self._flush(now)
                r = self._rlen
            else:
                r = self._more(kind, now)
        except OSError:
            r = -0x72
        if r == 0:
            if ticks_diff(now, self._pend_ms) >= _PENDING_MS:
                self._pend_ms = now
                self.tp.send_nrc(self._sid, 0x78)
            return
        self._cont = 0
        self.tp.hold = False
        self.last_ms = now
        if r < 0:
            self._abort_download()
            buf[0] = 0x7F
            buf[1] = self._sid
            buf[2] = -r
            self.tp.send(3, now)
            return
        buf[0] = self._rsid
        self.tp.send(r, now)
