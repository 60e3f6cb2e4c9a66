"""The CAN current sensor (measurement source `can-sensor`: CS_Current, CS_Voltage, E2E protected)
through Comm on a board whose profile takes the pack values from it: a bad CRC, a repeated or
jumping counter or a missing group is never a fresh value, forgeries interleaved with the genuine
sensor end in MeasurementStale, and the bench's SIM_PackMeasurements is refused. Runs under
CPython and MicroPython.
"""

from firmware import can_codec, config
from firmware import can_codec_peer as peer  # the sensor's encoders
from firmware.comm import Comm
from firmware.data import Data
from firmware.e2e import crc8_j1850, data_id_crc

SOURCES = {"cells": "bench", "temps": "bench", "pack": "can-sensor", "aux": "bench"}


class Board:
    rx_dlc = 8

    def __init__(self):
        self.rx = []
        self.sources = SOURCES

    def can_recv(self, buf):
        if not self.rx:
            return -1
        can_id, data = self.rx.pop(0)
        for i in range(8):
            buf[i] = data[i]
        return can_id

    def storage_read(self, name):
        return None


def _current(ma, counter, crc_error=0):
    buf = bytearray(8)
    peer.encode_cs_current(buf, ma, counter & 15, 0)
    buf[7] = crc8_j1850(buf, 7, data_id_crc(can_codec.CS_CURRENT_ID)) ^ crc_error
    return can_codec.CS_CURRENT_ID, bytes(buf)


def _voltage(pack_mv, link_mv, counter, crc_error=0):
    buf = bytearray(8)
    peer.encode_cs_voltage(buf, pack_mv, link_mv, counter & 15, 0)
    buf[7] = crc8_j1850(buf, 7, data_id_crc(can_codec.CS_VOLTAGE_ID)) ^ crc_error
    return can_codec.CS_VOLTAGE_ID, bytes(buf)


def _rig():
    cfg = config.load({"cell_count": 4, "temp_count": 4})
    board = Board()
    d = Data(cfg)
    return board, Comm(board, cfg, d), d.meas


def _send(board, comm, frames, now_ms):
    board.rx.extend(frames)
    comm.poll(now_ms)


def _pack_slot_fresh(meas, now_ms):
    slot = meas._aux_slot - 1
    return meas._seen[slot] and now_ms - meas._rx_ms[slot] <= meas._cfg.meas_stale_ms


def test_the_data_ids_are_the_can_ids_low_byte_first():
    assert data_id_crc(can_codec.CS_CURRENT_ID) == crc8_j1850(b"\x21\x05", 2) ^ 0xFF
    assert data_id_crc(can_codec.VCU_REQUEST_ID) == crc8_j1850(b"\x00\x03", 2) ^ 0xFF


def test_good_frames_refresh_the_pack_values_once_both_groups_are_fresh():
    board, comm, meas = _rig()
    _send(board, comm, [_current(12345, 1), _voltage(60000, 59000, 1)], 0)  # references
    assert meas.current_ma == 0 and not _pack_slot_fresh(meas, 0)
    _send(board, comm, [_current(-2500, 2)], 100)
    assert meas.current_ma == 0, "the voltage group is not fresh yet: no pack value"
    _send(board, comm, [_voltage(60100, 59900, 2)], 110)
    assert (meas.current_ma, meas.pack_mv, meas.link_mv) == (-2500, 60100, 59900)
    assert _pack_slot_fresh(meas, 110) and comm.rejected == 0


def _running():
    board, comm, meas = _rig()
    for k in range(3):
        _send(board, comm, [_current(1000, k), _voltage(60000, 60000, k)], k * 100)
    assert meas.current_ma == 1000
    return board, comm, meas


def test_bad_crc_repeated_or_jumping_counter_is_never_a_fresh_value():
    for bad in (_current(99000, 3, crc_error=0x40), _current(99000, 2), _current(99000, 5)):
        board, comm, meas = _running()
        _send(board, comm, [bad], 300)
        assert meas.current_ma == 1000, bad
        assert comm.rejected == 1 and comm.input_rejected


def test_a_group_that_stops_leaves_the_pack_values_stale():
    board, comm, meas = _running()
    for k in range(3, 12):  # the voltage group is gone; the current keeps coming
        _send(board, comm, [_current(2000, k)], k * 100)
    assert not _pack_slot_fresh(meas, 1100)
    assert meas.evaluate(1100), "stale: MeasurementStale opens"


def test_forgeries_interleaved_ahead_of_the_sensor_end_in_stale_values():
    # The forger computes the CRC and stays one counter ahead of the genuine sensor, whose frames
    # then repeat the forger's counters: both streams collide, the group fails and takes nothing.
    board, comm, meas = _running()
    taken_forged = 0
    for k in range(3, 40):
        _send(board, comm, [_current(0, k), _voltage(60000, 60000, k)], k * 100)  # forged
        if comm.cs_current.rx_ms == k * 100:
            taken_forged += 1
        _send(board, comm, [_current(1000, k), _voltage(60000, 60000, k)], k * 100 + 50)
    assert comm.cs_current.failed and comm.input_rejected
    # A CRC is no signature: the forger's first few frames are taken, until the collisions
    # fail the group (+2 per rejected genuine frame, -1 per taken forged one).
    assert taken_forged == 2 * comm.cfg.vcu_bad_count - 1
    assert meas.evaluate(3950), "no fresh pack value while the sensor is interfered with"
    comm.reset_inputs()  # FaultReset: the sensor is taken again once its frames are good
    for k in range(40, 43):
        _send(board, comm, [_current(1500, k), _voltage(60000, 60000, k)], k * 100)
    assert meas.current_ma == 1500 and not comm.input_rejected


def test_bench_pack_frames_are_refused_where_the_pack_is_the_sensors():
    board, comm, meas = _running()
    buf = bytearray(8)
    peer.encode_sim_pack_measurements(buf, 50000, 100, 100, 0)
    _send(board, comm, [(can_codec.SIM_PACK_MEASUREMENTS_ID, bytes(buf))], 300)
    assert meas.current_ma == 1000 and meas.pack_mv == 60000
    assert comm.rejected == 1 and comm.input_rejected
