"""The no-learning densest-at-inhale rule."""

import numpy as np
import pytest

from vent.baselines import densest_at_inhale
from vent.metrics import auc_roc


def test_calls_the_densest_fraction_at_inhale():
    rng = np.random.default_rng(0)
    hu = rng.normal(-800, 50, size=(1000, 5))
    score, threshold = densest_at_inhale(hu, inhale_phase=2, fraction=0.3)
    called = score >= threshold
    assert called.mean() == pytest.approx(0.3, abs=0.002)
    assert hu[called, 2].min() >= hu[~called, 2].max()
    # the AUC of the score is the AUC of the inhale HU itself (rank transform)
    labels = (hu[:, 2] + rng.normal(0, 50, 1000) > -780).astype(int)
    assert auc_roc(labels, score) == pytest.approx(auc_roc(labels, (hu[:, 2] + 1000) / 1000), abs=1e-12)


def test_other_phases_do_not_matter():
    hu = np.zeros((4, 3))
    hu[:, 1] = [1, 2, 3, 4]
    hu[:, 0] = [9, 8, 7, 6]
    score, threshold = densest_at_inhale(hu, inhale_phase=1, fraction=0.25)
    assert (score >= threshold).tolist() == [False, False, False, True]


def test_the_registry_trainer_scores_only_the_folds_test_patients(tmp_path):
    """densest_inhale_fold (the registry's trainer of the rule) reads preprocess/<case>.h5 of each test patient and
    returns the prediction contract: every analysed voxel, its inhale-HU rank score and the fraction's threshold."""
    from vent.config import ExecutionConfig, GroundTruthConfig, TrainConfig
    from vent.cv import Fold
    from vent.io import layout
    from vent.io.artifacts import PreprocessedCase, write_preprocessed_case
    from vent.io.images import Grid
    from vent.models.jobs import FoldJob
    from vent.models.registry import get_spec

    rng = np.random.default_rng(3)
    shape = (4, 5, 6)
    grid = Grid(shape[::-1], (2.0, 2.0, 2.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    lung = np.zeros(shape, np.uint8)
    lung[1:3, 1:4, 1:5] = 1
    layout.stage_dir(tmp_path, "preprocess").mkdir()
    cts = {}
    for case in ("a", "b", "c"):
        cts[case] = rng.normal(-800, 60, size=(3, *shape)).astype(np.float32)
        pre = PreprocessedCase(case, cts[case], np.repeat(lung[None], 3, 0), lung, np.ones(shape, np.float32),
                               lung * 0, grid, {"inhale_phase": 2})
        write_preprocessed_case(layout.case_file(tmp_path, "preprocess", case), pre, "test")
    spec = get_spec("densest_inhale")
    assert not spec.learns and spec.needs() == ("preprocess",)
    train = TrainConfig(models=["densest_inhale"], reference_model="densest_inhale")
    job = FoldJob(tmp_path, "densest_inhale", "densest_inhale", "none", Fold(1, ["a"], ["b"], ["c", "a"]), train,
                  ExecutionConfig(), GroundTruthConfig(fraction=0.25))
    outcome = spec.train_fold()(job, None)
    assert [p.case_id for p in outcome.predictions] == ["c", "a"] and outcome.threshold is None
    for prediction in outcome.predictions:
        assert prediction.row == "densest_inhale" and prediction.fold == 1 and prediction.grid == grid
        np.testing.assert_array_equal(prediction.coords_zyx, np.argwhere(lung > 0))
        hu = cts[prediction.case_id][:, lung > 0].T
        score, threshold = densest_at_inhale(hu, inhale_phase=2, fraction=0.25)
        np.testing.assert_array_equal(prediction.probability, score)
        assert prediction.threshold == threshold
        assert prediction.defect.mean() == pytest.approx(0.25, abs=1 / hu.shape[0])
