"""The tester on a link that goes away (hil.bench.diag.Link): the BMS's process ending takes the
sim board's TCP SLCAN with it; the tester's threads must not die of it (they did: unhandled
exceptions in the notifier's and can-isotp's threads, after which a blocking send waited for
the dead stack thread for ever), the request in progress ends in udsoncan's timeout in the
caller's thread, and closing afterwards is clean.
"""

from __future__ import annotations

import can
import pytest
import udsoncan

from hil.bench.diag import DiagClient


class DyingBus(can.BusABC):
    """A bus whose link breaks when `dead` is set: receiving and sending then raise, as
    python-can's slcan backend does on a closed socket."""

    def __init__(self) -> None:
        self.dead = False
        self.sent = 0
        self.channel_info = "dying"
        super().__init__(channel=None)

    def _recv_internal(self, timeout: float | None) -> tuple[can.Message | None, bool]:
        if self.dead:
            raise can.CanOperationError("Could not read from serial device")
        import time

        time.sleep(min(timeout or 0.01, 0.01))
        return None, False

    def send(self, msg: can.Message, timeout: float | None = None) -> None:
        if self.dead:
            raise can.CanOperationError("Could not write to serial device")
        self.sent += 1


@pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_link_that_goes_away_is_silence_not_a_thread_exception():
    bus = DyingBus()
    diag = DiagClient(bus, p2_timeout_s=0.3, p2_star_timeout_s=0.3).open()
    try:
        bus.dead = True
        with pytest.raises(udsoncan.exceptions.TimeoutException):
            diag.client.tester_present()
        with pytest.raises(udsoncan.exceptions.TimeoutException):
            diag.read("version")  # a second request on the dead link: the same
        assert isinstance(diag.link.error, can.CanOperationError)
    finally:
        diag.close()
    bus.shutdown()
