"""The vehicle's requests for the board tests: sim.vehicle.VcuRequests with a key it shares with
a hardware board whose storage (cg_* files, boards/hw.py) is the given folder."""

from __future__ import annotations

from pathlib import Path

from hil.bench.provision import VCU_KEY_FILE, new_vcu_key_record, parse_vcu_key
from sim.vehicle import VcuRequests


class VcuSender(VcuRequests):
    """A VCU provisioned with a fresh per-vehicle key, written where the board reads it."""

    @classmethod
    def provision(cls, folder: Path) -> VcuSender:
        record = new_vcu_key_record()
        (Path(folder) / ("cg_" + VCU_KEY_FILE)).write_bytes(record)
        return cls(parse_vcu_key(record))
