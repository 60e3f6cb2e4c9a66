"""The charging service (firmware/charging.py) through a whole session, frames packed by hand as
dbc/gbt27930.dbc lays them out; on MicroPython its charging phase allocates nothing.

Runs under CPython and MicroPython (tests/firmware/mp_runner.py): the state sequence is checked on
both, the allocation (gc.mem_alloc) only where it can be measured, on MicroPython.
"""

import gc

from test_app import FakeBoard, run_cycles

from firmware import charging as fwc
from firmware.compat import IS_MICROPYTHON

CHM = 0x1826F456
CRM = 0x1801F456
CML = 0x1808F456
CRO = 0x100AF456
CCS = 0x1812F456
CST = 0x101AF456
CSD = 0x181DF456
TP_CM = 0x1CECF456


class ChargerPortBoard(FakeBoard):
    """FakeBoard with a charger channel: frames in from a list, frames out counted by id."""

    def __init__(self):
        super().__init__()
        self.charger_in = []
        self.charger_dlc = 8
        self.out_ids = []
        self.count = 0
        self.record = True

    def charger_send(self, can_id, buf, dlc):
        self.count += 1
        if self.record:
            self.out_ids.append(can_id)
        return True

    def charger_recv(self, buf):
        if not self.charger_in:
            return -1
        cid, data = self.charger_in.pop(0)
        for i in range(len(data)):
            buf[i] = data[i]
        self.charger_dlc = len(data)
        return cid


def _cts(n, pgn_mid):
    return bytes((0x11, n, 1, 0xFF, 0xFF, 0, pgn_mid, 0))


def _eoma(size, n, pgn_mid):
    return bytes((0x13, size, 0, n, 0xFF, 0, pgn_mid, 0))


_CCS = bytes((0x90, 0x02, 0x6E, 0x0F, 0, 0, 0xFD))  # 65.6 V, -5.0 A, 0 min, permitted


def _session():
    board = ChargerPortBoard()
    from firmware import app

    bms = app.build(board)
    chg = bms.charging
    now = 0
    run_cycles(bms, board, 2, t0=now)
    now = 200
    board.charger_in.append((CHM, bytes((1, 1, 0))))
    chg.service(now)
    assert chg.state == fwc.HANDSHAKE
    board.charger_in.append((CRM, bytes((0, 1, 0, 0, 0, 0xFF, 0xFF, 0xFF))))
    chg.service(now + 10)
    assert chg.state == fwc.IDENTIFY
    chg.service(now + 20)  # BRM: RTS out
    board.charger_in.append((TP_CM, _cts(7, 2)))
    chg.service(now + 30)  # the seven packets
    board.charger_in.append((TP_CM, _eoma(49, 7, 2)))
    board.charger_in.append((CRM, bytes((0xAA, 1, 0, 0, 0, 0xFF, 0xFF, 0xFF))))
    chg.service(now + 40)
    assert chg.state == fwc.CONFIG and chg.tp.tx_done == 1
    chg.service(now + 50)  # BCP: RTS
    board.charger_in.append((TP_CM, _cts(2, 6)))
    board.charger_in.append((CML, bytes((0x4C, 0x1D, 0xF4, 0x01, 0xDC, 0x05, 0xA0, 0x0F))))
    chg.service(now + 60)
    board.charger_in.append((TP_CM, _eoma(13, 2, 6)))
    chg.service(now + 70)
    assert chg.close_request
    run_cycles(bms, board, 8, t0=300)  # precharge, then closed
    assert bms.data.contactors.state == 3
    now = 1100
    chg.service(now)  # BRO 0xAA (and BCP's RTS again, if due: answered like the charger does)
    board.charger_in.append((TP_CM, _cts(2, 6)))
    chg.service(now + 5)
    board.charger_in.append((TP_CM, _eoma(13, 2, 6)))
    board.charger_in.append((CRO, bytes((0xAA,))))
    chg.service(now + 10)
    assert chg.state == fwc.CHARGING
    return bms, board, chg, now + 20


# Built once: the rig must not allocate in the measured rounds either.
_F_CCS = (CCS, _CCS)
_F_BCS_CTS = (TP_CM, _cts(2, 0x11))
_F_BCS_EOMA = (TP_CM, _eoma(9, 2, 0x11))


def _charging_round(board, chg, t):
    """Two BCL periods with a CCS each, and one BCS transfer acknowledged by the charger."""
    q = board.charger_in
    q.append(_F_CCS)
    chg.service(t)
    q.append(_F_BCS_CTS)
    q.append(_F_CCS)
    chg.service(t + 50)
    q.append(_F_BCS_EOMA)
    chg.service(t + 100)
    q.append(_F_CCS)
    chg.service(t + 250)


def test_session_runs_through_and_charging_allocates_nothing():
    bms, board, chg, t = _session()
    _charging_round(board, chg, t)
    assert chg.state == fwc.CHARGING and chg.tp.tx_done >= 3
    ids = set(board.out_ids)
    for name in ("BHM", "BRO", "BCL", "BSM", "TP_CM_BMS", "TP_DT_BMS"):
        assert getattr(fwc.c, name + "_ID") in ids, name
    board.record = False  # the list of ids would allocate, not the service
    if IS_MICROPYTHON:
        _charging_round(board, chg, t + 300)
        gc.collect()
        gc.disable()
        done = chg.tp.tx_done
        sent = board.count
        before = gc.mem_alloc()
        _charging_round(board, chg, t + 600)
        used = gc.mem_alloc() - before
        gc.enable()
        assert used == 0, used
        assert chg.tp.tx_done == done + 1 and board.count > sent + 4  # it did work meanwhile
    # The charger stops (CST 1.3 manual): BST with "charger stopped first", then statistics.
    board.charger_in.append((CST, bytes((0x04, 0x00, 0xF0, 0xF0))))
    chg.service(t + 1000)
    assert chg.state == fwc.STOPPING and chg.stop_reason == fwc.STOP_CHARGER
    for k in range(4):
        chg.service(t + 1010 + 10 * k)
    assert chg.state == fwc.STATS
    board.charger_in.append((CSD, bytes((1, 0, 2, 0, 1, 0, 0, 0))))
    chg.service(t + 1100)
    assert chg.state == fwc.DONE and chg.completed == 1
