"""Tests of the train stage's threshold choice and its records (vent.stages.train)."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from vent.errors import ArtifactError
from vent.metrics import choose_threshold
from vent.stages.train import _choose_fold_threshold, _common_positions, threshold_note, threshold_record


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

    choice = _choose_fold_threshold(rule, ["val_a", "val_b"], predict)
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
        _choose_fold_threshold(rule, [], predict)


def test_threshold_note_names_the_rule_and_every_fold(tmp_path: Path) -> None:
    (tmp_path / "train").mkdir()
    rows = {"lstm": [{"fold": 0, "value": 0.412, "rule": "val_defect_fraction"},
                     {"fold": 1, "value": 0.388, "rule": "val_defect_fraction"}]}
    (tmp_path / "train" / "thresholds.json").write_text(json.dumps({"setting": "val_defect_fraction", "rows": rows}))
    note = threshold_note(tmp_path)
    assert "'val_defect_fraction' on each fold's validation patients" in note and "lstm 0.41/0.39" in note
    (tmp_path / "train" / "thresholds.json").write_text(json.dumps({"setting": 0.5, "rows": rows}))
    assert "fixed at 0.5" in threshold_note(tmp_path)
    with pytest.raises(ArtifactError, match="re-run the train stage"):
        threshold_note(tmp_path / "elsewhere")


def test_feature_positions_must_agree_across_cases(tmp_path: Path) -> None:
    files = {}
    for case, ids in (("a", ["x", "y", "z"]), ("b", ["x", "y", "z"]), ("c", ["y", "x", "z"])):
        files[case] = tmp_path / f"{case}.h5"
        with h5py.File(files[case], "w") as handle:
            handle.attrs["feature_ids"] = ids
    assert _common_positions({k: files[k] for k in ("a", "b")}, ["y", "z"]) == [1, 2]
    with pytest.raises(ArtifactError, match="different positions"):
        _common_positions(files, ["y", "z"])
