"""The random forest (vent.models.forest): raw HU per voxel from preprocess, a patient-grouped random search that
sees only the fold's training patients, threshold on validation patients, predictions of the test patients."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vent.config import ExecutionConfig, GroundTruthConfig, TrainConfig
from vent.cv import Fold
from vent.io import layout
from vent.io.artifacts import PreprocessedCase, write_preprocessed_case
from vent.io.images import Grid
from vent.models import forest
from vent.models.jobs import FoldJob

SHAPE = (4, 8, 8)  # z, y, x
GRID = Grid((8, 8, 4), (2.0, 2.0, 2.0), (0.0, 0.0, 0.0), (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
CASES = [f"P{k}" for k in range(6)]


def _write_cohort(run_dir: Path) -> None:
    """Six patients; phase 0 holds the patient's number (x 1000 HU), so any voxel row names its patient."""
    rng = np.random.default_rng(0)
    for number, case in enumerate(CASES):
        lung = np.zeros(SHAPE, np.uint8)
        lung[:, 1:7, 1:7] = 1
        defect = ((rng.random(SHAPE) < 0.3) & (lung > 0)).astype(np.uint8)
        ct = rng.normal(-800, 30, size=(3, *SHAPE)).astype(np.float32)
        ct[1] += 60 * defect  # the defect is denser at phase 1: learnable
        ct[0] = 1000.0 * number
        pre = PreprocessedCase(case, ct, np.repeat(lung[None], 3, axis=0), lung, np.ones(SHAPE, np.float32), defect,
                               GRID, {"phase_order": [1, 2, 3], "inhale_phase": 2, "exhale_phase": 0})
        path = layout.case_file(run_dir, "preprocess", case)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_preprocessed_case(path, pre, fingerprint="test")


def _job(run_dir: Path, fold: Fold, n_iter: int = 3) -> FoldJob:
    train = TrainConfig(models={"rf": {"n_estimators": 10, "n_iter": n_iter, "max_voxels_per_case": 80}},
                        reference_model="rf")
    return FoldJob(run_dir, "rf", "rf", "none", fold, train, ExecutionConfig(workers=1), GroundTruthConfig())


def test_voxel_table_holds_the_raw_sequence_of_each_analysed_voxel(tmp_path: Path) -> None:
    _write_cohort(tmp_path)
    table = forest.voxel_table(tmp_path, "P2")
    assert table.hu.shape == (4 * 6 * 6, 3) and table.coords.shape == (144, 3)
    assert np.all(table.hu[:, 0] == 2000.0)
    assert set(np.unique(table.labels)) <= {0, 1}


def test_the_random_search_sees_only_training_patients(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every row the search and the refit receive belongs to a training patient (phase 0 names the patient)."""
    from sklearn.model_selection import RandomizedSearchCV

    _write_cohort(tmp_path)
    seen: list[np.ndarray] = []
    original = RandomizedSearchCV.fit

    def recording_fit(self, x, y=None, **kwargs):
        seen.append(np.unique(np.asarray(x)[:, 0] / 1000.0))
        assert len(np.unique(kwargs["groups"])) == 3  # grouped by patient
        return original(self, x, y, **kwargs)

    monkeypatch.setattr(RandomizedSearchCV, "fit", recording_fit)
    fold = Fold(0, train=["P0", "P1", "P2"], val=["P3"], test=["P4", "P5"])
    outcome = forest.train_forest_fold(_job(tmp_path, fold), progress=None)
    assert len(seen) == 1
    assert set(seen[0].astype(int)) == {0, 1, 2}, "the search saw a validation or test patient's voxels"
    assert [p.case_id for p in outcome.predictions] == ["P4", "P5"]
    assert outcome.threshold["validation_cases"] == ["P3"]
    assert outcome.record["search"]["searched"] and outcome.record["search"]["inner_folds"] == 3
    assert layout.forest_file(tmp_path, "rf", 0).is_file()
    for prediction in outcome.predictions:
        assert prediction.probability.shape == (144,) and prediction.fold == 0


def test_one_training_patient_skips_the_search_with_a_recorded_warning(tmp_path: Path) -> None:
    _write_cohort(tmp_path)
    fold = Fold(0, train=["P0"], val=["P1"], test=["P2"])
    outcome = forest.train_forest_fold(_job(tmp_path, fold), progress=None)
    assert outcome.record["search"]["searched"] is False
    assert outcome.record["search"]["best_params"] == forest.DEFAULTS
    assert "random search skipped" in outcome.record["warnings"][0]
