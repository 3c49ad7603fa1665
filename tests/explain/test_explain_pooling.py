"""Pooling over folds: no bias from how many sequences each fold selected; absent sequences handled explicitly."""

from __future__ import annotations

import numpy as np
import pytest

from vent.errors import DataError
from vent.explain import FoldMap, normalise_maps, pool_fold_maps, relative_map

N_PHASES = 4


def _uniform_fold(ids: list[str], n_voxels: int) -> FoldMap:
    """A fold whose every voxel spreads its relevance evenly over all (phase, sequence) cells."""
    voxel_maps = np.ones((n_voxels, N_PHASES, len(ids)))
    return FoldMap(ids, normalise_maps(voxel_maps).mean(axis=0), n_voxels)


def _old_pooling(folds: list[FoldMap], all_ids: list[str]) -> np.ndarray:
    """The previous pooling: voxel-weighted mean of the normalised maps over the folds that selected a sequence."""
    total = np.zeros((N_PHASES, len(all_ids)))
    count = np.zeros(len(all_ids))
    for fold in folds:
        for j, feature_id in enumerate(fold.feature_ids):
            total[:, all_ids.index(feature_id)] += fold.mean_map[:, j] * fold.n_voxels
            count[all_ids.index(feature_id)] += fold.n_voxels
    return (total / count).mean(axis=0)


def test_equally_important_sequences_get_equal_importance_whatever_the_fold_size():
    # Fold A selects 2 sequences, fold B 4 (a, b shared); in both folds every sequence carries the same share.
    all_ids = ["a", "b", "c", "d", "unused"]
    folds = [_uniform_fold(["a", "b"], 30), _uniform_fold(["a", "b", "c", "d"], 30)]
    old = _old_pooling(folds, all_ids[:4])
    assert old[0] > 1.4 * old[2]  # the old pooling ranks a, b above c, d only because fold A selected fewer
    pooled = pool_fold_maps(folds, all_ids)
    np.testing.assert_allclose(pooled.importance_where_selected[:4], 1.0)  # 1.0 = a uniform share, everywhere
    np.testing.assert_allclose(pooled.pooled_map_where_selected[:, :4], 1.0)
    # Over all folds, c and d are absent (0) in fold A, which explained half the voxels.
    np.testing.assert_allclose(pooled.importance[:4], [1.0, 1.0, 0.5, 0.5])
    assert list(pooled.n_folds) == [2, 2, 1, 1, 0] and pooled.n_folds_total == 2
    assert np.isnan(pooled.importance[4]) and np.isnan(pooled.pooled_map[:, 4]).all()
    assert pooled.order == [0, 1, 2, 3]  # 'unused' is not ranked


def test_dominant_sequence_and_voxel_weights():
    # Fold 0 (10 voxels): a carries 3/4 of the relevance, b 1/4. Fold 1 (30 voxels): a and c share evenly.
    fold0 = FoldMap(["a", "b"], np.array([[0.75, 0.25]]) / N_PHASES * np.ones((N_PHASES, 1)), 10)
    fold1 = FoldMap(["c", "a"], np.full((N_PHASES, 2), 0.5 / N_PHASES), 30)
    pooled = pool_fold_maps([fold0, fold1], ["a", "b", "c"])
    # I_k = N_k x share: fold 0 a 1.5, b 0.5; fold 1 a 1.0, c 1.0.
    np.testing.assert_allclose(pooled.importance_where_selected, [(10 * 1.5 + 30 * 1.0) / 40, 0.5, 1.0])
    np.testing.assert_allclose(pooled.importance, [(10 * 1.5 + 30 * 1.0) / 40, 0.5 * 10 / 40, 1.0 * 30 / 40])
    assert pooled.order == [0, 2, 1]


def test_ties_are_broken_by_importance_where_selected():
    # b is selected once with a large share; a twice with a smaller one: equal over all folds, b stronger where used.
    fold0 = FoldMap(["a", "b"], np.tile([[0.25, 0.75]], (N_PHASES, 1)) / N_PHASES, 10)
    fold1 = FoldMap(["a", "c"], np.tile([[0.5, 0.5]], (N_PHASES, 1)) / N_PHASES, 10)
    pooled = pool_fold_maps([fold0, fold1], ["a", "b", "c"])
    np.testing.assert_allclose(pooled.importance, [0.75, 0.75, 0.5])
    assert pooled.order == [1, 0, 2]


def test_relative_map_and_bad_input():
    np.testing.assert_allclose(relative_map(np.full((4, 5), 1 / 20)), 1.0)
    with pytest.raises(DataError, match="no fold"):
        pool_fold_maps([], ["a"])
    with pytest.raises(DataError, match="not among"):
        pool_fold_maps([_uniform_fold(["z"], 3)], ["a"])
    with pytest.raises(DataError, match="does not match"):
        pool_fold_maps([FoldMap(["a"], np.ones((N_PHASES, 2)), 3)], ["a"])
