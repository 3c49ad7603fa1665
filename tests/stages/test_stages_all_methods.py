"""Every family of the method registry on the tiny run, through train and evaluate: each row predicts every patient
from the fold that holds it out, at the analysed voxels, and is scored in Table 2 and on the VAMPIRE metrics."""

from __future__ import annotations

import numpy as np
import pytest

from tinyrun import run_stages
from vent.cv import load_folds
from vent.io import layout
from vent.io.artifacts import read_preprocessed_case
from vent.io.evaluation import read_evaluation
from vent.io.predictions import read_prediction

THROUGH_EVALUATE = ("preprocess", "split", "radiomics", "select", "train", "evaluate")
NEW_ROWS = {
    "lstm_regress": {"hidden": [8]},
    "unet": {"features": [2, 2, 4, 4, 8], "patch_size": [16, 16, 16], "norm": "none", "patches_per_epoch": 8,
             "batch_size": 4},
    "ctvi_jac": {"resolutions": 2, "iterations": 50},
    "ctvi_hu": {"resolutions": 2, "iterations": 50},
    "rf": {"n_estimators": 10, "n_iter": 2, "max_voxels_per_case": 500},
    "densest_inhale": {},
}
"""Rows added to the tiny run's lstm and lstm_raw (small settings: the point is the contract, not the scores)."""
CONTINUOUS = {"lstm_regress": "ventilation", "ctvi_jac": "dir_jac", "ctvi_hu": "dir_hu"}


@pytest.fixture(scope="module")
def all_methods(tiny_run, tmp_path_factory):
    run = tiny_run.copy(tmp_path_factory.mktemp("all_methods"))
    config = run.config({"train": {"models": {"lstm": {"hidden": [8]}, "lstm_raw": {"hidden": [8]}, **NEW_ROWS}}})
    run_stages(config, THROUGH_EVALUATE)
    return run, config


def test_every_row_predicts_every_held_out_patient_at_the_analysed_voxels(all_methods):
    run, config = all_methods
    folds = load_folds(layout.splits_file(run.run_dir))[0]
    fraction = config.preprocess.ground_truth.fraction
    for row in NEW_ROWS:
        for fold in folds:
            for case in fold.test:
                prediction = read_prediction(layout.prediction_file(run.run_dir, row, case))
                pre = read_preprocessed_case(layout.case_file(run.run_dir, "preprocess", case), load_ct=False)
                assert prediction.fold == fold.index
                flat = np.ravel_multi_index(prediction.coords_zyx.T, pre.grid.shape_zyx)
                np.testing.assert_array_equal(np.sort(flat), np.flatnonzero(pre.lung_mask_zyx.ravel() > 0))
                assert prediction.probability.min() >= 0 and prediction.probability.max() <= 1
                if row in CONTINUOUS:
                    assert prediction.continuous_name == CONTINUOUS[row]
                    # the lowest fraction of the estimate by volume is the defect call (the ground truth's rule)
                    assert prediction.defect.mean() == pytest.approx(fraction, abs=0.01)


def test_every_row_is_in_table2_and_the_vampire_table(all_methods):
    run, _ = all_methods
    evaluation = read_evaluation(run.run_dir)
    rows = ["lstm", "lstm_raw", *NEW_ROWS]
    # learned rows in config order, then the untrained (CT ventilation, the rule)
    assert [r["model"] for r in evaluation.table2] == [
        "lstm", "lstm_raw", "lstm_regress", "unet", "rf", "ctvi_jac", "ctvi_hu", "densest_inhale"]
    vampire = {r["model"]: r for r in evaluation.vampire}
    assert set(vampire) == set(rows)
    for row in rows:
        assert vampire[row]["estimate"] == CONTINUOUS.get(row, "1 - p(defect)")
        assert vampire[row]["n_patients"] == 4 and -1 <= vampire[row]["r_s_mean"] <= 1
    assert layout.evaluate_file(run.run_dir, "vampire_metrics.csv").is_file()


def test_the_ct_ventilation_rows_share_one_registration_per_patient(all_methods):
    run, _ = all_methods
    folders = list((layout.stage_dir(run.run_dir, "train") / "registration").iterdir())
    assert len(folders) == 1  # both rows, the same registration settings: one key
    assert sorted(p.stem for p in folders[0].glob("*.h5")) == [f"Subject_{i:02d}" for i in range(1, 5)]
