"""The sequence trainer's threshold choice, its records and the feature positions (vent.models.sequence)."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from vent.errors import ArtifactError
from vent.io.artifacts import create_radiomics_case
from vent.metrics import choose_threshold
from vent.models.sequence import _common_positions, choose_fold_threshold, threshold_record


def _patient(seed: int, defect_fraction: float, shift: float) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = (rng.random(3000) < defect_fraction).astype(np.uint8)
    return labels, np.clip(shift + 0.3 * labels + rng.normal(0, 0.05, labels.size), 0, 1)


@pytest.mark.parametrize("rule", ["val_defect_fraction", "val_dice", 0.4])
def test_the_fold_threshold_reads_validation_patients_only(rule) -> None:
    patients = {
        "val_a": _patient(0, 0.3, 0.2),
        "val_b": _patient(1, 0.3, 0.25),
        "test_a": _patient(2, 0.7, 0.6),  # test patients differ: reading them would move the threshold
        "train_a": _patient(3, 0.1, 0.0),
    }
    called: list[str] = []

    def predict(case: str):
        called.append(case)
        return patients[case]

    choice = choose_fold_threshold(rule, ["val_a", "val_b"], predict)
    assert called == ["val_a", "val_b"]
    expected = choose_threshold(rule, [patients["val_a"][0], patients["val_b"][0]],
                                [patients["val_a"][1], patients["val_b"][1]])
    assert choice == expected
    record = threshold_record(rule, choice, ["val_a", "val_b"])
    assert record["setting"] == rule and record["value"] == choice.threshold
    assert record["validation_cases"] == ["val_a", "val_b"] and record["validation"]["n_patients"] == 2
    assert ("grid" in record) == (rule == "val_dice")
    json.dumps(record)  # JSON-ready
    with pytest.raises(ArtifactError, match="without validation patients"):
        choose_fold_threshold(rule, [], predict)


_GRID = {"size_xyz": [2, 2, 1], "spacing_mm_xyz": [2.0, 2.0, 2.0], "origin_mm_xyz": [0.0, 0.0, 0.0],
         "direction": [1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0]}


def test_feature_positions_must_agree_across_cases(tmp_path: Path) -> None:
    files = {}
    for case, ids in (("a", ["x", "y", "z"]), ("b", ["x", "y", "z"]), ("c", ["y", "x", "z"])):
        files[case] = tmp_path / f"{case}.h5"
        with h5py.File(files[case], "w") as handle:
            create_radiomics_case(handle, 4, 2, ids, ids, {"case_id": case, **_GRID})
    assert _common_positions({k: files[k] for k in ("a", "b")}, ["y", "z"]) == [1, 2]
    with pytest.raises(ArtifactError, match="different positions"):
        _common_positions(files, ["y", "z"])
