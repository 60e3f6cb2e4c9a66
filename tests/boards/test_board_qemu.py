"""The Cortex-M image's own build and the qemu board's services (`--dut qemu`): floats that take
no heap, the security access seed.

The image's port has no `os.urandom` and the emulated MPS2 no random number generator; the qemu
board takes its seeds from the host (boards/semihost.py `host_random`). Runs on the image only:
the unix port has os.urandom and boxes floats, so there is nothing of the image's own to check.
"""

from __future__ import annotations

from typing import Any

import pytest

from hil import REPO_ROOT
from hil.bench.provision import new_record, parse_record, seed_key

pytestmark = pytest.mark.mcu


def test_security_access_on_the_image_takes_fresh_seeds_from_the_host(
    bench_options: dict[str, Any],
) -> None:
    """With the board's source, request_seed answers 0 and two seeds differ and are not zero;
    a key computed on the desktop for the second one unlocks. Without one (the port's os has no
    urandom) access is refused with NRC 0x22, never answered with a predictable seed."""
    target = bench_options["target"]
    if not target.startswith("qemu"):
        pytest.skip("the qemu board's seed source: --dut qemu[:IMAGE]")
    record = new_record("QEMU-SEED")
    code = (
        "import os\n"
        "from boards.qemu import Board\n"
        "from firmware.security import Security\n"
        "class B:\n"
        "    def storage_read(self, name):\n"
        f"        return {record!r} if name == 'provision' else None\n"
        "class WithSource(B):\n"
        "    urandom = Board.urandom\n"
        "print('os.urandom', hasattr(os, 'urandom'))\n"
        "s = Security(WithSource())\n"
        "print('nrc', s.request_seed(0))\n"
        "a = bytes(s.seed)\n"
        "print('nrc', s.request_seed(0))\n"
        "print('seeds', a.hex(), bytes(s.seed).hex())\n"
        "key = bytes.fromhex(input())\n"
        "print('unlock', s.send_key(key, 0), s.unlocked)\n"
        "print('bare', Security(B()).request_seed(0))\n"
    )
    secret = parse_record(record)[1]
    from hil.bench.qemu import parse_target, run_on_image

    lines: list[str] = []

    def answer() -> Any:
        # the key of the second seed, once the image printed it
        import time

        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            seeds = [ln for ln in "".join(lines).splitlines() if ln.startswith("seeds ")]
            if seeds:
                seed = bytes.fromhex(seeds[0].split()[2])
                yield seed_key(secret, seed).hex().encode() + b"\r\n"
                return
            time.sleep(0.05)

    status, out = run_on_image(
        code,
        name=parse_target(target),
        cwd=REPO_ROOT,
        timeout_s=300,
        stdin_lines=answer(),
        on_output=lambda b: lines.append(b.decode(errors="replace")),
    )
    assert status == 0, out
    assert "os.urandom False" in out, out
    said = dict(ln.split(" ", 1) for ln in out.splitlines() if " " in ln)
    assert out.count("nrc 0") == 2, out
    a, b = said["seeds"].split()
    assert a != b and a != "00" * 8 and b != "00" * 8, out
    assert said["unlock"] == "0 True", out
    assert said["bare"] == "34", out  # 0x22 conditionsNotCorrect


def test_the_image_keeps_floats_out_of_the_heap(bench_options: dict[str, Any]) -> None:
    """The image is built with MICROPY_OBJ_REPR_C (hil/toolchain/image.py): a float result lives
    in the object word, so 200 float operations allocate nothing, and the firmware's collection
    schedule knows it (gcpolicy.FLOATS_BOX, which sets the cycle's 256 B budget)."""
    target = bench_options["target"]
    if not target.startswith("qemu"):
        pytest.skip("the image's object model: --dut qemu[:IMAGE]")
    code = (
        "import gc\n"
        "from firmware import gcpolicy\n"
        "x = [0.5, 1.25]\n"
        "gc.collect()\n"
        "a = gc.mem_alloc()\n"
        "s = 0.0\n"
        "for i in range(100):\n"
        "    s = s * x[0] + x[1]\n"
        "print('allocated', gc.mem_alloc() - a, 'boxes', gcpolicy.FLOATS_BOX, 'sum', s)\n"
    )
    from hil.bench.qemu import parse_target, run_on_image

    status, out = run_on_image(code, name=parse_target(target), cwd=REPO_ROOT, timeout_s=300)
    assert status == 0, out
    said = out.split()
    assert said[said.index("allocated") + 1] == "0", out
    assert said[said.index("boxes") + 1] == "False", out
    assert abs(float(said[said.index("sum") + 1]) - 2.5) < 1e-3, out
