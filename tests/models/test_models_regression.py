"""lstm_regress: the normalised RefVI target and a network that learns a continuous target through VoxelBatches."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
from scipy import stats

from vent.config import GroundTruthConfig
from vent.groundtruth import iterative_outlier_clip
from vent.models import build_model
from vent.models.data import VoxelBatches
from vent.models.regression import ventilation_target
from vent.models.training import TrainSettings, fit, predict_proba


def test_rank_target_is_the_within_lung_percentile() -> None:
    refvi = np.array([5.0, 1.0, 3.0, 3.0, 9.0])
    target = ventilation_target(refvi, "rank", GroundTruthConfig())
    np.testing.assert_allclose(target, (stats.rankdata(refvi) - 1) / 4)
    assert target.dtype == np.float32 and target.min() == 0.0 and target.max() == 1.0


def test_minmax_target_applies_the_ground_truth_clip() -> None:
    rng = np.random.default_rng(0)
    refvi = rng.normal(10, 1, 2000)
    refvi[:3] = 1000.0  # hot spots
    target = ventilation_target(refvi, "minmax", GroundTruthConfig())
    clip = iterative_outlier_clip(refvi)
    expected = (np.clip(refvi, clip.lower, clip.upper) - clip.lower) / (clip.upper - clip.lower)
    np.testing.assert_allclose(target, expected, rtol=1e-6)
    assert target[:3].tolist() == [1.0, 1.0, 1.0] and np.median(target) == pytest.approx(0.5, abs=0.05)


def test_a_constant_refvi_gives_a_flat_target() -> None:
    assert ventilation_target(np.ones(10), "rank", GroundTruthConfig()).tolist() == [0.5] * 10


def test_an_lstm_learns_a_continuous_target_with_mse(make_separable_cases) -> None:
    """Feature 1 carries the target (shifted by 1.5 in defects): per-voxel targets replace the labels in the batches
    and the MSE-trained network ranks the test voxels by them (Spearman > 0.6)."""
    paths = make_separable_cases("reg", n_cases=3)
    targets = []
    for path in paths:
        with h5py.File(path, "r") as handle:
            feature = handle["features"][:, :, 1].mean(axis=1)
        targets.append(ventilation_target(-feature, "rank", GroundTruthConfig()))

    def batches(index, shuffle):
        return VoxelBatches([paths[index]], None, "radiomics", None, batch_size=128, shuffle=shuffle,
                            targets=[targets[index]])
    torch.manual_seed(0)
    model = build_model("lstm_regress", 4, 5, hidden=[8])
    fit(model, batches(0, True), batches(1, False), TrainSettings(lr=3e-3, max_epochs=8, patience=8, device="cpu",
                                                                  batch_size=128, loss="mse"))
    predicted = predict_proba(model, batches(2, False), device="cpu")
    assert stats.spearmanr(predicted, targets[2]).statistic > 0.6
    with pytest.raises(Exception, match="finite values"):
        VoxelBatches([paths[0]], None, "radiomics", None, targets=[np.full(3, np.nan)])
