"""The vehicle's requests for the board tests: sim.vehicle.VcuRequests, provisioned for a board
whose storage is the current folder."""

from __future__ import annotations

from pathlib import Path

from sim.vehicle import VcuRequests


class VcuSender(VcuRequests):
    """A VCU for a board whose storage files live in `folder`."""

    @classmethod
    def provision(cls, folder: Path) -> VcuSender:
        return cls()
