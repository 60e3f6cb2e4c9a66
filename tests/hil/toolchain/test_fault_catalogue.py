"""The fault catalogue has one source per reader: the firmware table (firmware/protection.py
_TABLE), the CAN contract (BMS_Faults in dbc/cellguard.dbc) and docs/faults.md. They must agree
bit for bit: name, DTC, tier, recovery, qualification and detection text."""

from __future__ import annotations

import importlib.util
import re
from types import ModuleType

import cantools

from firmware import config, protection
from hil import DBC_PATH, REPO_ROOT
from hil.bench.loop import FAULT_NAMES

TIERS = {"W": "WARNING", "D": "DERATE", "O": "OPEN"}
RECOVERY = {"L": "latched", "S": "self-clearing"}


def _table() -> list[list[str]]:
    words = protection._TABLE.split()
    return [words[i : i + 4] for i in range(0, len(words), 4)]


def _doc_rows() -> list[list[str]]:
    text = (REPO_ROOT / "docs" / "faults.md").read_text()
    rows = [
        [c.strip() for c in line.strip().strip("|").split("|")]
        for line in text.splitlines()
        if re.match(r"\|\s*\d+\s*\|", line)
    ]
    return rows


def _fw_support() -> ModuleType:
    """tests/firmware/fw_support.py (not on this directory's import path)."""
    path = REPO_ROOT / "tests" / "firmware" / "fw_support.py"
    spec = importlib.util.spec_from_file_location("fw_support_for_catalogue", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _dbc_faults() -> dict[int, cantools.database.can.Signal]:
    msg = cantools.database.load_file(str(DBC_PATH)).get_message_by_name("BMS_Faults")
    return {s.start: s for s in msg.signals if s.name != "ActiveFaultCount"}


def test_table_dbc_and_doc_agree_bit_for_bit() -> None:
    table = _table()
    dbc = _dbc_faults()
    doc = _doc_rows()
    assert len(table) == len(dbc) == len(doc) == protection.FAULT_BITS
    for bit, ((dtc, tier, rec, qual), row) in enumerate(zip(table, doc, strict=True)):
        sig = dbc[bit]
        assert sig.length == 1
        q = {"-": "immediate", "ext": "by its detector"}.get(qual, f"`{qual}`")
        expected = [str(bit), sig.name, dtc, TIERS[tier], RECOVERY[rec], q, sig.comment]
        assert row == expected, f"bit {bit}"
        assert dtc == f"P1A{bit:02X}"  # fault_memory reports 0x1A00 + bit


def test_masks_and_set_fault_bits_follow_the_table() -> None:
    masks = [0, 0, 0, 0]
    external = 0
    for bit, (_, tier, rec, qual) in enumerate(_table()):
        masks["ODW".index(tier)] |= 1 << bit
        masks[3] |= (rec == "L") << bit
        external |= (qual == "ext") << bit
    assert masks == [protection.OPEN_MASK, protection.DERATE_MASK, protection.WARNING_MASK,
                     protection._LATCH]  # fmt: skip
    assert external & ~protection._EXTERNAL == 0  # every "ext" row can be reported


def test_qualification_keys_exist_in_every_chemistry() -> None:
    for chem in ("NMC", "LFP"):
        cfg = config.load({"chemistry": chem})
        for _, _, _, qual in _table():
            if qual not in ("-", "ext"):
                assert isinstance(getattr(cfg, qual), int), (chem, qual)


def test_names_used_by_the_bench_and_the_tests_match_the_dbc() -> None:
    dbc = _dbc_faults()
    assert FAULT_NAMES == tuple(dbc[b].name for b in range(len(dbc)))
    for name, bit in vars(_fw_support()).items():
        if name.startswith("FAULT_"):
            assert dbc[bit].name == FAULT_NAMES[bit]
    for name in dir(protection):
        if name.startswith("FAULT_") and name != "FAULT_BITS":
            assert getattr(protection, name) < protection.FAULT_BITS
