"""The diagnostic tester: udsoncan over can-isotp on any python-can bus, driven by the BMS table.

DIDs, routines and the freeze-frame layout come from firmware/uds_table.py and
firmware/fault_memory.py, DTC names from the DBC's BMS_Faults (bit b = DTC P1A00 + b), so the
tester and the firmware cannot disagree. `cellguard diag` and the pytest `diag` fixture use it.

Usage:
    bus = can.Bus(interface="slcan", channel="socket://127.0.0.1:29536", sleep_after_open=0)
    with DiagClient(bus, secret=read_key_file("provision")) as diag:
        for d in diag.dtcs():
            print(d.code, d.name, d.status_text(), d.freeze)
"""

from __future__ import annotations

import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import can
import cantools
import isotp
import udsoncan
from udsoncan.client import Client
from udsoncan.common.DidCodec import DidCodec
from udsoncan.connections import PythonIsoTpConnection
from udsoncan.exceptions import NegativeResponseException

from firmware import can_codec as codec
from firmware import config as fw_config
from firmware import uds_table as table
from firmware.fault_memory import DTC_HIGH, FREEZE_FMT
from hil import DBC_PATH
from hil.bench.provision import seed_key

STATUS_BITS = (
    "testFailed",
    "testFailedThisOperationCycle",
    "pendingDTC",
    "confirmedDTC",
    "testNotCompletedSinceLastClear",
    "testFailedSinceLastClear",
    "testNotCompletedThisOperationCycle",
    "warningIndicatorRequested",
)
FREEZE_FIELDS = (
    "cell_min_mv",
    "cell_max_mv",
    "cell_min",
    "cell_max",
    "temp_min_dc",
    "temp_max_dc",
    "temp_min_sensor",
    "temp_max_sensor",
    "current_ma",
    "pack_mv",
    "soc",
)
SESSIONS = {"default": 1, "programming": 2, "extended": 3}
# First byte of the application routines' records (firmware/data.py TEST_*)
ROUTINE_STATUS = ("none", "running", "passed", "refused", "aborted", "failed")
ROUTINE_RUNNING = 1


def fault_names() -> list[str]:
    """Fault names by bit: the signals of BMS_Faults in the DBC (start bit = fault bit)."""
    msg = cantools.database.load_file(str(DBC_PATH)).get_message_by_name("BMS_Faults")
    bits = sorted((s.start, s.name) for s in msg.signals if s.length == 1)
    return [name for _, name in bits]


def dtc_id(bit: int) -> int:
    """The 3-byte UDS DTC of fault bit `bit` (0x1A, bit, 0x00)."""
    return DTC_HIGH << 16 | bit << 8


def dtc_code(bit: int) -> str:
    """The OBD-style code of fault bit `bit` (P1A00 + bit)."""
    return f"P1A{bit:02X}"


@dataclass(frozen=True)
class Did:
    """One data identifier of the table."""

    did: int
    name: str
    kind: str  # S string, L live values, A array block, F freeze frame, C configuration key
    fmt: str
    fields: tuple[str, ...]
    writable: bool = False
    count: int = 1  # elements of an array block


class _Codec(DidCodec):
    """udsoncan codec of one table DID: strings as text, values as a dict by field name."""

    def __init__(self, d: Did) -> None:
        self.d = d
        super().__init__(None)

    def _fmt(self) -> str:
        d = self.d
        if d.kind == "A":
            return "<" + d.fmt[1:] * d.count
        return d.fmt

    def encode(self, *value: Any) -> bytes:
        d = self.d
        v = value[0]
        if d.kind == "S":
            raw = v.encode("ascii") if isinstance(v, str) else bytes(v)
            return raw.ljust(struct.calcsize(d.fmt), b"\0")
        if d.kind == "C":
            return struct.pack(d.fmt, int(v))
        raise ValueError(f"DID {d.did:04X} {d.name} is read-only")

    def decode(self, payload: bytes) -> Any:
        d = self.d
        if d.kind == "S":
            return payload.rstrip(b"\0").decode("ascii", errors="replace")
        values = struct.unpack(self._fmt(), payload)
        if d.kind in ("C",):
            return values[0]
        if d.kind == "A":
            return list(values)
        return dict(zip(d.fields, values, strict=True))

    def __len__(self) -> int:
        return struct.calcsize(self._fmt())


def did_table(cell_count: int = 192, temp_count: int | None = None) -> dict[int, Did]:
    """Every DID of the firmware's table (array DIDs: one per block of `cell_count` cells)."""
    temp_count = cell_count if temp_count is None else temp_count
    out: dict[int, Did] = {}
    for f in table.rows(table.DIDS):
        did = int(f[0], 16)
        kind = f[1]
        if kind[0] == "S":
            out[did] = Did(did, f[2], "S", f"{int(kind[1:])}s", (f[2],), f[-1] == "W")
        elif kind == "L":
            names = tuple(a.split(".")[-1] for a in f[4:])
            out[did] = Did(did, f[2], "L", f[3], names)
        elif kind == "F":
            out[did] = Did(did, f[2], "F", FREEZE_FMT, FREEZE_FIELDS)
        elif kind == "A":
            n = cell_count if f[5] == "cells" else temp_count
            for k in range((n + table.BLOCK - 1) // table.BLOCK):
                count = min(table.BLOCK, n - k * table.BLOCK)
                out[did + k] = Did(did + k, f"{f[2]}[{k}]", "A", f[3], (f[2],), count=count)
    for i, row in enumerate(fw_config.rows()):
        did = table.CONFIG_BASE + i
        out[did] = Did(did, row[0], "C", "<i", (row[0],), True)
    return out


def routine_table() -> dict[str, tuple[int, str, bool]]:
    """Routine name -> (routine id, session letter D/E/P, needs security access)."""
    out = {}
    for f in table.rows(table.ROUTINES):
        out[f[1]] = (int(f[0], 16), f[2], len(f) > 3 and f[3] == "S")
    return out


@dataclass
class DtcEntry:
    """One DTC as the BMS reports it."""

    bit: int
    name: str
    status: int
    freeze: dict[str, int] = field(default_factory=dict)
    count: int = 0
    first_s: int = 0
    last_s: int = 0

    @property
    def code(self) -> str:
        """P1A00 + bit."""
        return dtc_code(self.bit)

    @property
    def active(self) -> bool:
        """testFailed: the fault is active now."""
        return bool(self.status & 1)

    def status_text(self) -> str:
        """The status bits that are set, by their ISO 14229 names."""
        return ",".join(n for k, n in enumerate(STATUS_BITS) if self.status >> k & 1)


class NotifierIsoTpStack(isotp.NotifierBasedCanStack):
    """can-isotp's notifier stack, which leaves other listeners on the bus their frames."""


class Link(can.BusABC):
    """The tester's side of a python-can bus whose link may go away (the sim board's TCP SLCAN
    ends with its process, an adapter may be unplugged): an error receiving or sending is kept
    in `error` and seen as silence (no frame; the frame lost), as a CAN bus looks to a tester
    when the ECU loses power. The threads of the notifier and the ISO-TP stack then run on
    until closed, and the request in progress ends in udsoncan's timeout, in the caller's
    thread. Shutting the link down leaves the bus open (it is the caller's)."""

    def __init__(self, bus: can.BusABC) -> None:
        self.bus = bus
        self.error: BaseException | None = None
        self.channel_info = f"link to {bus.channel_info}"
        super().__init__(channel=None)

    def _recv_internal(self, timeout: float | None) -> tuple[can.Message | None, bool]:
        if self.error is None:
            try:
                return self.bus.recv(timeout), False
            except (can.CanError, OSError) as e:
                self.error = e
        time.sleep(0.1 if timeout is None else timeout)
        return None, False

    def send(self, msg: can.Message, timeout: float | None = None) -> None:
        """Send `msg` (dropped once the link is gone)."""
        if self.error is not None:
            return
        try:
            self.bus.send(msg, timeout)
        except (can.CanError, OSError) as e:
            self.error = e


class DiagClient:
    """A UDS tester for one BMS; see the module docstring."""

    def __init__(
        self,
        bus: can.BusABC,
        *,
        secret: bytes | None = None,
        cell_count: int = 192,
        temp_count: int | None = None,
        p2_timeout_s: float = 2.0,
        p2_star_timeout_s: float = 10.0,
        isotp_params: dict[str, Any] | None = None,
        functional: bool = False,
    ) -> None:
        self.bus = bus
        self.secret = secret
        self.names = fault_names()
        self.dids = did_table(cell_count, temp_count)
        self.by_name = {d.name: d for d in self.dids.values()}
        params = {
            "stmin": 0,
            "blocksize": 8,
            "tx_padding": 0xCC,
            "rx_flowcontrol_timeout": 1000,
            # P2 starts when a request has gone out, not when it was queued (a 4 KB block takes
            # hundreds of frames).
            "blocking_send": True,
        }
        params.update(isotp_params or {})
        address = isotp.Address(
            isotp.AddressingMode.Normal_11bits,
            txid=codec.UDS_PHYSICAL_REQUEST_ID,
            rxid=codec.UDS_RESPONSE_ID,
            functional_id=codec.UDS_FUNCTIONAL_REQUEST_ID,
        )
        self.link = Link(bus)
        self._notifier = can.Notifier(self.link, [])
        self.stack = NotifierIsoTpStack(self.link, self._notifier, address=address, params=params)
        self.conn = PythonIsoTpConnection(self.stack)
        config = dict(udsoncan.configs.default_client_config)
        config.update(
            {
                "data_identifiers": {d: _Codec(v) for d, v in self.dids.items()},
                "security_algo": self._key,
                "security_algo_params": None,
                "p2_timeout": p2_timeout_s,
                "p2_star_timeout": p2_star_timeout_s,
                "request_timeout": p2_star_timeout_s * 3,
                "use_server_timing": False,
                "extended_data_size": struct.calcsize(table.EXT_FMT),
                "dtc_snapshot_did_size": 2,
            }
        )
        self.client = Client(self.conn, config=config)
        self._tp_stop: threading.Event | None = None
        self._programming = False  # the BMS runs its programming server

    # ---- lifetime ----------------------------------------------------------------------------
    def open(self) -> DiagClient:
        """Start the ISO-TP stack and the connection."""
        self.client.open()
        return self

    def close(self) -> None:
        """Stop the tester present thread, the connection and the notifier (not the bus)."""
        self.keep_alive(False)
        self.client.close()
        self._notifier.stop()
        self.link.shutdown()

    def __enter__(self) -> DiagClient:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def keep_alive(self, on: bool = True, period_s: float = 2.0) -> None:
        """Send tester present (3E 80, no response) every `period_s` so a session outlives S3."""
        if not on:
            if self._tp_stop is not None:
                self._tp_stop.set()
                self._tp_stop = None
            return
        if self._tp_stop is not None:
            return
        stop = self._tp_stop = threading.Event()

        def run() -> None:
            # Through the ISO-TP stack, whose thread owns the bus writes: python-can backends
            # such as slcan are not safe for writes from two threads.
            while not stop.wait(period_s):
                self.stack.send(b"\x3e\x80")

        threading.Thread(target=run, name="tester-present", daemon=True).start()

    def functional(self, payload: bytes) -> None:
        """Send a single-frame request to the functional id (every ECU); the answers arrive on
        the physical connection (`self.conn.wait_frame`). can-isotp's normal addressing has one
        transmit id, so the frame goes out directly."""
        if not 1 <= len(payload) <= 7:
            raise ValueError("functional requests are single frames (1..7 bytes)")
        data = bytes((len(payload),)) + payload
        msg = can.Message(
            arbitration_id=codec.UDS_FUNCTIONAL_REQUEST_ID,
            data=data.ljust(8, b"\xcc"),
            is_extended_id=False,
        )
        self.link.send(msg)

    # ---- sessions and security ---------------------------------------------------------------
    def _key(self, level: int, seed: bytes, params: Any = None) -> bytes:
        if self.secret is None:
            raise ValueError("no key file: security access needs the board's provisioning record")
        return seed_key(self.secret, seed)

    def session(self, name: str) -> None:
        """Change to the default, extended or programming session. The BMS restarts into its
        programming server to enter the programming session (and back out of it): wait until
        it answers again."""
        before = getattr(self, "_programming", False)
        self.client.change_session(SESSIONS[name])
        self._programming = name == "programming"
        if self._programming != before:
            self.wait_ready()

    def wait_ready(self, timeout_s: float = 10.0) -> None:
        """Wait until the BMS answers tester present (after a reset)."""
        deadline = time.monotonic() + timeout_s
        time.sleep(0.05)
        while True:
            self.conn.empty_rxqueue()
            self.conn.send(b"\x3e\x00")
            try:
                if self.conn.wait_frame(timeout=0.3, exception=True) == b"\x7e\x00":
                    return
            except udsoncan.exceptions.TimeoutException:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("the BMS did not answer after its restart")

    def unlock(self, session: str = "extended") -> None:
        """Enter `session` and unlock security access level 1 with the board's secret."""
        self.session(session)
        self.client.unlock_security_access(1)

    # ---- DTCs --------------------------------------------------------------------------------
    def dtcs(self, mask: int = 0xFF, details: bool = True) -> list[DtcEntry]:
        """The DTCs whose status matches `mask`, with freeze frame and occurrences."""
        resp = self.client.get_dtc_by_status_mask(mask)
        out = []
        for d in resp.service_data.dtcs:
            bit = (d.id >> 8) & 0xFF
            e = DtcEntry(bit, self._name(bit), d.status.get_byte_as_int())
            if details and e.status & 0x28:  # a stored record: confirmed, failed since clear
                self._details(e)
            out.append(e)
        return out

    def _name(self, bit: int) -> str:
        return self.names[bit] if bit < len(self.names) else f"fault{bit}"

    def _details(self, e: DtcEntry) -> None:
        snap = self.client.get_dtc_snapshot_by_dtc_number(dtc_id(e.bit), table.SNAPSHOT_RECORD)
        for d in snap.service_data.dtcs:
            for s in d.snapshots:
                if s.did == table.FREEZE_DID:
                    e.freeze = dict(s.data)
        ext = self.client.get_dtc_extended_data_by_dtc_number(dtc_id(e.bit), table.EXT_RECORD)
        for d in ext.service_data.dtcs:
            for x in d.extended_data:
                e.count, e.first_s, e.last_s = struct.unpack(table.EXT_FMT, x.raw_data)

    def supported_dtcs(self) -> list[DtcEntry]:
        """Every DTC the BMS supports with its status (0x19 0A)."""
        resp = self.client.get_supported_dtc()
        return [
            DtcEntry((d.id >> 8) & 0xFF, self._name((d.id >> 8) & 0xFF), d.status.get_byte_as_int())
            for d in resp.service_data.dtcs
        ]

    def clear(self, bit: int | None = None) -> None:
        """Clear every DTC (or one): extended session and security access first."""
        self.unlock("extended")
        self.client.clear_dtc(0xFFFFFF if bit is None else dtc_id(bit))

    # ---- data identifiers --------------------------------------------------------------------
    def resolve(self, what: str | int) -> Did:
        """A DID by number (int or hex text such as F190) or by name (vin, pack, cell_ov_mv)."""
        if isinstance(what, int):
            return self.dids[what]
        if what in self.by_name:
            return self.by_name[what]
        try:
            return self.dids[int(what, 16)]
        except (ValueError, KeyError):
            raise KeyError(f"unknown DID {what!r}") from None

    def read(self, what: str | int) -> Any:
        """The decoded value of one DID."""
        d = self.resolve(what)
        resp = self.client.read_data_by_identifier([d.did])
        return resp.service_data.values[d.did]

    def read_many(self, dids: list[int]) -> dict[int, Any]:
        """Several DIDs in one request (at most 8)."""
        resp = self.client.read_data_by_identifier(dids)
        return dict(resp.service_data.values)

    def write(self, what: str | int, value: Any) -> Did:
        """Write a writable DID (extended session, security access). Configuration keys take
        effect at the next ECU reset."""
        d = self.resolve(what)
        if not d.writable:
            raise ValueError(f"DID {d.did:04X} {d.name} is read-only")
        self.unlock("extended")
        self.client.write_data_by_identifier(d.did, value)
        return d

    def live(self) -> dict[str, Any]:
        """Every live-data DID at once, as one flat dict by field name."""
        ids = [d.did for d in self.dids.values() if d.kind == "L"]
        out: dict[str, Any] = {}
        for i in range(0, len(ids), 8):
            for v in self.read_many(ids[i : i + 8]).values():
                out.update(v)
        return out

    # ---- routines, reset ---------------------------------------------------------------------
    def routine(self, name: str, data: bytes = b"", wait_s: float = 0.0) -> bytes:
        """Start a routine of the table (entering its session and unlocking as it needs);
        returns its status record, or with `wait_s` the results record once it no longer runs
        (tester present meanwhile, so the session and the test outlive S3)."""
        rid, session, secured = routine_table()[name]
        letter = {"D": "default", "E": "extended", "P": "programming"}[session]
        if secured:
            self.unlock(letter)
        else:
            self.session(letter)
        resp = self.client.start_routine(rid, data or None)
        record = bytes(resp.service_data.routine_status_record or b"")
        if not wait_s or not record or record[0] != ROUTINE_RUNNING:
            return record
        deadline = time.monotonic() + wait_s
        self.keep_alive(True, 1.0)
        try:
            while record[0] == ROUTINE_RUNNING and time.monotonic() < deadline:
                time.sleep(0.1)
                record = self.routine_result(name)
        finally:
            self.keep_alive(False)
        return record

    def routine_result(self, name: str) -> bytes:
        """The results record of a routine (0x31 03; its session and security already held)."""
        resp = self.client.get_routine_result(routine_table()[name][0])
        return bytes(resp.service_data.routine_status_record or b"")

    def stop_routine(self, name: str) -> None:
        """Stop a running routine (0x31 02)."""
        self.client.stop_routine(routine_table()[name][0])

    def reset(self, hard: bool = True) -> None:
        """ECU reset (0x11 01 hard, 03 soft); the next start is the application's."""
        self.client.ecu_reset(1 if hard else 3)
        self._programming = False

    # ---- firmware update ---------------------------------------------------------------------
    def flash(self, image: bytes, progress: Callable[[int, int], None] | None = None) -> bool:
        """Download `image` (hil.bench.provision.build_image) into the inactive slot, check it
        (routine check_image) and reset into it; True when the board accepted it."""
        self.unlock("programming")
        try:
            loc = udsoncan.MemoryLocation(0, len(image), address_format=32, memorysize_format=32)
            resp = self.client.request_download(loc)
            block = resp.service_data.max_length - 2
            seq = 1
            for pos in range(0, len(image), block):
                self.client.transfer_data(seq & 0xFF, image[pos : pos + block])
                seq += 1
                if progress is not None:
                    progress(min(pos + block, len(image)), len(image))
            self.client.request_transfer_exit()
            rid = routine_table()["check_image"][0]
            status = self.client.start_routine(rid).service_data.routine_status_record
        except Exception:
            try:
                self.session("default")  # leave the programming server: the application again
            except Exception:  # noqa: BLE001 - the first error is the one to report
                pass
            raise
        if not status or status[0] != 0:
            return False
        self.reset(True)
        return True


def negative_code(e: BaseException) -> int | None:
    """The NRC of a udsoncan negative-response exception (None for anything else)."""
    if isinstance(e, NegativeResponseException):
        return int(e.response.code)
    return None


def iter_refresh(diag: DiagClient, period_s: float) -> Iterator[dict[str, Any]]:
    """Live data every `period_s` (for `cellguard diag live`)."""
    while True:
        t0 = time.monotonic()
        yield diag.live()
        time.sleep(max(0.0, period_s - (time.monotonic() - t0)))
