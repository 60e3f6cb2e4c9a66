"""The generated CAN codec against cantools, under CPython and MicroPython."""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import cantools
import pytest
from cantools.database.can import Message, Signal
from hypothesis import given, settings
from hypothesis import strategies as st

import firmware.can_codec
import firmware.gbt_codec
from hil import DBC_PATH, GBT_DBC_PATH, REPO_ROOT
from hil.bench.dut import micropython_binary
from hil.cli import codegen as codegen_command
from hil.toolchain import codegen

DATA = REPO_ROOT / "tests" / "data"
EDGE_DBC = DATA / "codec_edge.dbc"
DATABASES = {
    "cellguard": cantools.database.load_file(DBC_PATH),
    "edge": cantools.database.load_file(EDGE_DBC),
    "gbt27930": cantools.database.load_file(GBT_DBC_PATH),
}


def load_generated(dbc: Path, directory: Path) -> ModuleType:
    """Generate the codec for `dbc` into `directory` and import it as a `firmware` submodule."""
    path = directory / "edge_codec.py"
    codegen.write(dbc, path)
    # The module name puts it in the `firmware` package, so `from .compat import const` resolves.
    spec = importlib.util.spec_from_file_location("firmware.edge_codec", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def codecs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ModuleType]:
    return {
        "cellguard": firmware.can_codec,
        "edge": load_generated(EDGE_DBC, tmp_path_factory.mktemp("codec")),
        "gbt27930": firmware.gbt_codec,
    }


def mux_values(message: Message) -> list[int | None]:
    if not message.is_multiplexed():
        return [None]
    return sorted({i for s in message.signals for i in s.multiplexer_ids or ()})


def arg_signals(message: Message, mux: int | None) -> list[Signal]:
    """The signals behind the codec arguments, in the documented order (derived independently)."""
    by_start = sorted(message.signals, key=lambda s: s.start)
    if mux is None:
        return by_start
    selector = next(s for s in by_start if s.is_multiplexer)
    group = [s for s in by_start if mux in (s.multiplexer_ids or ())]
    plain = [s for s in by_start if s.multiplexer_ids is None and s is not selector]
    return [selector, *group, *plain]


def width_bounds(signal: Signal) -> tuple[int, int]:
    if signal.is_signed:
        return -(1 << (signal.length - 1)), (1 << (signal.length - 1)) - 1
    return 0, (1 << signal.length) - 1


def strict_bounds(signal: Signal) -> tuple[int, int]:
    """Raw range cantools accepts with strict=True (its own tolerance of 1e-6 * |scale|)."""
    lo, hi = width_bounds(signal)
    slack = abs(signal.scale) * 1e-6

    def allowed(raw: int) -> bool:
        scaled = signal.conversion.raw_to_scaled(raw, decode_choices=False)
        return (signal.minimum is None or scaled >= signal.minimum - slack) and (
            signal.maximum is None or scaled <= signal.maximum + slack
        )

    candidates = [raw for raw in (lo, hi) if allowed(raw)]
    for limit in (signal.minimum, signal.maximum):
        if limit is not None:
            guess = (limit - signal.offset) / signal.scale
            candidates += [
                raw for raw in range(math.floor(guess) - 1, math.ceil(guess) + 2) if allowed(raw)
            ]
    inside = [raw for raw in candidates if lo <= raw <= hi]
    return min(inside), max(inside)


@dataclass(frozen=True)
class Case:
    db: str
    message: str
    mux: int | None
    examples: int

    def __str__(self) -> str:
        return f"{self.db}:{self.message}" + ("" if self.mux is None else f":m{self.mux}")


def cases() -> list[Case]:
    result = []
    for db_name, db in DATABASES.items():
        for message in db.messages:
            muxes = mux_values(message)
            # Identical group layouts: spread a message's examples over its mux values.
            examples = max(8, 200 // len(muxes))
            result += [Case(db_name, message.name, mux, examples) for mux in muxes]
    return result


def check_against_cantools(case: Case, codec: ModuleType, data: st.DataObject) -> None:
    message = DATABASES[case.db].get_message_by_name(case.message)
    signals = arg_signals(message, case.mux)
    stem = codegen.snake_case(message.name)
    encode = getattr(codec, f"encode_{stem}")
    decode = getattr(codec, f"decode_{stem}")
    names = [s.name for s in signals]

    def draw(bounds: Callable[[Signal], tuple[int, int]]) -> list[int]:
        return [
            case.mux if s.is_multiplexer else data.draw(st.integers(*bounds(s)), label=s.name)
            for s in signals
        ]

    buf = bytearray(b"\xa5" * message.length)  # stale content the encoder must overwrite
    for strict, bounds in ((True, strict_bounds), (False, width_bounds)):
        values = draw(bounds)
        expected = message.encode(
            dict(zip(names, values, strict=True)), scaling=False, strict=strict
        )
        encode(buf, *values)
        assert bytes(buf) == expected, f"strict={strict} values={values}"
        wrapped = [
            v + (data.draw(st.integers(-2, 2), label="wrap") << s.length)
            for v, s in zip(values, signals, strict=True)
        ]
        encode(buf, *wrapped)
        assert bytes(buf) == expected, f"not masked to the signal width: {wrapped}"

    # Random frame for this mux value: the full-width values drawn last, plus noise in every bit
    # no signal of this group uses (cantools' padding=True sets exactly those bits).
    padded = message.encode(
        dict(zip(names, values, strict=True)), scaling=False, strict=False, padding=True
    )
    unused = int.from_bytes(expected, "big") ^ int.from_bytes(padded, "big")
    noise = int.from_bytes(
        data.draw(st.binary(min_size=message.length, max_size=message.length)), "big"
    )
    frame = (int.from_bytes(expected, "big") | (noise & unused)).to_bytes(message.length, "big")

    out = [None] * len(signals)
    assert decode(frame, out) is out
    raw = message.decode(frame, scaling=False, decode_choices=False)
    assert out == [raw[name] for name in names] == values
    physical = message.decode(frame, decode_choices=False)
    lay = codegen.layout(message)
    assert len(lay.fields) == len(signals)
    for k, (value, field, signal) in enumerate(zip(out, lay.fields, signals, strict=True)):
        sig = field.signal
        assert value * sig.scale + sig.offset == physical[signal.name]
        name = field.name
        if 1 <= k <= lay.group_size:
            name = name.format(case.mux * lay.group_size + k - 1 + lay.name_base)
        assert name == signal.name
    into = getattr(codec, f"decode_{stem}_into", None)
    if into is not None:
        check_into(into, frame, case.mux, lay.group_size, values)


def check_into(
    into: Callable[..., int], frame: bytes, mux: int, size: int, values: list[int]
) -> None:
    """decode_<name>_into: group `mux` lands at mux * size in `dst`, only below len(dst) (a last
    group cut short, a group beyond the end), nothing else written."""
    start = mux * size
    for length in range(start, start + size + 2):
        dst = [None] * length
        assert into(frame, dst) == mux
        want = [None] * length
        for k in range(size):
            if start + k < length:
                want[start + k] = values[1 + k]
        assert dst == want, f"len(dst)={length}"


@pytest.mark.parametrize("case", cases(), ids=str)
def test_codec_matches_cantools(case: Case, codecs: dict[str, ModuleType]) -> None:
    @settings(max_examples=case.examples, deadline=None, database=None)
    @given(data=st.data())
    def check(data: st.DataObject) -> None:
        check_against_cantools(case, codecs[case.db], data)

    check()


def test_committed_codec_is_up_to_date() -> None:
    assert not codegen.is_stale(DBC_PATH, codegen.DEFAULT_OUT, codegen.FIRMWARE_NODE), (
        "firmware/can_codec*.py do not match dbc/cellguard.dbc: run `cellguard codegen`"
    )
    assert not codegen.is_stale(GBT_DBC_PATH, codegen.GBT_OUT, codegen.FIRMWARE_NODE), (
        "firmware/gbt_codec*.py do not match dbc/gbt27930.dbc: run `cellguard codegen`"
    )


def test_firmware_codec_holds_only_the_bms_directions() -> None:
    """The board imports can_codec only: encode for what the BMS sends, decode for what it
    receives; the other directions live in can_codec_peer (re-exported on CPython)."""
    text = codegen.DEFAULT_OUT.read_text()
    peer = codegen.peer_path(codegen.DEFAULT_OUT).read_text()

    def defines(module: str, name: str) -> bool:
        return re.search(rf"^(def )?{name}\b", module, re.MULTILINE) is not None

    for message in DATABASES["cellguard"].messages:
        stem = codegen.snake_case(message.name)
        sends = codegen.FIRMWARE_NODE in message.senders
        mine, other = ("encode", "decode") if sends else ("decode", "encode")
        assert defines(text, f"{mine}_{stem}") and not defines(text, f"{other}_{stem}"), stem
        assert defines(peer, f"{other}_{stem}") and not defines(peer, f"{mine}_{stem}"), stem


def test_refuses_multiplexed_groups_with_different_layouts() -> None:
    with pytest.raises(
        ValueError,
        match="BAD_Mux: multiplexed groups must share one layout.*"
        "group 1 differs from group 0: Value1 8|16",
    ):
        codegen.generate(DATA / "codec_nonuniform_mux.dbc")


DBC_HEAD = 'VERSION ""\nNS_ :\nBS_:\nBU_: A B\n'


@pytest.mark.parametrize(
    ("signals", "error"),
    [
        (
            ' SG_ Sel M : 0|8@1+ (1,0) [0|1] "" B\n'
            ' SG_ Alpha m0 : 8|8@1+ (1,0) [0|1] "" B\n'
            ' SG_ Beta m1 : 8|8@1+ (1,0) [0|1] "" B\n',
            "must differ only in one number",
        ),
        (
            ' SG_ Sel M : 0|8@1+ (1,0) [0|1] "" B\n'
            ' SG_ V1 m0 : 8|8@1+ (1,0) [0|1] "" B\n'
            ' SG_ V2 m2 : 8|8@1+ (1,0) [0|1] "" B\n',
            r"multiplexer values must be 0..N-1, got \[0, 2\]",
        ),
        (
            ' SG_ F : 0|32@1- (1,0) [0|1] "" B\n\nSIG_VALTYPE_ 1 F : 1;\n',
            "floating-point signals are not supported",
        ),
    ],
)
def test_refuses_layouts_the_codec_cannot_express(signals: str, error: str) -> None:
    text = DBC_HEAD + "BO_ 1 M: 8 A\n" + signals
    message = cantools.database.load_string(text, database_format="dbc").messages[0]
    with pytest.raises(ValueError, match=error):
        codegen.layout(message)


def test_command_checks_and_writes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    codegen_command.add_arguments(parser)
    out = tmp_path / "codec.py"
    check = parser.parse_args(["--dbc", str(EDGE_DBC), "--out", str(out), "--check"])
    assert codegen_command.run(check) == 1
    assert "cellguard codegen" in capsys.readouterr().err
    assert codegen_command.run(parser.parse_args(["--dbc", str(EDGE_DBC), "--out", str(out)])) == 0
    assert codegen_command.run(check) == 0
    node = codegen.FIRMWARE_NODE
    assert out.read_text() == codegen.generate(EDGE_DBC, node, peer_module="codec_peer")
    assert (tmp_path / "codec_peer.py").read_text() == codegen.generate(EDGE_DBC, node, peer=True)
    (tmp_path / "codec_peer.py").write_text("")
    assert codegen_command.run(check) == 1  # a stale peer module fails the check too


# -- MicroPython -----------------------------------------------------------------------------

MICROPYTHON = micropython_binary()
IMPORT_BUDGET = 24 * 1024  # bytes of heap the codec may keep after import (64-bit unix port)


def vectors(db: cantools.database.Database) -> list[tuple[str, list[int], bytes]]:
    """Fixed raw values per message and (first, second, last) mux value, encoded by cantools."""
    result = []
    for message in db.messages:
        muxes = mux_values(message)
        for mux in dict.fromkeys(muxes[:2] + muxes[-1:]):
            signals = arg_signals(message, mux)
            bounds = [strict_bounds(s) for s in signals]
            for pattern in range(3):
                values = [
                    mux if s.is_multiplexer else (lo, hi, lo + (hi - lo) // 3 + i % 2)[pattern]
                    for i, (s, (lo, hi)) in enumerate(zip(signals, bounds, strict=True))
                ]
                frame = message.encode(
                    {s.name: v for s, v in zip(signals, values, strict=True)},
                    scaling=False,
                    strict=True,
                )
                result.append((codegen.snake_case(message.name), values, frame))
    return result


def micropython_script(
    module: str, paths: list[Path], vector_file: Path, arities: set[int], peer: str | None = None
) -> str:
    """A MicroPython script that round-trips the vectors in `vector_file` (one JSON per line);
    functions missing from `module` come from `peer` (imported after the heap is measured)."""
    # Star-args calls with many arguments allocate on MicroPython: call encode with explicit ones.
    dispatch = [
        f"    {'if' if i == 0 else 'elif'} n == {n}: fn(buf, "
        + ", ".join(f"v[{k}]" for k in range(n))
        + ")"
        for i, n in enumerate(sorted(arities))
    ]
    return (
        "\n".join(
            [
                "import gc, json, sys",
                f"sys.path[:0] = {[str(p) for p in paths]!r}",
                "import firmware.compat",
                "gc.collect(); gc.collect(); before = gc.mem_alloc()",
                f"import {module} as codec",
                "gc.collect(); gc.collect(); after = gc.mem_alloc()",
                f"import {peer or module} as peer",
                "def encode(fn, buf, v):",
                "    n = len(v)",
                *dispatch,
                "def lookup(kind, stem):",
                "    return getattr(codec, kind + stem, None) or getattr(peer, kind + stem)",
                "failures = []",
                f"for i, line in enumerate(open({str(vector_file)!r})):",
                "    stem, values, frame = json.loads(line)",
                "    frame = bytes.fromhex(frame)",
                "    enc = lookup('encode_', stem)",
                "    dec = lookup('decode_', stem)",
                "    buf = bytearray(len(frame)); out = [None] * len(values)",
                "    gc.collect(); gc.disable(); m0 = gc.mem_alloc()",
                "    encode(enc, buf, values); dec(frame, out)",
                "    m1 = gc.mem_alloc(); gc.enable()",
                "    if bytes(buf) != frame or out != values or m1 != m0:",
                "        failures.append([stem, values, list(buf), out, m1 - m0])",
                "print(json.dumps({'import_bytes': after - before, 'failures': failures}))",
            ]
        )
        + "\n"
    )


@pytest.mark.parametrize("db_name", ["cellguard", "edge"])
def test_codec_runs_on_micropython(db_name: str, tmp_path: Path) -> None:
    paths = [REPO_ROOT]
    module = "firmware.can_codec"
    peer: str | None = "firmware.can_codec_peer"
    if db_name == "edge":
        # A package of its own next to `firmware`, whose compat is the firmware's.
        package = tmp_path / "edgepkg"
        package.mkdir()
        (package / "__init__.py").write_text("")
        (package / "compat.py").write_text("from firmware.compat import const  # noqa: F401\n")
        codegen.write(EDGE_DBC, package / "codec.py")
        paths.insert(0, tmp_path)
        module = "edgepkg.codec"
        peer = None
    cases = vectors(DATABASES[db_name])
    vector_file = tmp_path / "vectors.jsonl"
    vector_file.write_text("".join(json.dumps([s, v, f.hex()]) + "\n" for s, v, f in cases))
    script = tmp_path / "roundtrip.py"
    arities = {len(values) for _, values, _ in cases}
    script.write_text(micropython_script(module, paths, vector_file, arities, peer))
    run = subprocess.run(
        [MICROPYTHON, "-X", "heapsize=96K", str(script)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout.splitlines()[-1])
    assert result["failures"] == [], "[message, values, encoded, decoded, bytes allocated]"
    if db_name == "cellguard":
        print(f"MicroPython heap kept by importing firmware.can_codec: {result['import_bytes']} B")
        assert result["import_bytes"] < IMPORT_BUDGET
