"""A firmware update over CAN, timed: the sim board's image downloaded by `cellguard diag`'s
tester (udsoncan over can-isotp over python-can's slcan backend, bitrate 500 kbit/s asked for)
into the whole firmware on the MicroPython unix port in real time, then checked (routine
0x0202, hash and MAC) and switched at the reset. Prints the image size, the download time
(from the switch into the programming session, its restart, security access and the erase to the
last 0x36 response), the check and switch after it (0x37, the routine, the ECU reset's
response), bytes/s, the CAN frames both ways, and what
those frames would take on a real 500 kbit/s bus (computed: the SLCAN link to the sim board is
TCP, not a bus, and paces nothing).

    python benchmarks/uds_update.py [--runs 3] [--board sim]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import can

from hil.bench.diag import DiagClient
from hil.bench.dut import UnixPortDut
from hil.bench.image import bundle_image
from hil.bench.provision import read_key_file

BITRATE = 500_000
# A classic CAN frame with 11-bit id and 8 data bytes: 111 bits before stuffing, at most 135 with
# it (ISO 11898-1 worst case), plus 3 bits interframe space.
FRAME_BITS = (111 + 3, 135 + 3)


class _Counter(can.Listener):
    def __init__(self) -> None:
        self.n = 0

    def on_message_received(self, msg: can.Message) -> None:
        self.n += 1


def one_update(board: str, workdir: Path) -> dict[str, float]:
    """Start a DUT, update it once, return the figures of that run."""
    dut = UnixPortDut({"cell_count": 16}, realtime=True, bundle_board=board, workdir=workdir)
    dut.start()
    bus = can.Bus(interface="slcan", channel=dut.channel, sleep_after_open=0, bitrate=BITRATE)
    try:
        diag = DiagClient(bus, secret=read_key_file(dut.key_file), cell_count=16).open()
        try:
            diag.wait_ready(5.0)
            image = bundle_image(board, read_key_file(dut.key_file), version="bench+update")
            rx = _Counter()
            diag._notifier.add_listener(rx)  # noqa: SLF001 - count what the BMS sent
            sent = [0]
            send = bus.send

            def counting_send(msg: can.Message, timeout: float | None = None) -> None:
                sent[0] += 1
                send(msg, timeout)

            bus.send = counting_send  # type: ignore[method-assign]
            marks: dict[str, float] = {}

            def progress(done: int, total: int) -> None:
                if done >= total:
                    marks["downloaded"] = time.perf_counter()

            t0 = time.perf_counter()
            ok = diag.flash(image, progress)
            t1 = time.perf_counter()
            assert ok, "the board refused the image"
            diag.wait_ready(10.0)
            assert diag.read("version") == "bench+update", "the new image does not run"
            return {
                "bytes": len(image),
                "download_s": marks["downloaded"] - t0,
                "switch_s": t1 - t0,
                "frames": sent[0] + rx.n,
            }
        finally:
            diag.close()
    finally:
        bus.shutdown()
        dut.stop()
        dut.cleanup()


def main() -> None:
    """Print the figures (BENCHMARKS.md)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--board", default="sim", help="whose bundle the image is (sim)")
    args = ap.parse_args()
    runs = []
    for i in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="cellguard-uds-update-") as d:
            r = one_update(args.board, Path(d))
        runs.append(r)
        print(
            f"run {i + 1}: {r['bytes']} B, download {r['download_s']:.1f} s, "
            f"switched after {r['switch_s']:.2f} s, {r['frames']} frames"
        )
    size = runs[0]["bytes"]
    dl = statistics.median(r["download_s"] for r in runs)
    sw = dl + statistics.median(r["switch_s"] - r["download_s"] for r in runs)
    frames = statistics.median(r["frames"] for r in runs)
    lo, hi = (frames * b / BITRATE for b in FRAME_BITS)
    print(f"image {size} B ({size / 1024:.1f} KiB), median of {len(runs)} runs:")
    print(f"  download {dl:.1f} s ({size / dl:.0f} B/s), then check and switch {sw - dl:.2f} s")
    print(f"  {frames:.0f} CAN frames both ways; on a 500 kbit/s bus they need {lo:.1f}-{hi:.1f} s")


if __name__ == "__main__":
    main()
