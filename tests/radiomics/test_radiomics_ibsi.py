"""IBSI digital phantom: every one of the 56 features against the IBSI reference (segment mode, 3D averaged)."""

from __future__ import annotations

import csv
import math

import pytest

from vent.radiomics import FEATURES, compute_roi_features, discretise


def _ibsi_reference(shared_data) -> dict[str, float]:
    path = shared_data / "ibsi" / "reference_values.csv"
    if not path.exists():
        pytest.skip(f"IBSI reference values {path} are absent")
    reference: dict[str, float] = {}
    with path.open() as handle:
        for row in csv.DictReader(handle):
            if row["data"] != "dig. phantom":
                continue
            if row["feature_family"] == "stat" or (
                row["feature_family"] in ("cm", "rlm") and row["aggregation"] == "3D, averaged"
            ):
                reference[row["ibsi_code"]] = float(row["value"])
    return reference


def _tolerance(reference: float) -> float:
    """IBSI lists the phantom values to 3 significant digits with tolerance 0: allow half a unit of the last digit."""
    if reference == 0:
        return 1e-12
    exponent = math.floor(math.log10(abs(reference)))
    return 0.5 * 10.0 ** (exponent - 2) + 1e-12


def test_all_56_features_match_ibsi_phantom(ibsi_phantom, shared_data):
    image, mask = ibsi_phantom
    grey, n_grey = discretise(image, mask, bin_count=None, bin_width=None)
    values = compute_roi_features(image, grey, mask, n_grey)
    reference = _ibsi_reference(shared_data)
    assert len(values) == 56
    failures = []
    for spec in FEATURES:
        expected = reference[spec.ibsi_id]
        if not abs(values[spec.id] - expected) <= _tolerance(expected):
            failures.append(f"{spec.id} ({spec.ibsi_id}): {values[spec.id]:.6g} vs IBSI {expected}")
    assert not failures, "\n".join(failures)
