"""Spearman scores against scipy.stats.spearmanr; stratified sampling; representatives."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import rankdata, spearmanr

from vent.errors import DataError
from vent.selection import choose_representatives, sample_voxels, spearman_with_target
from vent.selection.ranking import average_ranks


def test_average_ranks_equal_scipy_rankdata():
    rng = np.random.default_rng(4)
    for values in (rng.normal(size=1000), np.round(rng.normal(size=1000), 1), np.array([3.0, 3.0, 3.0]),
                   np.array([2.0]), rng.integers(0, 2, size=500).astype(float)):
        np.testing.assert_array_equal(average_ranks(values), rankdata(values))


def test_spearman_equals_scipy_with_ties():
    rng = np.random.default_rng(0)
    n, n_phases, n_features = 300, 3, 4
    features = rng.normal(size=(n, n_phases, n_features))
    features[:, :, 1] = np.round(features[:, :, 1])  # many ties
    target = (rng.random(n) < 0.3).astype(np.uint8)  # binary: ties in the target too
    features[:, :, 2] -= 2.0 * target[:, None]  # negative association
    scores = spearman_with_target(features, target)
    reference = np.array(
        [np.mean([abs(spearmanr(features[:, t, f], target)[0]) for t in range(n_phases)]) for f in range(n_features)]
    )
    np.testing.assert_allclose(scores, reference, atol=1e-12)
    assert scores.argmax() == 2


def test_spearman_constant_feature_scores_zero_and_constant_target_raises():
    rng = np.random.default_rng(1)
    features = rng.normal(size=(50, 2, 3))
    features[:, :, 0] = 7.0
    scores = spearman_with_target(features, rng.random(50))
    assert scores[0] == 0.0 and np.isfinite(scores).all()
    with pytest.raises(DataError, match="constant"):
        spearman_with_target(features, np.ones(50))


def test_sample_voxels_is_stratified_deterministic_and_sorted():
    rng = np.random.default_rng(2)
    labels = (rng.random(10000) < 0.137).astype(np.uint8)
    index = sample_voxels(10000, 1000, labels, seed=5)
    assert len(index) == 1000 and len(np.unique(index)) == 1000
    assert np.all(np.diff(index) > 0)
    # Class ratio kept to within rounding of one voxel.
    assert abs(labels[index].sum() - 1000 * labels.mean()) <= 1
    np.testing.assert_array_equal(index, sample_voxels(10000, 1000, labels, seed=5))
    assert not np.array_equal(index, sample_voxels(10000, 1000, labels, seed=6))
    np.testing.assert_array_equal(sample_voxels(50, 1000, labels[:50], seed=0), np.arange(50))


def test_choose_representatives_picks_highest_absolute_score_ties_by_order():
    ids = ["a", "b", "c", "d", "e", "f"]
    labels = np.array([1, 1, 2, 2, 3, 3])
    scores = np.array([0.1, -0.5, 0.3, 0.3, 0.0, 0.2])
    assert choose_representatives(labels, scores, ids) == ["b", "c", "f"]
    with pytest.raises(DataError):
        choose_representatives(labels, scores[:3], ids)
