from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.cells import ABUSE_SOC_MARGIN, LFP, NMC, OCV_SOC_POINTS, get_chemistry

FIRMWARE_OCV_V = {
    "NMC": [3.00, 3.40, 3.50, 3.56, 3.60, 3.63, 3.66, 3.69, 3.72, 3.75, 3.79,
            3.83, 3.87, 3.92, 3.96, 4.00, 4.04, 4.08, 4.12, 4.16, 4.20],
    "LFP": [2.50, 3.10, 3.20, 3.24, 3.26, 3.28, 3.29, 3.295, 3.30, 3.302, 3.305,
            3.31, 3.32, 3.325, 3.33, 3.335, 3.34, 3.345, 3.36, 3.40, 3.60],
}  # fmt: skip

chemistries = st.sampled_from([NMC, LFP])
temperatures = st.floats(-30.0, 60.0)


@pytest.mark.parametrize("name", ["NMC", "nmc", "Nmc", "LFP", "lfp"])
def test_get_chemistry_ignores_case(name: str) -> None:
    assert get_chemistry(name).name == name.upper()


def test_unknown_chemistry_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="LFP, NMC"):
        get_chemistry("NCA")


@pytest.mark.parametrize("chem", [NMC, LFP], ids=["NMC", "LFP"])
def test_ocv_at_25c_matches_firmware_table(chem) -> None:
    ocv = chem.ocv_v(np.array(OCV_SOC_POINTS), 25.0)
    np.testing.assert_allclose(ocv, FIRMWARE_OCV_V[chem.name], atol=1e-12)


def test_datasheet_figures() -> None:
    assert (NMC.capacity_ah, NMC.v_min_v, NMC.v_max_v) == (5.0, 2.5, 4.2)
    assert (LFP.capacity_ah, LFP.v_min_v, LFP.v_max_v) == (2.3, 2.5, 3.65)
    assert 3.6 < NMC.nominal_voltage_v < 3.8
    assert 3.2 < LFP.nominal_voltage_v < 3.35


@settings(max_examples=50, deadline=None)
@given(chem=chemistries, temp_c=temperatures)
def test_ocv_rises_strictly_with_soc(chem, temp_c: float) -> None:
    """At any fixed temperature the OCV rises strictly with SOC, abuse range included."""
    soc = np.linspace(-ABUSE_SOC_MARGIN, 1.0 + ABUSE_SOC_MARGIN, 2001)
    assert np.all(np.diff(chem.ocv_v(soc, temp_c)) > 0.0)


@settings(max_examples=50, deadline=None)
@given(chem=chemistries, soc=st.floats(0.0, 1.0), temp_c=temperatures)
def test_entropic_term_is_small(chem, soc: float, temp_c: float) -> None:
    """Temperature moves the OCV by well under a millivolt per kelvin."""
    shift = chem.ocv_v(soc, temp_c) - chem.ocv_v(soc, 25.0)
    assert abs(shift) <= 0.5e-3 * abs(temp_c - 25.0) + 1e-12


@settings(max_examples=50, deadline=None)
@given(chem=chemistries, soc=st.floats(0.0, 1.0), cold=temperatures, warm=temperatures)
def test_resistance_rises_in_the_cold(chem, soc: float, cold: float, warm: float) -> None:
    """Arrhenius: a colder cell has a higher resistance at the same SOC."""
    cold, warm = min(cold, warm), max(cold, warm)
    assert chem.resistance_factor(soc, cold) >= chem.resistance_factor(soc, warm)


@pytest.mark.parametrize("chem", [NMC, LFP], ids=["NMC", "LFP"])
def test_resistance_rises_at_low_soc(chem) -> None:
    assert chem.resistance_factor(0.5, 25.0) == pytest.approx(1.0)
    assert chem.resistance_factor(0.05, 25.0) > 1.3
    assert 2.0 < chem.resistance_factor(0.5, 0.0) < 4.0


def test_inconsistent_tables_are_rejected() -> None:
    with pytest.raises(ValueError, match="increasing"):
        dataclasses.replace(NMC, ocv_25c_v=NMC.ocv_25c_v[::-1])
    with pytest.raises(ValueError, match="length"):
        dataclasses.replace(NMC, entropic_soc=(0.0, 1.0))
    with pytest.raises(ValueError, match="coulombic"):
        dataclasses.replace(NMC, coulombic_efficiency=1.2)
