"""Generate the firmware CAN codec (`firmware/can_codec.py`) from the DBC.

The DBC is the single source of truth; this module turns it into a MicroPython module with one
straight-line, allocation-free `encode_<name>`/`decode_<name>` pair per message (see "Generated
codec API" in docs/ARCHITECTURE.md). Every payload byte is written by exactly one statement that
ORs the masked, shifted pieces of the signals that live in it, and every signal is read back by
ORing the pieces of the bytes it spans, so the generated code handles Intel and Motorola byte
order, odd lengths and non-aligned starts without a runtime helper or a loop. Messages with the
same layout (the bench's SIM_ copies of BMS_ messages) share one pair and one metadata tuple.

Argument order: signals sorted by the start bit written in the DBC (`SG_ x : <start>|...`). For
Intel signals that is the position of the least significant bit, for Motorola signals the
position of the most significant bit in DBC (sawtooth) numbering; both orders are used as they
are written. Multiplexed messages: the multiplexer first, then the signals of one group, then the
non-multiplexed signals.
"""

from __future__ import annotations

import hashlib
import keyword
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cantools
from cantools.database.can import Message, Signal

import firmware
from hil import DBC_PATH, GBT_DBC_PATH, REPO_ROOT

DEFAULT_OUT = Path(firmware.__file__).resolve().parent / "can_codec.py"
"""Where the generated codec is committed (`hil.DBC_PATH` is the DBC it comes from)."""
GBT_OUT = DEFAULT_OUT.with_name("gbt_codec.py")
"""The charger channel's codec (from `hil.GBT_DBC_PATH`)."""
CODECS = ((DBC_PATH, DEFAULT_OUT), (GBT_DBC_PATH, GBT_OUT))
"""Every (DBC, generated module) pair `cellguard codegen` keeps current."""
FIRMWARE_NODE = "BMS"
"""The DBC node the firmware is: its codec holds only the functions that node needs."""

# Names the generated functions use for their own parameters.
_RESERVED = {"buf", "data", "out"}


@dataclass(frozen=True)
class Piece:
    """The bits of one signal that fall into one payload byte."""

    byte: int
    """Index of the payload byte."""
    shift: int
    """Position of the piece's lowest bit inside the byte (0 = least significant)."""
    width: int
    """Number of bits."""
    value_shift: int
    """Position of the piece's lowest bit inside the signal's raw value."""


@dataclass(frozen=True)
class Field:
    """One argument of `encode_<name>` (and slot of `decode_<name>`'s output list)."""

    arg: str
    """Python identifier of the argument in the generated code."""
    name: str
    """DBC signal name, or a `str.format` pattern for the numbered signals of a mux group."""
    signal: Signal
    """The DBC signal (for a mux group: the one of group 0) that defines the bit layout."""

    @property
    def pieces(self) -> list[Piece]:
        """Where the signal's bits are, from its least significant bit upwards."""
        return bit_pieces(self.signal)


@dataclass(frozen=True)
class Layout:
    """Everything the generator needs to emit one message."""

    message: Message
    const_name: str
    """Upper snake case of the message name (`BMS_CellVoltages` -> `BMS_CELL_VOLTAGES`)."""
    fields: list[Field]
    mux_count: int | None
    """Number of multiplexer values (0..mux_count-1); None for plain messages."""
    group_size: int
    """Number of multiplexed arguments (signals per group); 0 for plain messages."""
    name_base: int
    """Number in the name of the first multiplexed signal of group 0 (see `_name_pattern`)."""


def snake_case(name: str) -> str:
    """Return the lower snake case of a DBC name.

    `BMS_CellVoltageStats` -> `bms_cell_voltage_stats`, `SOC` -> `soc`.
    """
    name = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name)
    name = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name)
    name = re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_")
    return name.lower()


def bit_pieces(signal: Signal) -> list[Piece]:
    """Split a signal into per-byte pieces, least significant bits first."""
    pieces = []
    remaining = signal.length
    value_shift = 0
    if signal.byte_order == "little_endian":
        bit = signal.start
        while remaining:
            shift = bit % 8
            width = min(8 - shift, remaining)
            pieces.append(Piece(bit // 8, shift, width, value_shift))
            bit += width
            value_shift += width
            remaining -= width
    else:
        # Motorola: the DBC start bit is the MSB in sawtooth numbering; walk from the LSB in
        # network order (bit 0 = MSB of byte 0) towards lower byte indices.
        net = 8 * (signal.start // 8) + 7 - signal.start % 8 + signal.length - 1
        while remaining:
            shift = 7 - net % 8
            width = min(8 - shift, remaining)
            pieces.append(Piece(net // 8, shift, width, value_shift))
            net = 8 * (net // 8) - 1
            value_shift += width
            remaining -= width
    return pieces


def mux_groups(message: Message) -> dict[int, list[Signal]]:
    """Return the multiplexed signals of each multiplexer value, sorted by start bit.

    Raises ValueError for layouts the generated codec cannot express: more than one multiplexer,
    nested multiplexing or multiplexer values that are not 0..N-1.
    """
    muxes = [s for s in message.signals if s.is_multiplexer]
    if len(muxes) != 1 or muxes[0].multiplexer_ids:
        raise ValueError(f"{message.name}: only one top-level multiplexer is supported")
    groups: dict[int, list[Signal]] = {}
    for signal in message.signals:
        for mux in signal.multiplexer_ids or ():
            groups.setdefault(mux, []).append(signal)
    if sorted(groups) != list(range(len(groups))):
        raise ValueError(f"{message.name}: multiplexer values must be 0..N-1, got {sorted(groups)}")
    return {mux: sorted(signals, key=lambda s: s.start) for mux, signals in groups.items()}


def _shape(signal: Signal) -> tuple[object, ...]:
    return (
        signal.start,
        signal.length,
        signal.byte_order,
        signal.is_signed,
        signal.scale,
        signal.offset,
        signal.unit or "",
    )


def _describe(signal: Signal) -> str:
    order = "Motorola" if signal.byte_order == "big_endian" else "Intel"
    sign = "signed" if signal.is_signed else "unsigned"
    return (
        f"{signal.name} {signal.start}|{signal.length} {order} {sign} "
        f"({signal.scale},{signal.offset}) {signal.unit or ''!r}"
    )


def _name_pattern(
    message: Message, names: Sequence[str], position: int, per_group: int
) -> tuple[str, int | None]:
    """Derive the `str.format` pattern naming one mux-group position across all groups.

    The DBC names must count through the groups: the name of position `position` in group g
    carries the number g * per_group + position + base. Returns (pattern, base); base is None
    when all groups use the same name (a literal pattern).
    """
    if len(set(names)) == 1:
        return names[0].replace("{", "{{").replace("}", "}}"), None
    error = ValueError(
        f"{message.name}: multiplexed signal names at position {position} "
        f"({', '.join(names[:3])}, ...) must differ only in one number that counts "
        f"group * {per_group} + {position} + base"
    )
    split = [re.split(r"(\d+)", name) for name in names]
    if any(len(parts) != len(split[0]) for parts in split):
        raise error
    varying = [i for i in range(len(split[0])) if len({parts[i] for parts in split}) > 1]
    # re.split with a group puts the digit runs at the odd indices.
    if len(varying) != 1 or varying[0] % 2 == 0:
        raise error
    index = varying[0]
    digits = [parts[index] for parts in split]
    base = int(digits[0]) - position
    width = len(digits[0])
    spec = f"{{:0{width}d}}" if width > 1 and digits[0].startswith("0") else "{}"
    head = "".join(split[0][:index]).replace("{", "{{").replace("}", "}}")
    tail = "".join(split[0][index + 1 :]).replace("{", "{{").replace("}", "}}")
    pattern = head + spec + tail
    for group, name in enumerate(names):
        if pattern.format(group * per_group + position + base) != name:
            raise error
    return pattern, base


def _arg_name(name: str, used: set[str]) -> str:
    arg = snake_case(name) or "signal"
    if arg[0].isdigit() or keyword.iskeyword(arg) or arg in _RESERVED:
        arg = "s_" + arg
    while arg in used:
        arg += "_"
    used.add(arg)
    return arg


def layout(message: Message) -> Layout:
    """Return the argument layout of a message, validating that the codec can express it."""
    if message.is_container:
        raise ValueError(f"{message.name}: container messages are not supported")
    floats = [s.name for s in message.signals if s.is_float]
    if floats:
        raise ValueError(f"{message.name}: floating-point signals are not supported: {floats}")
    used: set[str] = set()
    if not message.is_multiplexed():
        signals = sorted(message.signals, key=lambda s: s.start)
        fields = [Field(_arg_name(s.name, used), s.name, s) for s in signals]
        return Layout(message, snake_case(message.name).upper(), fields, None, 0, 0)

    groups = mux_groups(message)
    first = groups[0]
    for mux, signals in groups.items():
        shapes = [_shape(s) for s in signals]
        if shapes != [_shape(s) for s in first]:
            detail = next(
                (
                    f"{_describe(a)} vs {_describe(b)}"
                    for a, b in zip(signals, first, strict=False)
                    if _shape(a) != _shape(b)
                ),
                f"{len(signals)} signals vs {len(first)}",
            )
            raise ValueError(
                f"{message.name}: multiplexed groups must share one layout (same start, length, "
                f"byte order, sign, scale, offset and unit per position); group {mux} differs "
                f"from group 0: {detail}"
            )
    mux_signal = next(s for s in message.signals if s.is_multiplexer)
    plain = sorted(
        (s for s in message.signals if s.multiplexer_ids is None and s is not mux_signal),
        key=lambda s: s.start,
    )
    fields = [Field(_arg_name(mux_signal.name, used), mux_signal.name, mux_signal)]
    bases = set()
    for position, signal in enumerate(first):
        names = [groups[mux][position].name for mux in range(len(groups))]
        pattern, base = _name_pattern(message, names, position, len(first))
        if base is not None:
            bases.add(base)
        stem = pattern if base is None else re.sub(r"\{[^}]*\}", "", pattern)
        suffix = f"_{position}" if len(first) > 1 else ""
        fields.append(Field(_arg_name(snake_case(stem) + suffix, used), pattern, signal))
    if len(bases) > 1:
        raise ValueError(
            f"{message.name}: the numbers in the multiplexed signal names do not count "
            f"consecutively through the group positions (bases {sorted(bases)})"
        )
    fields += [Field(_arg_name(s.name, used), s.name, s) for s in plain]
    return Layout(
        message,
        snake_case(message.name).upper(),
        fields,
        len(groups),
        len(first),
        bases.pop() if bases else 0,
    )


def _encode_term(arg: str, piece: Piece) -> str:
    # Mask before shifting left, shift right before masking: no intermediate exceeds the argument
    # or a byte, so 24-bit signals stay MicroPython small ints on 32-bit boards.
    mask = ((1 << piece.width) - 1) << piece.shift
    if piece.value_shift >= piece.shift:
        drop = piece.value_shift - piece.shift
        return f"({arg} >> {drop}) & 0x{mask:02X}" if drop else f"{arg} & 0x{mask:02X}"
    low = ((1 << piece.width) - 1) << piece.value_shift
    return f"({arg} & 0x{low:02X}) << {piece.shift - piece.value_shift}"


def _decode_term(piece: Piece) -> str:
    byte = f"data[{piece.byte}]"
    # Only the first (least significant) piece of a signal can start above bit 0 of its byte, so a
    # piece that reaches the top of its byte needs no mask: the right shift drops the bits below.
    if piece.shift + piece.width < 8:
        mask = ((1 << piece.width) - 1) << piece.shift
        if piece.value_shift == piece.shift:
            return f"{byte} & 0x{mask:02X}"
        byte = f"({byte} & 0x{mask:02X})"
    if piece.value_shift > piece.shift:
        return f"{byte} << {piece.value_shift - piece.shift}"
    if piece.value_shift < piece.shift:
        return f"{byte} >> {piece.shift - piece.value_shift}"
    return byte


def _wrap_def(head: str, args: list[str]) -> list[str]:
    lines = [head + "("]
    for arg in args:
        text = arg + ", "
        if len(lines[-1]) + len(text) > 99:
            lines[-1] = lines[-1].rstrip()
            lines.append("    " * 2 + text)
        else:
            lines[-1] += text
    lines[-1] = lines[-1].rstrip(", ") + "):"
    return lines


def _codec_lines(lay: Layout, stem: str) -> list[str]:
    """The encode/decode pair of a message, named `encode_<stem>` / `decode_<stem>`."""
    by_byte: list[list[tuple[int, str]]] = [[] for _ in range(lay.message.length)]
    # Arguments are named by position (v0, v1, ...; the comment above the message names their
    # signals): every name is a qstr on the board's heap, and positional names are shared by all
    # messages where signal-derived names would cost one each.
    for i, field in enumerate(lay.fields):
        for piece in field.pieces:
            by_byte[piece.byte].append((piece.shift, _encode_term(f"v{i}", piece)))
    lines = _wrap_def(f"def encode_{stem}", ["buf"] + [f"v{i}" for i in range(len(lay.fields))])
    unused = [i for i, terms in enumerate(by_byte) if not terms]
    if unused:
        # One chained store clears every unused byte: less bytecode than one statement each.
        lines.append("    " + "".join(f"buf[{i}] = " for i in unused) + "0")
    for i, terms in enumerate(by_byte):
        if not terms:
            continue
        parts = [term for _, term in sorted(terms)]
        line = f"    buf[{i}] = {' | '.join(parts)}"
        if len(line) > 100:
            line = "\n".join(
                [f"    buf[{i}] = (", f"        {parts[0]}"]
                + [f"        | {p}" for p in parts[1:]]
                + ["    )"]
            )
        lines.append(line)

    lines += ["", "", f"def decode_{stem}(data, out):"]
    for i, field in enumerate(lay.fields):
        lines.append(f"    out[{i}] = {_decode_value(field)}")
    lines.append("    return out")
    return lines


def _flag_run(lay: Layout) -> int:
    """How many leading arguments are one-bit unsigned little-endian signals at start bits 0, 1,
    2, ... (a bit field such as BMS_Faults); 0 when fewer than 8."""
    k = 0
    for field in lay.fields:
        s = field.signal
        if s.length != 1 or s.is_signed or s.byte_order != "little_endian" or s.start != k:
            break
        k += 1
    return k if k >= 8 and lay.mux_count is None else 0


def _mask_lines(lay: Layout, stem: str, k: int) -> list[str]:
    """`encode_<stem>_mask(buf, mask, ...)`: the message's first `k` one-bit signals from bit i
    of `mask`, then the other signals as encode_<stem> takes them (one argument per flag is
    Python work the transmit path does every period)."""
    by_byte: list[list[tuple[int, str]]] = [[] for _ in range(lay.message.length)]
    for j in range(0, k, 8):
        piece = Piece(byte=j // 8, shift=0, width=min(8, k - j), value_shift=j)
        by_byte[piece.byte].append((0, _encode_term("mask", piece)))
    rest = lay.fields[k:]
    for i, field in enumerate(rest):
        for piece in field.pieces:
            by_byte[piece.byte].append((piece.shift, _encode_term(f"v{i}", piece)))
    head = f"def encode_{stem}_mask"
    lines = _wrap_def(head, ["buf", "mask"] + [f"v{i}" for i in range(len(rest))])
    unused = [i for i, terms in enumerate(by_byte) if not terms]
    if unused:
        lines.append("    " + "".join(f"buf[{i}] = " for i in unused) + "0")
    for i, terms in enumerate(by_byte):
        if terms:
            lines.append(f"    buf[{i}] = {' | '.join(t for _, t in sorted(terms))}")
    return lines


def _decode_value(field: Field) -> str:
    value = " | ".join(_decode_term(p) for p in field.pieces)
    if field.signal.is_signed:
        half = 1 << (field.signal.length - 1)
        value = f"(({value}) ^ 0x{half:X}) - 0x{half:X}"
    return value


_NATIVE_UNPACK = "_unpack_group"
_NATIVE_PACK = "_pack_group"


def _native_import(names: list[str]) -> list[str]:
    """The guarded import of firmware/native.py's `names` (native name, local alias)."""
    lines = ["", "try:"]
    lines += [f"    from .native import {name[1:]} as {name}" for name in names]
    lines.append("except (ImportError, ValueError):  # no native code for this machine: bytecode")
    lines.append("    " + " = ".join(names) + " = None")
    return lines


def _from_lines(lay: Layout, stem: str, run: str) -> list[str]:
    """`encode_<stem>_from(buf, src, g)`: group g from src[g * size + k] (0 past its end), the
    mirror of decode_<stem>_into, for a group of equal little-endian fields: one machine-code
    call where it runs, else encode_<stem> with the values."""
    size = lay.group_size
    bit, width, _ = run.split(", ")
    values = [
        f"src[i + {k}] if i + {k} < n else 0" if k else "src[i] if i < n else 0"
        for k in range(size)
    ]
    lines = [
        f"def encode_{stem}_from(buf, src, g):",
        f"    if {_NATIVE_PACK} is not None:",
        f"        {_NATIVE_PACK}(buf, src, g, {size}, {bit}, {width}, {lay.message.length})",
        "        return",
        f"    i = g * {size}",
        "    n = len(src)",
    ]
    lines += _wrap_def(f"    encode_{stem}", ["buf", "g", *values])
    lines[-1] = lines[-1][:-1]  # a call, not a definition
    return lines


def _packed_run(mux: Field, group: list[Field]) -> str:
    """`bit, width, signed` for native.unpack_group when the multiplexer is byte 0 and the
    group's signals are equal-width (at most 16 bits) little-endian fields one after another,
    else ""."""
    m = mux.signal
    if m.start != 0 or m.length != 8 or m.is_signed or m.byte_order != "little_endian":
        return ""
    first = group[0].signal
    for k, field in enumerate(group):
        s = field.signal
        if (
            s.byte_order != "little_endian"
            or s.length != first.length
            or s.length > 16
            or s.is_signed != first.is_signed
            or s.start != first.start + k * first.length
        ):
            return ""
    return f"{first.start}, {first.length}, {1 if first.is_signed else 0}"


def _into_lines(lay: Layout, stem: str) -> list[str]:
    """`decode_<stem>_into(data, dst)` of a multiplexed message without other signals: group g's
    signals straight into dst[g * size + k] (those below len(dst)), straight-line for a whole
    group; returns g. No list, no call per value: the receive path of every measurement frame."""
    size = lay.group_size
    group = lay.fields[1 : 1 + size]
    lines = [f"def decode_{stem}_into(data, dst):"]
    run = _packed_run(lay.fields[0], group)
    if run:
        # The whole frame in one machine-code call (firmware/native.py) where it runs
        lines.append(f"    if {_NATIVE_UNPACK} is not None:")
        lines.append(f"        return {_NATIVE_UNPACK}(data, dst, {size}, {run})")
    lines += [
        f"    g = {_decode_value(lay.fields[0])}",
        f"    i = g * {size}",
        "    n = len(dst)",
    ]
    # A signed multiplexer could index from the end of `dst`.
    cond = "0 <= i and " if lay.fields[0].signal.is_signed else ""
    lines.append(f"    if {cond}i + {size} <= n:")
    for k, field in enumerate(group):
        lines.append(f"        dst[i{f' + {k}' if k else ''}] = {_decode_value(field)}")
    if size > 1:
        lines.append(f"    elif {cond}i < n:  # the last group, partly beyond the count")
        lines.append(f"        dst[i] = {_decode_value(group[0])}")
        for k in range(1, size - 1):
            lines.append(f"        if i + {k} < n:")
            lines.append(f"            dst[i + {k}] = {_decode_value(group[k])}")
    lines.append("    return g")
    return lines


def _emit_once(
    lines: list[str], emitted: dict[str, str], low: str, body: list[str], name: str
) -> None:
    """Append function `name.format(low)` with `body`, or, when a message emitted before has
    the same code (`emitted`: code with the message's name taken out -> that message), an
    alias of its function."""
    key = "\n".join(body).replace(f"_{low}", "_")
    if key in emitted:
        lines.append(f"{name.format(low)} = {name.format(emitted[key])}")
    else:
        emitted[key] = low
        lines += ["", "", *body]


def _emit_message(
    lay: Layout, emitted: dict[str, str], encode: bool, decode: bool, consts: str
) -> list[str]:
    """Emit one message: its constants and the wanted functions; `emitted` maps code already
    emitted to the message name that holds it. `consts`: "all" (one module), "firmware" (ids and
    lengths) or "peer" (the multiplexer metadata)."""
    msg = lay.message
    name = lay.const_name
    low = name.lower()
    period = f"every {msg.cycle_time} ms" if msg.cycle_time else "no cycle time"
    kind = "29-bit id" if msg.is_extended_frame else "11-bit id"
    lines = [
        "",
        "",
        f"# {msg.name}: 0x{msg.frame_id:03X} ({kind}), {msg.length} bytes, from "
        f"{', '.join(msg.senders) or '?'}, {period}",
    ]
    for i, field in enumerate(lay.fields):
        s = field.signal
        order = "@0" if s.byte_order == "big_endian" else "@1"
        sign = "-" if s.is_signed else "+"
        lines.append(
            f"#   v{i:<2} {field.arg:<24} {s.start}|{s.length}{order}{sign} "
            f"({s.scale},{s.offset}) {s.unit or ''}".rstrip()
        )
    if lay.mux_count is not None:
        lines += [
            f"#   group g = 0..{lay.mux_count - 1} carries, as argument 1 + k "
            f"(k = 0..{lay.group_size - 1}), the signal named",
            f"#   {lay.fields[1].name!r}.format(g * {lay.group_size} + k + {lay.name_base})",
        ]
    if consts != "peer":
        lines += [
            f"{name}_ID = const(0x{msg.frame_id:03X})",
            f"{name}_DLC = const({msg.length})",
        ]
    # The group metadata serves desktop code only: in the peer module when there is one.
    if lay.mux_count is not None and consts != "firmware":
        lines += [
            f"{name}_MUX_COUNT = const({lay.mux_count})",
            f"{name}_GROUP_SIZE = const({lay.group_size})",
            f"{name}_NAME_BASE = const({lay.name_base})",
        ]
    # Messages with the same layout (the bench's SIM_ copies of BMS_ messages) share functions:
    # every function costs heap on the board for as long as the module lives.
    pair = _codec_lines(lay, low)
    cut = pair.index(f"def decode_{low}(data, out):")
    for kind, want, body in (("encode", encode, pair[: cut - 2]), ("decode", decode, pair[cut:])):
        if want:
            _emit_once(lines, emitted, low, body, f"{kind}_{{}}")
    flags = _flag_run(lay)
    if encode and flags:
        lines += ["", "", *_mask_lines(lay, low, flags)]
    grouped = lay.mux_count is not None and len(lay.fields) == 1 + lay.group_size
    run = _packed_run(lay.fields[0], lay.fields[1:]) if grouped else ""
    if encode and run:
        _emit_once(lines, emitted, low, _from_lines(lay, low, run), "encode_{}_from")
    if decode and grouped:
        _emit_once(lines, emitted, low, _into_lines(lay, low), "decode_{}_into")
    return lines


_DOCSTRING = '''"""CAN codec for the cellguard CAN contract (generated; see docs/ARCHITECTURE.md).

Per message <NAME>: <NAME>_ID, <NAME>_DLC, encode_<name>(buf, *raw) writes the raw integer signal
values into the preallocated bytearray `buf` (values masked to their width, unused bits cleared)
and decode_<name>(data, out) fills the preallocated list `out` with the raw values (signed ones
sign-extended) and returns it. physical = raw * factor + offset, with factor, offset and unit in
the comment above each message (and in the DBC): the firmware works in raw units, so the metadata
stays out of its heap; desktop code gets it from `hil.toolchain.codegen.layout()`.

Argument order: signals by their DBC start bit (Motorola signals: the start bit as written in the
DBC, i.e. their MSB). Multiplexed messages: the multiplexer value, the signals of its group, then
the other signals; all groups share one layout. Group g (0 <= g < <NAME>_MUX_COUNT) carries the
signals named pattern.format(g * <NAME>_GROUP_SIZE + k + <NAME>_NAME_BASE) for
k = 0..<NAME>_GROUP_SIZE-1 (pattern in the comment; with a peer module the metadata is there).
Messages with the same layout share functions. A multiplexed message without other signals also
gets decode_<name>_into(data, dst): group g's signals straight into dst[g * <NAME>_GROUP_SIZE + k]
(those below len(dst); dst must hold their range, e.g. an array("H") for unsigned signals of at
most 16 bits), returning g; where a group's signals are equal little-endian fields of at most 16
bits, a whole group is one machine-code call (firmware/native.py, where it runs), and dst must
then be an array of 16-bit integers ("H" or "h"). A message whose first eight or more signals
are one-bit flags at bits 0, 1, 2, ... also gets encode_<name>_mask(buf, mask, *rest): flag i
from bit i of `mask`.
"""'''

_PEER_DOCSTRING = '''"""CAN codec: the directions the {node} does not use (generated).

encode_<name> for the messages the {node} receives, decode_<name> for those it sends: what the
bench and the tests need, and the multiplexer metadata (<NAME>_MUX_COUNT, _GROUP_SIZE,
_NAME_BASE). The firmware never imports this module (no heap on the board); on CPython can_codec
re-exports it, on MicroPython tests import it. Ids and lengths: can_codec.
"""'''


def _display_path(db_path: Path) -> str:
    try:
        return db_path.resolve().relative_to(REPO_ROOT).as_posix()
    except ValueError:
        return db_path.name


def generate(
    db_path: str | Path,
    node: str | None = None,
    peer: bool = False,
    peer_module: str = "can_codec_peer",
) -> str:
    """Return the text of the MicroPython codec module for the DBC at `db_path`.

    Without `node`: every message's constants, encode and decode. With `node` (the firmware's
    DBC node): the constants, encode for the messages `node` sends and decode for those it
    receives, and on CPython the rest re-exported from the `<module>_peer` module; with `peer`
    too: that peer module, the other directions only (what a bench or test needs). The board
    never imports the peer module, so its functions cost no heap there.
    """
    db_path = Path(db_path)
    db = cantools.database.load_file(db_path)
    layouts = [layout(m) for m in sorted(db.messages, key=lambda m: m.frame_id)]
    names = [lay.const_name for lay in layouts]
    clashes = sorted({n for n in names if names.count(n) > 1})
    if clashes:
        raise ValueError(f"message names collide in upper snake case: {clashes}")
    lines = [
        f"# GENERATED by `cellguard codegen` from {_display_path(db_path)} -- do not edit",
        f"# DBC sha256: {hashlib.sha256(db_path.read_bytes()).hexdigest()}",
        _PEER_DOCSTRING.format(node=node) if peer else _DOCSTRING,
        "",
        "from .compat import const",
    ]
    emitted: dict[str, str] = {}
    body: list[str] = []
    for lay in layouts:
        sends = node is None or node in lay.message.senders
        receives = node is None or node not in lay.message.senders
        if peer:
            sends, receives = not sends, not receives
        consts = "all" if node is None else "peer" if peer else "firmware"
        body += _emit_message(lay, emitted, sends, receives, consts)
    native = [n for n in (_NATIVE_UNPACK, _NATIVE_PACK) if any(f"{n}(" in ln for ln in body)]
    if native:
        lines += _native_import(native)
    lines += body
    if node is not None and not peer:
        lines += [
            "",
            "",
            "# Desktop code (bench, tests on CPython) sees one module with every direction.",
            "from .compat import IS_MICROPYTHON  # noqa: E402",
            "",
            "if not IS_MICROPYTHON:",
            f"    from .{peer_module} import *  # noqa: F403",
        ]
    return "\n".join(lines) + "\n"


def peer_path(out_path: str | Path) -> Path:
    """Where the peer module of the codec at `out_path` goes (`can_codec_peer.py`)."""
    out_path = Path(out_path)
    return out_path.with_name(out_path.stem + "_peer.py")


def write(db_path: str | Path, out_path: str | Path, node: str | None = None) -> None:
    """Generate the codec for `db_path` and write it to `out_path` (with `node`: and its peer
    module next to it)."""
    text = generate(db_path, node, peer_module=peer_path(out_path).stem)
    Path(out_path).write_text(text, encoding="utf-8", newline="\n")
    if node is not None:
        text = generate(db_path, node, peer=True)
        peer_path(out_path).write_text(text, encoding="utf-8", newline="\n")


def is_stale(db_path: str | Path, out_path: str | Path, node: str | None = None) -> bool:
    """Return True if `out_path` (or, with `node`, its peer module) is missing or differs from
    what `generate` returns."""
    wanted = [(Path(out_path), generate(db_path, node, peer_module=peer_path(out_path).stem))]
    if node is not None:
        wanted.append((peer_path(out_path), generate(db_path, node, peer=True)))
    return any(not p.exists() or p.read_text(encoding="utf-8") != text for p, text in wanted)
